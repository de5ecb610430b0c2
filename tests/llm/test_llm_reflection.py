"""Reflection and 5-label promotion through the loopback server; evidence still decides."""

from __future__ import annotations

import psycopg
from fake_openai import FakeOpenAI, ok, text

from haste_dagster.agents import records
from haste_dagster.agents.policy import IterationRecord
from haste_dagster.agents.reflection import (
    AttemptSummary,
    Learning,
    label_learnings,
    reflect,
)
from haste_dagster.llm.client import LLMClient, LLMConfig
from haste_dagster.llm.ledger import TokenLedger
from haste_dagster.skills.model import Evidence, Skill

DEPTH = {"ops": [{"op": "set", "path": "model.params.max_depth", "value": 4}]}


def _skill(n: int, tier: str, scope: str | None, domain: str | None, delta: float) -> Skill:
    return Skill(
        id=f"sk_{n:016x}", tier=tier, scope_key=scope, domain=domain,
        title=f"Shallower trees {n}", guidance="max_depth 4 on small data", action=DEPTH,
        evidence=[Evidence(slug=scope or "x", delta=delta)],
    )


OTHER_COMP = _skill(1, "competition", "wine_quality", "tabular_regression", 0.03)
OTHER_DOMAIN = _skill(2, "domain", "tabular_classification", None, 0.02)
HURT_COMP = _skill(3, "competition", "abalone", "tabular_regression", -0.05)
EXISTING = [OTHER_COMP, OTHER_DOMAIN, HURT_COMP]


def _learning(title: str, tier: str = "competition", delta: float | None = 0.04) -> Learning:
    return Learning(title=title, text=f"{title} helped", proposed_tier=tier, delta=delta)


def _summary() -> AttemptSummary:
    return AttemptSummary(
        slug="concrete", domain="tabular_regression", task="regression", metric="rmse",
        higher_is_better=False,
        history=[
            IterationRecord(0, None, [], 5.0, 0.1, True, None),
            IterationRecord(1, DEPTH, [], 4.6, 0.1, True, None),
            IterationRecord(2, {"ops": [{"op": "set", "path": "model.params.gamma",
                                         "value": 1.0}]}, [], 4.9, 0.1, False, None),
        ],
    )


def _learning_json(title: str, iterations: list[int]) -> dict:
    return {"title": title, "text": "t", "proposed_tier": "domain", "iterations": iterations}


def test_reflection_returns_two_to_five_learnings_citing_real_iterations(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(
        ok({"learnings": [_learning_json("only one", [1])]}),  # too few
        ok({"learnings": [_learning_json("a", [1]), _learning_json("b", [7])]}),  # no #7
        ok({"learnings": [_learning_json("a", [1]), _learning_json("b", [2])]}),
    )
    learnings = reflect(LLMClient(llm_config), _summary())
    assert [lr.title for lr in learnings] == ["a", "b"]
    assert all(lr.proposed_tier == "domain" for lr in learnings)
    feedback = [b["messages"][-1]["content"] for b in fake_openai.bodies()[1:]]
    assert "learnings" in feedback[0] and "at least 2" in feedback[0]
    assert "iterations [7] that do not exist" in feedback[1]
    history = fake_openai.bodies()[0]["messages"][1]["content"]
    assert "#1 kept" in history and "#2 worse_score" in history


def test_labels_are_gated_by_the_evidence_rule_and_recorded(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    learnings = [
        _learning("Shallower trees"), _learning("Lower learning rate"),
        _learning("Generic depth cap"), _learning("Noise"), _learning("Drop gamma"),
    ]
    fake_openai.push(ok({"decisions": [
        {"index": 0, "label": "domain", "reason": "recurs in wine_quality",
         "abstraction": "Cap tree depth at ~4 on small regression data",
         "related_skill_ids": [OTHER_COMP.id, "sk_ffffffffffffffff"]},
        {"index": 1, "label": "domain", "reason": "probably general",
         "abstraction": "Lower the learning rate", "related_skill_ids": []},
        {"index": 2, "label": "global", "reason": "also in classification",
         "abstraction": "Cap tree depth", "related_skill_ids": [OTHER_DOMAIN.id]},
        {"index": 3, "label": "skip", "reason": "too vague"},
        {"index": 4, "label": "conflict", "reason": "abalone says the opposite",
         "conditions": "holds when rows < 2000; the abalone skill when rows >= 2000",
         "related_skill_ids": [HURT_COMP.id]},
    ]}))
    decisions = label_learnings(
        LLMClient(llm_config, ledger=TokenLedger(conn)), learnings, EXISTING,
        competition="concrete", domain="tabular_regression", attempt_id=None, conn=conn,
    )
    by_title = {d.learning.title: d for d in decisions}
    promoted = by_title["Shallower trees"]
    assert promoted.allowed and promoted.promote_to == "domain"
    assert promoted.related_skill_ids == [OTHER_COMP.id]  # the unknown id was dropped
    assert promoted.abstraction == "Cap tree depth at ~4 on small regression data"
    lone = by_title["Lower learning rate"]
    assert not lone.allowed and lone.promote_to == "competition"
    assert "needs >= 2" in lone.reason
    assert by_title["Generic depth cap"].allowed  # two domains helped
    assert by_title["Noise"].promote_to is None
    conflict = by_title["Drop gamma"]
    assert conflict.label == "conflict" and "rows < 2000" in conflict.conditions
    rows = conn.execute(
        "SELECT learning, label, allowed, reason, abstraction, conditions, evidence "
        "FROM promotion_decisions ORDER BY id"
    ).fetchall()
    assert [r["label"] for r in rows] == ["domain", "domain", "global", "skip", "conflict"]
    assert [r["allowed"] for r in rows] == [True, False, True, True, True]
    assert rows[0]["learning"].startswith("Shallower trees")
    assert {e["competition"] for e in rows[0]["evidence"]} == {"concrete", "wine_quality"}
    assert all(r["reason"] for r in rows)
    assert [c["agent_level"] for c in TokenLedger(conn).calls()] == ["orchestrator"]


def test_labelling_repairs_a_conflict_without_a_known_skill(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    bad = {"index": 0, "label": "conflict", "reason": "r", "conditions": "c",
           "related_skill_ids": ["sk_0000000000000bad"]}
    good = {"index": 0, "label": "competition", "reason": "specific to concrete"}
    fake_openai.push(ok({"decisions": [bad]}), ok({"decisions": [good]}))
    [decision] = label_learnings(
        LLMClient(llm_config), [_learning("x")], EXISTING,
        competition="concrete", domain="tabular_regression",
    )
    assert decision.label == "competition" and decision.allowed
    assert "conflict needs the id of an existing skill" in (
        fake_openai.bodies()[1]["messages"][-1]["content"]
    )


def test_labelling_failure_keeps_learnings_at_competition_tier_and_records_why(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    fake_openai.push(*(text("promote everything!") for _ in range(3)))
    decisions = label_learnings(
        LLMClient(llm_config), [_learning("a"), _learning("b")], EXISTING,
        competition="concrete", domain="tabular_regression", conn=conn,
    )
    assert [d.label for d in decisions] == ["competition", "competition"]
    reasons = [r["reason"] for r in conn.execute("SELECT reason FROM promotion_decisions")]
    assert len(reasons) == 2 and all("LLMReplyInvalid" in r for r in reasons)


def test_attempt_summary_reads_the_recorded_attempt(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO competitions (slug, domain, task, metric, definition) "
        "VALUES ('concrete', 'tabular_regression', 'regression', 'rmse', '{}')"
    )
    conn.commit()
    attempt_id = records.create_attempt(
        conn, slug="concrete", policy="llm", loading="tiered", seed=0, budget_iterations=2
    )
    for idx, cv, kept, patch in ((0, 5.0, True, None), (1, 4.5, True, DEPTH)):
        records.record_iteration(conn, records.IterationRow(
            attempt_id=attempt_id, idx=idx, patch=patch, rationale="", skill_ids=[],
            cv_mean=cv, cv_std=0.1, fold_scores=[cv], kept=kept, incumbent_before=None,
            seconds=0.1,
        ))
    summary = AttemptSummary.from_db(conn, attempt_id)
    assert (summary.domain, summary.metric, summary.higher_is_better) == (
        "tabular_regression", "rmse", False)
    assert [r.idx for r in summary.history] == [0, 1] and summary.baseline_cv == 5.0
    assert summary.as_prompt_data()["kept"] == 1

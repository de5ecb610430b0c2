"""The real refinement loop driven by LLMPolicy against the loopback server."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from fake_openai import FakeOpenAI, ok, rate_limited, text
from tiny_competition import SLUG, patch_reply, set_op, tiny_competition

from haste_dagster.agents import records
from haste_dagster.agents.competition_agent import AttemptConfig, RefinementLoop
from haste_dagster.agents.llm_policy import LLMPolicy
from haste_dagster.competitions.profile import profile_data
from haste_dagster.competitions.registry import load_competition
from haste_dagster.llm.client import LLMClient, LLMConfig
from haste_dagster.llm.ledger import TokenLedger


def test_loop_with_llm_policy_survives_malformed_replies_and_records_tokens(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection, tmp_path: Path
) -> None:
    tiny_competition(tmp_path)
    competition = load_competition(SLUG, tmp_path)
    fake_openai.push(
        # specialist: fewer trees so the test stays fast
        ok({"rationale": "small data", "applied_skill_ids": [], "pass_down_skill_ids": [],
            "patch": set_op("model.params.n_estimators", 40)},
           prompt_tokens=50, completion_tokens=9),
        # iteration 1: a rate limit, then malformed JSON, then a valid patch
        rate_limited("0"), text('{"rationale": "deeper", "patch": '), patch_reply(
            set_op("model.params.max_depth", 3)),
        # iteration 2: an unknown parameter three times: recorded as a failed iteration
        *(patch_reply(set_op("model.params.depth", 3)) for _ in range(3)),
        # iteration 3: valid again
        patch_reply(set_op("model.params.learning_rate", 0.2)),
    )
    attempt_id = records.create_attempt(
        conn, slug=SLUG, policy="llm", loading="none", seed=0, budget_iterations=3
    )
    policy = LLMPolicy(LLMClient(llm_config, ledger=TokenLedger(conn)), attempt_id=attempt_id)
    loop = RefinementLoop(conn, competition, policy, skills=[], skills_loaded=[])
    result = loop.run(
        records.get_attempt(conn, attempt_id), AttemptConfig(policy="llm", iterations=3),
        profile_data(competition).as_dict(),
    )

    assert fake_openai.pending == 0
    rows = records.load_iterations(conn, attempt_id)
    assert [r.idx for r in rows] == [0, 1, 2, 3]
    assert rows[1].patch == set_op("model.params.max_depth", 3) and rows[1].error is None
    assert rows[1].cv_mean is not None
    assert rows[2].patch is None and rows[2].cv_mean is None and not rows[2].kept
    assert rows[2].error.startswith("LLMReplyInvalid") and "model.params.depth" in rows[2].error
    assert rows[3].patch == set_op("model.params.learning_rate", 0.2)
    # Tokens per iteration = every call the proposal took (failed and repaired ones too).
    tokens = [(r.prompt_tokens, r.completion_tokens) for r in rows[1:]]
    assert tokens == [(22, 14), (33, 21), (11, 7)]
    ledger = TokenLedger(conn)
    calls = ledger.calls(attempt_id=attempt_id)
    assert len(calls) == 1 + 3 + 3 + 1
    assert [c["agent_level"] for c in calls].count("specialist") == 1
    totals = ledger.attempt_totals(attempt_id)
    assert totals.failed_calls == 1 + 1 + 3  # 429, malformed, three invalid patches
    assert totals.prompt_tokens == 50 + sum(r.prompt_tokens for r in rows)
    assert result.prompt_tokens == sum(r.prompt_tokens for r in rows)
    spec = json.loads(json.dumps(result.best_spec))
    assert spec["model"]["params"]["n_estimators"] == 40  # the specialist's patch was used

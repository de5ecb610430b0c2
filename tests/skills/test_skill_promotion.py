"""Promotion: the evidence rule, domain and global promotion, conflicts, lineage."""

from __future__ import annotations

import json
from typing import Any

from skill_helpers import cond, insert_attempt, make_skill, set_action

from haste_dagster.skills.extraction import KeptChange, extract_competition_skills
from haste_dagster.skills.model import Evidence, Skill
from haste_dagster.skills.promotion import (
    conditions_hull,
    evidence_allows,
    promote_domain_skills,
    promote_global_skills,
)
from haste_dagster.skills.store import SkillStore

DOMAIN = "tabular_regression"


def _profile(rows: int) -> dict[str, Any]:
    return {"task": "regression", "rows": rows, "n_numeric": 4, "target_skew": 0.2}


def _extract_depth(store: SkillStore, slug: str, rows: int, depth: int, delta: float) -> Skill:
    attempt = insert_attempt(store.conn, slug)
    (skill,) = extract_competition_skills(
        store, attempt_id=attempt, slug=slug, domain=DOMAIN, profile=_profile(rows),
        kept_changes=[KeptChange(idx=2, patch=set_action("model.params.max_depth", depth),
                                 delta=delta, rationale="try deeper trees")],
    )
    return skill


def _edges(store: SkillStore, kind: str) -> list[tuple[str, str]]:
    return sorted((e["src_id"], e["dst_id"]) for e in store.edges() if e["kind"] == kind)


def test_evidence_rule_needs_two_distinct_competitions_that_outweigh_harm() -> None:
    def src(comp: str, delta: float | None, domain: str = "d") -> dict[str, Any]:
        return {"competition": comp, "domain": domain, "delta": delta}

    assert evidence_allows("domain", [src("a", 0.1)])[0] is False
    assert evidence_allows("domain", [src("a", 0.1), src("a", 0.2)])[0] is False
    assert evidence_allows("domain", [src("a", 0.1), src("b", 0.2)]) == (
        True, "helped in 2 competitions of domain d (a, b)"
    )
    assert evidence_allows("domain", [src("a", 0.1), src("b", 0.2), src("c", -0.1)])[0] is True
    allowed, reason = evidence_allows("domain", [src("a", 0.1), src("b", 0.2), src("c", -0.1),
                                                 src("e", -0.3)])
    assert not allowed and "contradicting" in reason
    assert evidence_allows("domain", [src("a", 0.1), src("b", 0.2, "other")])[0] is False
    assert evidence_allows("global", [src("a", 0.1, "x"), src("b", 0.2, "y")])[0] is True
    assert evidence_allows("global", [src("a", 0.1, "x"), src("b", 0.2, "x")])[0] is False
    # An LLM labeller cites sources without measured deltas: they count as support.
    cited = [{"competition": "a", "domain": "d", "attempt_id": 7},
             {"skill_id": "sk_1", "tier": "competition", "competition": "b", "domain": "d"}]
    assert evidence_allows("domain", cited)[0] is True


def test_one_competition_is_not_enough_to_promote(store: SkillStore) -> None:
    _extract_depth(store, "comp_a", 1000, 8, 0.02)
    assert promote_domain_skills(store, DOMAIN) == []
    assert store.list(tier="domain", status=None) == []


def test_two_competitions_promote_a_generalised_domain_skill_with_edges(
    store: SkillStore,
) -> None:
    a = _extract_depth(store, "comp_a", 1000, 8, 0.02)
    b = _extract_depth(store, "comp_b", 3000, 10, 0.03)
    _extract_depth(store, "comp_c", 2000, 3, 0.01)  # another pattern, seen once
    (promoted,) = promote_domain_skills(store, DOMAIN)
    assert (promoted.tier, promoted.scope_key, promoted.created_by) == ("domain", DOMAIN,
                                                                        "promotion")
    assert promoted.action == set_action("model.params.max_depth", 9)  # log-space median
    assert {c.describe() for c in promoted.conditions} == {
        'task == "regression"', "rows >= 250", "rows <= 12000"
    }
    assert _edges(store, "promoted_from") == sorted([(promoted.id, a.id), (promoted.id, b.id)])
    assert promoted.parent_ids == sorted([a.id or "", b.id or ""])
    assert {e.slug for e in promoted.evidence} == {"comp_a", "comp_b"}


def test_promotion_rerun_changes_nothing(store: SkillStore) -> None:
    _extract_depth(store, "comp_a", 1000, 8, 0.02)
    _extract_depth(store, "comp_b", 3000, 10, 0.03)
    first = promote_domain_skills(store, DOMAIN)
    before = store.conn.execute(
        "SELECT (SELECT count(*) FROM skills) AS s, (SELECT count(*) FROM skill_edges) AS e"
    ).fetchone()
    again = promote_domain_skills(store, DOMAIN)
    after = store.conn.execute(
        "SELECT (SELECT count(*) FROM skills) AS s, (SELECT count(*) FROM skill_edges) AS e"
    ).fetchone()
    assert [(s.id, s.version) for s in again] == [(s.id, s.version) for s in first]
    assert before == after


def test_a_third_competition_updates_the_promoted_skill_as_a_new_version(
    store: SkillStore,
) -> None:
    _extract_depth(store, "comp_a", 1000, 8, 0.02)
    _extract_depth(store, "comp_b", 3000, 10, 0.03)
    (first,) = promote_domain_skills(store, DOMAIN)
    c = _extract_depth(store, "comp_c", 5000, 12, 0.01)
    (second,) = promote_domain_skills(store, DOMAIN)
    assert (second.id, second.version) == (first.id, 2)
    assert c.id in second.parent_ids
    assert "comp_c" in second.guidance


def test_contradicting_evidence_creates_an_annotated_conflict_pair(store: SkillStore) -> None:
    _extract_depth(store, "comp_a", 1000, 8, 0.02)
    _extract_depth(store, "comp_b", 3000, 10, 0.03)
    hurt = store.add(make_skill(
        "competition", "comp_c", "comp_c: deeper trees overfit", domain=DOMAIN,
        action=set_action("model.params.max_depth", 9),
        conditions=[cond("rows", "<", 200)],
        evidence=[Evidence(attempt_id=None, iteration=4, slug="comp_c", delta=-0.04)],
    ))
    (promoted,) = promote_domain_skills(store, DOMAIN)
    assert _edges(store, "conflicts_with") == sorted([(promoted.id, hurt.id),
                                                      (hurt.id, promoted.id)])
    by_src = {e["src_id"]: e for e in store.edges() if e["kind"] == "conflicts_with"}
    assert by_src[hurt.id]["conditions"] == [{"key": "rows", "op": "<", "value": 200}]
    assert {c["key"] for c in by_src[promoted.id]["conditions"]} == {"task", "rows"}
    # nothing was overwritten: the contradicting skill is still active as it was
    assert store.get(hurt.id or "").version == 1 and store.get(hurt.id or "").status == "active"
    promote_domain_skills(store, DOMAIN)
    assert len(_edges(store, "conflicts_with")) == 2


def test_help_in_one_and_harm_in_another_pairs_the_competition_skills(
    store: SkillStore,
) -> None:
    helped = _extract_depth(store, "comp_a", 1000, 8, 0.02)
    hurt = store.add(make_skill(
        "competition", "comp_c", "comp_c: deeper trees overfit", domain=DOMAIN,
        action=set_action("model.params.max_depth", 8),
        evidence=[Evidence(slug="comp_c", delta=-0.04)],
    ))
    assert promote_domain_skills(store, DOMAIN) == []
    assert _edges(store, "conflicts_with") == sorted([(helped.id, hurt.id), (hurt.id, helped.id)])


def test_global_promotion_needs_two_domains(store: SkillStore) -> None:
    def domain_skill(domain: str, delta: float) -> Skill:
        return store.add(make_skill(
            "domain", domain, f"Missing indicators in {domain}", created_by="promotion",
            action=set_action("numeric.missing_indicator", True),
            conditions=[cond("missing_rate", ">=", 0.05)],
            evidence=[Evidence(slug=f"{domain}_comp", delta=delta)],
        ))

    domain_skill("tabular_regression", 0.02)
    assert promote_global_skills(store) == []
    domain_skill("tabular_classification", 0.01)
    (promoted,) = promote_global_skills(store)
    assert (promoted.tier, promoted.scope_key, promoted.domain) == ("global", None, None)
    assert [c.describe() for c in promoted.conditions] == ["missing_rate >= 0.05"]
    assert len(_edges(store, "promoted_from")) == 2


def test_lineage_json_of_a_promoted_skill_reaches_its_source_attempts(
    store: SkillStore,
) -> None:
    a = _extract_depth(store, "comp_a", 1000, 8, 0.02)
    b = _extract_depth(store, "comp_b", 3000, 10, 0.03)
    (promoted,) = promote_domain_skills(store, DOMAIN)
    user = insert_attempt(store.conn, "comp_d")
    store.record_loaded(user, [promoted])
    store.record_usage(user, 2, [promoted.id or ""], kept=True, delta=0.015)
    lineage = json.loads(json.dumps(store.lineage(promoted.id or ""), default=str))
    assert {n["id"] for n in lineage["ancestors"]} == {a.id, b.id}
    assert {n["via"] for n in lineage["ancestors"]} == {"promoted_from"}
    assert sorted(x["id"] for x in lineage["source_attempts"]) == sorted(
        [a.source_attempt, b.source_attempt]
    )
    assert {x["slug"] for x in lineage["source_attempts"]} == {"comp_a", "comp_b"}
    assert [(x["attempt_id"], x["loaded"], x["kept"], x["kept_delta"])
            for x in lineage["attempts"]] == [(user, True, True, 0.015)]
    # and from a source, the promoted skill is a descendant
    assert [n["id"] for n in store.lineage(a.id or "")["descendants"]] == [promoted.id]


def test_conditions_hull_keeps_only_bounds_every_source_has() -> None:
    hull = conditions_hull([
        [cond("rows", ">=", 100), cond("rows", "<=", 900), cond("has_text", "==", True)],
        [cond("rows", ">", 50), cond("has_text", "==", True), cond("n_text", ">=", 1)],
    ])
    assert [c.describe() for c in hull] == ["has_text == true", "rows > 50"]

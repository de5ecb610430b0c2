"""Normalised rules, cross-evaluation evidence, conflict pairs and promotion decisions."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from skill_helpers import insert_attempt

from haste_dagster.skills.extraction import KeptChange, extract_competition_skills
from haste_dagster.skills.pattern_promotion import decisions
from haste_dagster.skills.promotion import promote_domain, promote_global
from haste_dagster.skills.rules import normalise_change, resolve
from haste_dagster.skills.store import SkillStore

DOMAIN = "tabular_regression"
RULE = "scale:xgboost.model.params.max_depth:up"


def _spec(max_depth: int = 6) -> dict[str, Any]:
    from haste_dagster.solution.spec import SolutionSpec

    return SolutionSpec.model_validate(
        {"model": {"family": "xgboost", "params": {"max_depth": max_depth}}}
    ).model_dump(mode="json")


def _profile(slug: str, rows: int, rows_per_feature: float, skew: float = 0.1) -> dict[str, Any]:
    return {"slug": slug, "task": "regression", "rows": rows, "n_features": 10,
            "n_numeric": 10, "n_categorical": 0, "rows_per_feature": rows_per_feature,
            "target_skew": skew, "has_text": False, "is_forecast": False}


def _record_profile(
    conn: psycopg.Connection, slug: str, profile: dict[str, Any], domain: str = DOMAIN
) -> None:
    from psycopg.types.json import Jsonb

    with conn.transaction():
        conn.execute(
            """INSERT INTO competitions (slug, domain, task, metric, definition, profile)
               VALUES (%s, %s, %s, 'rmse', '{}', %s)""",
            (slug, domain, profile["task"], Jsonb(profile)),
        )


def _deepen(store: SkillStore, slug: str, new_depth: int, delta: float, rows: int,
            rpf: float) -> list[Any]:
    """An attempt on ``slug`` that kept max_depth 6 -> ``new_depth`` (a literal value)."""
    profile = _profile(slug, rows, rpf)
    _record_profile(store.conn, slug, profile)
    attempt = insert_attempt(store.conn, slug)
    return extract_competition_skills(
        store, attempt_id=attempt, slug=slug, domain=DOMAIN, profile=profile,
        kept_changes=[KeptChange(
            idx=1, patch={"ops": [{"op": "set", "path": "model.params.max_depth",
                                   "value": new_depth}]},
            delta=delta, before=_spec(6),
        )],
    )


def test_two_literal_values_in_one_direction_are_one_rule_and_one_domain_skill(
    store: SkillStore,
) -> None:
    # 9 and 12 are more than x1.25 apart: literal clustering would see two patterns.
    a = _deepen(store, "comp_a", 9, 0.03, rows=1000, rpf=100.0)
    b = _deepen(store, "comp_b", 12, 0.02, rows=4000, rpf=400.0)
    rules = [s for s in [*a, *b] if s.kind == "rule"]
    assert {s.pattern for s in rules} == {RULE}
    assert len(rules) == 2
    result = promote_domain(store, DOMAIN)
    (domain_rule,) = [s for s in result.skills if s.kind == "rule"]
    assert domain_rule.tier == "domain" and domain_rule.pattern == RULE
    # the ratio is generalised (log median of 1.5 and 2.0), not a literal depth
    assert abs(domain_rule.payload["rule"]["ratio"] - 1.73) < 0.01
    # conditions are the loosest every source satisfies: rows_per_feature 50..800
    bounds = {(c.key, c.op): c.value for c in domain_rule.conditions}
    assert bounds[("rows_per_feature", ">=")] == 50.0
    assert bounds[("rows_per_feature", "<=")] == 800.0
    assert "comp_a" in domain_rule.guidance and "comp_b" in domain_rule.guidance
    (decision,) = [d for d in decisions(store, RULE) if d["decision"] == "promoted"]
    assert "helped in 2 competitions" in decision["reason"]
    # re-running on the same evidence writes nothing: no new version, no new decision
    count, before = store.count(), len(decisions(store))
    again = promote_domain(store, DOMAIN)
    assert again.changed == [] and store.count() == count and len(decisions(store)) == before


def test_a_candidate_is_tried_beyond_the_scale_it_was_measured_on_nearest_first(
    store: SkillStore,
) -> None:
    """A rule's rows and rows-per-feature windows say where it was seen; as a candidate
    elsewhere it is tried outside them (the nearest source first), and its help there
    widens them when it is promoted."""
    from haste_dagster.agents.attempts import skill_views
    from haste_dagster.agents.policy import conditions_hold

    (small,) = [s for s in _deepen(store, "comp_a", 9, 0.03, 1000, 100.0) if s.kind == "rule"]
    (large,) = [s for s in _deepen(store, "comp_b", 12, 0.02, 40000, 4000.0) if s.kind == "rule"]
    assert small.pattern == large.pattern == RULE
    tiny, huge = _profile("comp_c", 100, 10.0), _profile("comp_d", 30000, 3000.0)
    assert not small.conditions_hold(tiny) and not large.conditions_hold(tiny)
    for slug, profile, nearest in (("comp_c", tiny, small), ("comp_d", huge, large)):
        _record_profile(store.conn, slug, profile)
        loaded = store.scoped_skills(slug, DOMAIN, profile, "tiered")
        # one candidate per pattern: the one measured on data nearest in scale
        assert [s.id for s in loaded if s.pattern == RULE] == [nearest.id]
    (view,) = skill_views([small], [], DOMAIN, "comp_c")
    assert conditions_hold(view.conditions, tiny)  # judged without its scale windows
    (home,) = skill_views([small], [], DOMAIN, "comp_a")
    assert not conditions_hold(home.conditions, tiny)  # on its own competition it keeps them
    # it helped on comp_c (100 rows): promotion widens the rows window to hold there
    store.record_usage(insert_attempt(store.conn, "comp_c"), 1, [small.id], True, 0.04)
    (domain_rule,) = [s for s in promote_domain(store, DOMAIN).skills if s.kind == "rule"]
    assert domain_rule.conditions_hold(tiny)


def test_a_literal_change_that_recurs_after_its_rule_was_promoted_leaves_the_rule_alone(
    store: SkillStore,
) -> None:
    from skill_helpers import make_skill, set_action

    from haste_dagster.skills.model import Evidence

    # The domain rule came first (promoted on cross-evaluation evidence); then the literal
    # value it sets was kept on two competitions. Both promotion paths run on every pass:
    # the literal one must write a change skill of its own, not rewrite the rule (the two
    # took turns, two new versions of the rule a pass, forever).
    rule = store.add(make_skill(
        "domain", DOMAIN, "rule set:xgboost.model.params.max_depth=9 (domain)", domain=DOMAIN,
        action=set_action("model.params.max_depth", 9), created_by="promotion",
    ).model_copy(update={"kind": "rule", "pattern": "set:xgboost.model.params.max_depth=9"}))
    for slug in ("comp_a", "comp_b"):
        store.add(make_skill("competition", slug, f"{slug}: model.params.max_depth=9",
                             action=set_action("model.params.max_depth", 9),
                             evidence=[Evidence(slug=slug, delta=0.02)]))
    first = promote_domain(store, DOMAIN)
    assert store.get(rule.id).version == rule.version  # not rewritten as a change
    assert any(s.kind == "change" and s.tier == "domain" for s in first.skills)
    count = store.count()
    again = promote_domain(store, DOMAIN)
    assert again.changed == [] and store.count() == count


def test_a_rule_that_helped_on_one_competition_and_hurt_on_another_is_a_conflict_pair(
    store: SkillStore,
) -> None:
    (rule,) = [s for s in _deepen(store, "comp_a", 9, 0.03, 1000, 100.0) if s.kind == "rule"]
    # comp_c: the rule tried from comp_a (cross-evaluation) made it worse
    _record_profile(store.conn, "comp_c", _profile("comp_c", 200, 5.0))
    attempt = insert_attempt(store.conn, "comp_c")
    store.record_usage(attempt, 0, [rule.id], False, -0.04, event="screened")
    first = promote_domain(store, DOMAIN)
    assert not [s for s in first.skills if s.kind == "rule"]  # helped on 1 only: refused
    assert len(first.conflicts) == 1
    partner, other = first.conflicts[0]
    assert partner == rule.id
    hurt = store.get(other)
    assert hurt.scope_key == "comp_c" and hurt.utility < 0  # never applied on comp_c
    assert "comp_c" in hurt.guidance and "-0.04" in hurt.guidance
    edges = {(e["src_id"], e["dst_id"]): e for e in store.edges() if e["kind"] ==
             "conflicts_with"}
    # each edge carries the conditions of the side it starts from
    assert {c["key"] for c in edges[(rule.id, other)]["conditions"]} >= {"rows_per_feature"}
    hurt_bounds = {(c["key"], c["op"]): c["value"] for c in edges[(other, rule.id)]["conditions"]}
    assert hurt_bounds[("rows", "<=")] == 800  # comp_c's own data (200 rows)
    kinds = [d["decision"] for d in decisions(store, RULE)]
    assert kinds == ["refused", "conflict"]
    # a second helping competition promotes it; the conflict stays, nothing is overwritten
    _deepen(store, "comp_b", 12, 0.02, 4000, 400.0)
    second = promote_domain(store, DOMAIN)
    assert [s.pattern for s in second.skills if s.kind == "rule"] == [RULE]
    assert [d["decision"] for d in decisions(store, RULE)][:2] == ["refused", "conflict"]
    assert "promoted" in [d["decision"] for d in decisions(store, RULE)]
    assert store.get(other).status == "active"


def _forecast_profile() -> dict[str, Any]:
    """A time-series competition's profile: another task than the rule's ``regression``."""
    return {**_profile("ts_a", 2000, 200.0), "task": "forecast", "is_forecast": True}


def _domain_rule_tried_in_time_series(store: SkillStore, delta: float) -> Any:
    """A domain rule learnt on comp_a and comp_b, then tried once on ``ts_a`` (time_series)."""
    _deepen(store, "comp_a", 9, 0.03, rows=1000, rpf=100.0)
    _deepen(store, "comp_b", 12, 0.02, rows=4000, rpf=400.0)
    (domain_rule,) = [s for s in promote_domain(store, DOMAIN).skills if s.kind == "rule"]
    assert not [s for s in promote_global(store).skills if s.kind == "rule"]  # one domain
    _record_profile(store.conn, "ts_a", _forecast_profile(), domain="time_series")
    attempt = insert_attempt(store.conn, "ts_a")
    store.record_usage(attempt, 1, [domain_rule.id], delta > 0, delta)
    return domain_rule


def test_a_domain_rule_is_cross_evaluated_in_another_domain_and_its_help_there_makes_it_global(
    store: SkillStore,
) -> None:
    domain_rule = _domain_rule_tried_in_time_series(store, 0.05)
    other, profile = "ts_a", _forecast_profile()
    # loaded on a competition of another domain (and task: the rule's "task == regression"
    # only says where it was learnt) as its one foreign candidate, and not where the rule
    # is already a domain skill
    assert any(c.key == "task" for c in domain_rule.conditions)
    loaded = store.scoped_skills(other, "time_series", profile, "tiered")
    assert [s.id for s in loaded if s.pattern == RULE] == [domain_rule.id]
    home = store.scoped_skills("comp_c", DOMAIN, _profile("comp_c", 2000, 200.0), "tiered")
    assert [s.id for s in home if s.pattern == RULE] == [domain_rule.id]  # its own tier

    (global_rule,) = [s for s in promote_global(store).skills if s.kind == "rule"]
    assert global_rule.tier == "global" and global_rule.pattern == RULE
    (decision,) = [d for d in decisions(store, RULE) if d["tier"] == "global"
                   and d["decision"] == "promoted"]
    assert "helped in 2 domains" in decision["reason"] and "time_series" in decision["reason"]
    # covered now: no longer a foreign candidate, the global is loaded instead
    again = store.scoped_skills(other, "time_series", profile, "tiered")
    assert [s.tier for s in again if s.pattern == RULE] == ["global"]


def test_a_domain_rule_that_hurt_in_another_domain_is_not_made_global(
    store: SkillStore,
) -> None:
    _domain_rule_tried_in_time_series(store, -0.05)
    assert not [s for s in promote_global(store).skills if s.kind == "rule"]
    # the first refusal is the helper's (one domain); the second names the harm
    first, second = [d for d in decisions(store, RULE) if d["tier"] == "global"]
    assert first["decision"] == second["decision"] == "refused"
    assert "hurt in 1" in second["reason"]


def test_rules_state_thresholds_relative_to_the_data_they_were_learnt_on() -> None:
    log = normalise_change({"ops": [{"op": "set", "path": "target_transform",
                                     "value": "log1p"}]}, _spec(), _profile("x", 500, 50, 3.0))
    assert log is not None and log.key == "target_transform:log1p"
    assert [c.describe() for c in log.conditions if c.key == "target_skew"] == [
        "target_skew >= 1.5"]
    forecast = {"task": "forecast", "is_forecast": True, "seasonal_period": 24, "horizon": 6}
    lag = normalise_change({"ops": [{"op": "add", "path": "forecast.lags", "value": 48}]},
                           _spec(), forecast)
    assert lag is not None and lag.key == "lags:season*2"
    # restated on a competition with another seasonal period: twice *its* period
    other = resolve(lag.template, _spec(), {"seasonal_period": 7, "horizon": 1})
    assert other == {"ops": [{"op": "add", "path": "forecast.lags", "value": 14}]}
    assert resolve(lag.template, _spec(), {"seasonal_period": None}) is None
    text = normalise_change({"ops": [{"op": "set", "path": "text.analyzer",
                                      "value": "char_wb"}]}, _spec(),
                            {"task": "binary", "has_text": True, "text_mean_chars": 80.0})
    assert text is not None and text.key == "set:text.analyzer='char_wb'"
    assert {(c.key, c.op, c.value) for c in text.conditions} >= {
        ("text_mean_chars", ">=", 40.0), ("text_mean_chars", "<=", 160.0)}


def test_recipes_rules_and_priors_round_trip_through_the_markdown_export(
    store: SkillStore, tmp_path: Any
) -> None:
    from haste_dagster.skills.embeddings import HashingEmbedder
    from haste_dagster.skills.export import export_skills, import_skills
    from haste_dagster.skills.priors import write_domain_prior

    _deepen(store, "comp_a", 9, 0.03, 1000, 100.0)
    prior = write_domain_prior(store, DOMAIN, {"model.params.max_depth": [4, 3],
                                               "family:ridge": [5, 0]}, attempts=2)
    assert prior is not None and prior.kind == "prior"
    assert "model.params.max_depth (kept 3/4)" in prior.guidance
    assert "try last: family:ridge (kept 0/5)" in prior.guidance
    # new counts: a new version of the same prior skill, not a second one
    again = write_domain_prior(store, DOMAIN, {"model.params.max_depth": [5, 4]}, attempts=3)
    assert again is not None and again.id == prior.id and again.version == prior.version + 1
    paths = export_skills(store, tmp_path / "a")
    rule_file = next(p for p in paths if "kind: rule" in p.read_text())
    text = rule_file.read_text()
    assert f"pattern: {RULE}" in text and "kind: rule" in text
    assert "When " in text and "Evidence: on comp_a" in text  # reads as a sentence
    from haste_dagster import db

    fresh = db.create_database(db.database_url(), f"t_roundtrip_{uuid.uuid4().hex[:10]}")
    with db.connection(fresh) as other_conn:
        other = SkillStore(other_conn, HashingEmbedder())
        import_skills(other, tmp_path / "a")
        export_skills(other, tmp_path / "b")
    first = {p.relative_to(tmp_path / "a"): p.read_text() for p in paths}
    second = {p.relative_to(tmp_path / "b"): p.read_text()
              for p in (tmp_path / "b").rglob("*.md")}
    assert first == second

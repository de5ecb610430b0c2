"""Transfer between tiny synthetic competitions: recipes tried elsewhere with their usage
recorded, the plain-default control guard, and recipes that no longer validate."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from tiny_competitions import write_tiny_regression

from haste_dagster.agents.attempts import AttemptConfig
from haste_dagster.agents.factory import open_skill_store
from haste_dagster.agents.orchestrator import promote, solve
from haste_dagster.skills.model import Evidence, Skill

DOMAIN = "tabular_regression"


@pytest.fixture
def two_defs(tmp_path: Path) -> Path:
    folder = tmp_path / "defs"
    write_tiny_regression(folder, "tiny_a", seed=1, rows=300, iterations=6)
    write_tiny_regression(folder, "tiny_b", seed=2, rows=300, iterations=3)
    return folder


def _usage(conn: psycopg.Connection, attempt_id: int) -> list[dict]:
    return conn.execute(
        """SELECT skill_id, event, iteration_idx, kept, delta FROM skill_usage
           WHERE attempt_id = %s AND event <> 'loaded' ORDER BY iteration_idx, skill_id""",
        (attempt_id,),
    ).fetchall()


def test_a_recipe_learnt_on_one_competition_is_tried_in_the_screen_of_another(
    conn: psycopg.Connection, two_defs: Path
) -> None:
    from haste_dagster.agents import records

    first = solve(conn, "tiny_a", AttemptConfig(seed=0), defs_dir=two_defs)
    store = open_skill_store(conn)
    (recipe,) = store.list(tier="competition", scope_key="tiny_a", kind="recipe")
    assert recipe.payload["margin"] > 0 and recipe.pattern.startswith("recipe:regression:")
    assert "Evidence: on tiny_a it beat the default" in recipe.guidance
    assert first.attempt.attempt_id == recipe.source_attempt
    second = solve(conn, "tiny_b", AttemptConfig(seed=0, iterations=4, pipeline="staged"),
                   defs_dir=two_defs)
    loaded = {s["id"] for s in second.attempt.skills_loaded}
    assert recipe.id in loaded  # a cross-evaluation candidate of the same domain
    screen = [r for r in records.load_iterations(conn, second.attempt.attempt_id)
              if r.branch == "screen"]
    (row,) = [r for r in screen if recipe.id in r.skill_ids]  # it became a prototype
    (usage,) = [u for u in _usage(conn, second.attempt.attempt_id)
                if u["skill_id"] == recipe.id and u["event"] == "screened"]
    assert usage["iteration_idx"] == row.idx and usage["delta"] is not None
    # the evidence now spans two competitions: promotion decides on it
    promote(conn, [DOMAIN], store)
    from haste_dagster.skills.pattern_promotion import decisions

    latest = [d for d in decisions(store, recipe.pattern) if d["tier"] == "domain"][-1]
    measured = {e["where"]: e["deltas"] for e in latest["evidence"]}
    assert usage["delta"] == pytest.approx(
        next(d for d in measured["tiny_b"] if d == pytest.approx(usage["delta"])))
    assert recipe.id in latest["source_ids"]


def _harmful_recipe(slug: str = "elsewhere") -> Skill:
    # A recipe that claims a large benefit elsewhere but is a poor model here: one
    # depth-1 tree with a tiny learning rate.
    return Skill(
        tier="domain", scope_key=DOMAIN, kind="recipe", pattern="recipe:regression:xgboost",
        title="Harmful recipe from another competition",
        guidance="When anywhere: start from a single stump. Evidence: helped elsewhere.",
        action={"ops": [{"op": "set_model", "family": "xgboost",
                         "params": {"n_estimators": 20, "max_depth": 1,
                                    "learning_rate": 0.01}}]},
        evidence=[Evidence(slug=slug, delta=0.5), Evidence(slug=slug + "_2", delta=0.4)],
        created_by="promotion",
    )


def test_the_plain_default_control_replaces_a_harmful_warm_start(
    conn: psycopg.Connection, two_defs: Path
) -> None:
    from haste_dagster.agents import records
    from haste_dagster.competitions.registry import load_competition
    from haste_dagster.solution.space import default_spec

    store = open_skill_store(conn)
    harmful = store.add(_harmful_recipe())
    utility_before = harmful.utility
    result = solve(conn, "tiny_b", AttemptConfig(seed=0, iterations=1), defs_dir=two_defs,
                   extract=False)
    control = result.attempt.extra["control"]
    assert control["control_won"] and control["skills"] == [harmful.id] and control["delta"] < 0
    attempt = records.get_attempt(conn, result.attempt.attempt_id)
    problem = load_competition("tiny_b", two_defs).problem
    assert attempt.initial_spec == default_spec(problem).model_dump(mode="json")
    baseline = records.load_iterations(conn, attempt.id)[0]
    assert baseline.skill_ids == [] and baseline.cv_mean == pytest.approx(control["cv"])
    (usage,) = [u for u in _usage(conn, attempt.id) if u["event"] == "screened"]
    assert usage["skill_id"] == harmful.id and not usage["kept"] and usage["delta"] < 0
    # the negative usage lowers its utility: the next attempt trusts it less
    assert store.get(harmful.id).utility < utility_before
    # the decision is kept with iteration 0, so a resumed attempt knows it too
    assert baseline.detail["control"]["control_won"]
    assert baseline.detail["control"]["skill_shaped_spec"] == control["skill_shaped_spec"]


def test_skills_the_control_beat_are_not_proposed_again_in_the_same_attempt(
    conn: psycopg.Connection, two_defs: Path
) -> None:
    from haste_dagster.agents import records

    store = open_skill_store(conn)
    harmful = store.add(_harmful_recipe())
    result = solve(conn, "tiny_b", AttemptConfig(seed=0, iterations=3), defs_dir=two_defs,
                   extract=False)
    assert result.attempt.extra["control"]["control_won"]
    rows = records.load_iterations(conn, result.attempt.attempt_id)
    assert len(rows) > 1 and all(harmful.id not in r.skill_ids for r in rows)


def test_the_guard_charges_only_the_skill_that_shaped_the_start_and_tests_the_next_alone(
    conn: psycopg.Connection, two_defs: Path
) -> None:
    store = open_skill_store(conn)
    harmful = store.add(_harmful_recipe())
    encoding = store.add(Skill(
        tier="domain", scope_key=DOMAIN, kind="change", title="Ordinal categories",
        guidance="Encode categorical columns as ordinals. Evidence: helped elsewhere.",
        action={"ops": [{"op": "set", "path": "categorical.encoding", "value": "ordinal"}]},
        evidence=[Evidence(slug="elsewhere", delta=0.01)], created_by="promotion",
    ))
    assert harmful.utility > encoding.utility > 0
    result = solve(conn, "tiny_b", AttemptConfig(seed=0, iterations=3), defs_dir=two_defs,
                   extract=False)
    control = result.attempt.extra["control"]
    assert control["control_won"] and control["skills"] == [harmful.id]
    usage = _usage(conn, result.attempt.attempt_id)
    assert {u["skill_id"] for u in usage if u["event"] == "screened"} == {harmful.id}
    # the other skill was not dropped with the recipe: it was tried as an iteration
    (tried,) = [u for u in usage if u["skill_id"] == encoding.id]
    assert tried["event"] == "applied" and tried["iteration_idx"] == 1


def test_a_recipe_whose_parameter_was_renamed_is_skipped_with_a_logged_reason(
    conn: psycopg.Connection, two_defs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_skill_store(conn)
    stale = _harmful_recipe()
    stale = stale.model_copy(update={"action": {"ops": [{
        "op": "set_model", "family": "xgboost", "params": {"max_dept": 3}}]}})
    stale = Skill.model_validate({**stale.model_dump(exclude={"content_hash"}),
                                  "title": "Recipe written before max_depth was renamed"})
    stored = store.add(stale)
    with caplog.at_level(logging.WARNING):
        result = solve(conn, "tiny_b", AttemptConfig(seed=0, iterations=2), defs_dir=two_defs,
                       extract=False)
    assert stored.id in {s["id"] for s in result.attempt.skills_loaded}
    assert result.grade.score is not None  # the attempt ran to its grade
    warned = [r.getMessage() for r in caplog.records if stored.id in r.getMessage()]
    assert warned and "no longer validates" in warned[0] and "max_dept" in warned[0]
    assert "control" not in result.attempt.extra  # nothing applied it


def test_a_domain_search_prior_weights_the_heuristic_move_draw() -> None:
    from haste_dagster.agents.heuristic import move_priors
    from haste_dagster.agents.policy import SkillView

    prior = SkillView(id="sk_0000000000000001", tier="domain", title="prior", guidance="g",
                      action=None, utility=0.0, kind="prior",
                      payload={"moves": {"model.params.max_depth": [8, 7],
                                         "family:ridge": [6, 0]}})
    change = SkillView(id="sk_0000000000000002", tier="domain", title="c", guidance="g",
                       action=None, utility=0.0, payload={"moves": {"x": [1, 1]}})
    weights = move_priors([prior, change])
    assert set(weights) == {"model.params.max_depth", "family:ridge"}  # only kind prior
    assert weights["model.params.max_depth"] == 2.0 * 8 / 10  # kept often: drawn more
    assert weights["family:ridge"] == 2.0 * 1 / 8  # never kept: drawn less


def test_of_the_foreign_rules_only_the_first_that_translates_here_is_kept(
    two_defs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rules promoted in other domains come ranked from the store; a classifier family does
    not solve a regression (skipped, logged), the next one is kept, the rest wait."""
    from haste_dagster.agents.policy import SkillView, resolve_skill_views
    from haste_dagster.competitions.registry import load_competition

    def rule(n: int, template: dict) -> SkillView:
        return SkillView(id=f"sk_{n:016d}", tier="domain", title=f"rule {n}", guidance="g",
                         action=None, utility=0.0, kind="rule", payload={"rule": template},
                         foreign=True)

    family = rule(1, {"op": "family", "family": "logistic_regression"})
    log1p = rule(2, {"op": "set", "path": "numeric.log1p_skewed", "value": True})
    missing = rule(3, {"op": "set", "path": "numeric.missing_indicator", "value": True})
    home = SkillView(**{**missing.__dict__, "id": "sk_0000000000000004", "foreign": False})
    problem = load_competition("tiny_b", two_defs).problem
    with caplog.at_level(logging.INFO):
        kept = resolve_skill_views([family, log1p, missing, home], problem, {})
    assert [v.id for v in kept] == [log1p.id, home.id]  # the domain's own rules are not capped
    (said,) = [r for r in caplog.records if family.id in r.getMessage()]
    # expected of a candidate from another task: said, but not warned about as a stale skill
    assert said.levelno == logging.INFO and "does not fit this task" in said.getMessage()


def test_a_foreign_rule_is_judged_here_on_its_data_conditions_not_on_the_task_it_came_from(
) -> None:
    """Every skill of a domain states its task; checked in another domain, that condition
    alone would stop the rule from ever being cross-evaluated there."""
    from haste_dagster.agents.attempts import skill_views
    from haste_dagster.agents.policy import conditions_hold
    from haste_dagster.skills.model import Condition

    rule = Skill(
        tier="domain", scope_key="tabular_classification", domain="tabular_classification",
        kind="rule", pattern="set:numeric.missing_indicator=True", title="missing indicator",
        guidance="g", conditions=[Condition(key="task", op="==", value="binary"),
                                  Condition(key="rows", op=">=", value=100)],
        action={"ops": [{"op": "set", "path": "numeric.missing_indicator", "value": True}]},
    )
    (foreign,) = skill_views([rule], [], "tabular_regression")
    (home,) = skill_views([rule], [], "tabular_classification")
    regression = {"task": "regression", "rows": 500}
    assert foreign.foreign and conditions_hold(foreign.conditions, regression)
    assert not conditions_hold(foreign.conditions, {"task": "regression", "rows": 50})
    assert not home.foreign and not conditions_hold(home.conditions, regression)
    # only rules are cross-evaluated that way: another domain's recipe keeps its task
    recipe = rule.model_copy(update={"kind": "recipe", "pattern": "recipe:binary:xgboost"})
    (foreign_recipe,) = skill_views([recipe], [], "tabular_regression")
    assert not conditions_hold(foreign_recipe.conditions, regression)


def test_a_warm_start_that_changes_nothing_the_model_sees_is_not_controlled(
    conn: psycopg.Connection, two_defs: Path
) -> None:
    from haste_dagster.agents import records

    store = open_skill_store(conn)
    inert = store.add(Skill(
        tier="domain", scope_key=DOMAIN, title="A skew threshold while the skew step is off",
        guidance="When anywhere: set the skew threshold to 3.5. Evidence: helped elsewhere.",
        action={"ops": [{"op": "set", "path": "numeric.skew_threshold", "value": 3.5}]},
        evidence=[Evidence(slug="elsewhere", delta=0.2)], created_by="promotion",
    ))
    result = solve(conn, "tiny_b", AttemptConfig(seed=0, iterations=1), defs_dir=two_defs,
                   extract=False)
    baseline = records.load_iterations(conn, result.attempt.attempt_id)[0]
    assert baseline.skill_ids == [inert.id]  # it shaped the start...
    assert "control" not in result.attempt.extra  # ...but no control was evaluated for it
    (usage,) = [u for u in _usage(conn, result.attempt.attempt_id) if u["event"] == "screened"]
    assert usage["skill_id"] == inert.id and usage["delta"] == 0.0


def test_an_attempt_records_as_loaded_only_the_foreign_rule_its_agent_tries(
    conn: psycopg.Connection, two_defs: Path
) -> None:
    """The store returns every foreign rule pattern that holds; the agent keeps the first
    that translates to its task. Lineage records that one, not the ones passed over."""
    from haste_dagster.skills.scope import MAX_FOREIGN

    store = open_skill_store(conn)

    def rule(pattern: str, ops: list[dict]) -> Skill:
        return Skill(tier="domain", scope_key="tabular_classification",
                     domain="tabular_classification", kind="rule", pattern=pattern,
                     title=pattern, guidance="g", action={"ops": ops},
                     conditions=[], evidence=[Evidence(slug="elsewhere", delta=0.01)])

    family = store.add(rule("family:logistic_regression", [
        {"op": "set_model", "family": "logistic_regression", "params": {}}]))
    others = [store.add(rule(f"set:{path}=True", [{"op": "set", "path": path, "value": True}]))
              for path in ("numeric.log1p_skewed", "numeric.missing_indicator")]
    returned = {s.id for s in store.scoped_skills(
        "tiny_b", DOMAIN, {"task": "regression", "rows": 300}, "tiered")}
    assert {family.id, *(s.id for s in others)} <= returned  # all three come back
    result = solve(conn, "tiny_b", AttemptConfig(seed=0, iterations=1), defs_dir=two_defs,
                   extract=False)
    foreign = [e["id"] for e in result.attempt.skills_loaded
               if e["id"] in {family.id, *(s.id for s in others)}]
    assert len(foreign) == MAX_FOREIGN and family.id not in foreign  # a classifier family
    recorded = {r["skill_id"] for r in conn.execute(
        "SELECT skill_id FROM skill_usage WHERE attempt_id = %s AND event = 'loaded'",
        (result.attempt.attempt_id,)).fetchall()}
    assert recorded & {family.id, *(s.id for s in others)} == set(foreign)

"""Extraction: competition skills from an attempt's kept changes."""

from __future__ import annotations

from typing import Any

from skill_helpers import insert_attempt, set_action

from haste_dagster.skills.extraction import KeptChange, extract_competition_skills
from haste_dagster.skills.store import SkillStore

PROFILE: dict[str, Any] = {
    "task": "regression", "rows": 2000, "n_numeric": 5, "n_categorical": 2, "n_text": 0,
    "has_text": False, "is_forecast": False, "target_skew": 2.4, "max_cardinality": 120,
    "missing_rate": 0.1,
}


def _changes() -> list[KeptChange]:
    return [
        KeptChange(idx=1, patch=set_action("model.params.max_depth", 8), delta=0.01,
                   rationale="deeper trees", skill_ids=[]),
        KeptChange(idx=3, patch=set_action("target_transform", "log1p"), delta=0.05,
                   rationale="skewed target"),
        KeptChange(idx=4, patch=set_action("categorical.encoding", "target"), delta=0.02),
        KeptChange(idx=6, patch=set_action("model.params.learning_rate", 0.1), delta=-0.01),
    ]


def _extract(store: SkillStore, attempt: int, changes: list[KeptChange]) -> list[Any]:
    return extract_competition_skills(
        store, attempt_id=attempt, slug="house_prices", domain="tabular_regression",
        profile=PROFILE, kept_changes=changes,
    )


def test_extraction_writes_largest_deltas_first_with_conditions_and_evidence(
    store: SkillStore,
) -> None:
    attempt = insert_attempt(store.conn, "house_prices")
    skills = _extract(store, attempt, _changes())
    # three helpful changes (the harmful one is ignored) + the recipe of all three
    assert len(skills) == 4
    assert [s.action["ops"][0]["path"] for s in skills[:3]] == [
        "target_transform", "categorical.encoding", "model.params.max_depth"
    ]
    log1p = skills[0]
    assert (log1p.tier, log1p.scope_key, log1p.domain) == (
        "competition", "house_prices", "tabular_regression"
    )
    assert [(e.attempt_id, e.iteration, e.delta) for e in log1p.evidence] == [(attempt, 3, 0.05)]
    described = {c.describe() for c in log1p.conditions}
    expected = {'task == "regression"', "rows >= 500", "rows <= 8000", "target_skew >= 1.2"}
    assert expected <= described
    assert log1p.conditions_hold(PROFILE)
    encoding = {c.describe() for c in skills[1].conditions}
    assert "max_cardinality >= 60" in encoding
    recipe = skills[3]
    assert [op["path"] for op in recipe.action["ops"]] == [
        "model.params.max_depth", "target_transform", "categorical.encoding"
    ]


def test_extraction_rerun_writes_nothing_new(store: SkillStore) -> None:
    attempt = insert_attempt(store.conn, "house_prices")
    first = _extract(store, attempt, _changes())
    again = _extract(store, attempt, _changes())
    assert [(s.id, s.version) for s in again] == [(s.id, s.version) for s in first]
    count = store.conn.execute("SELECT count(*) AS n FROM skills").fetchone()["n"]
    assert count == len(first)


def test_extraction_never_writes_more_than_five(store: SkillStore) -> None:
    attempt = insert_attempt(store.conn, "house_prices")
    many = [
        KeptChange(idx=i, patch=set_action("model.params.n_estimators", 100 * i), delta=0.01 * i)
        for i in range(1, 9)
    ]
    skills = _extract(store, attempt, many)
    assert len(skills) == 5
    assert skills[0].action == set_action("model.params.n_estimators", 800)


def test_extraction_of_an_attempt_that_kept_nothing_writes_nothing(store: SkillStore) -> None:
    assert _extract(store, insert_attempt(store.conn, "house_prices"), []) == []

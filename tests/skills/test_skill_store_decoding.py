"""The store's fast row decoding gives exactly the skills full validation gives."""

from __future__ import annotations

import psycopg
from skill_helpers import cond, insert_attempt, make_skill, set_action

from haste_dagster.skills.model import Evidence, Skill
from haste_dagster.skills.store import SkillStore
from haste_dagster.skills.store_rows import SELECT_SKILLS, construct, row_to_skill, validated_skill


def _stored_rows(conn: psycopg.Connection) -> list[dict]:
    return conn.execute(f"{SELECT_SKILLS} WHERE s.is_current ORDER BY s.pk").fetchall()


def test_decoded_rows_equal_validated_skills_field_for_field(
    conn: psycopg.Connection, store: SkillStore
) -> None:
    attempt = insert_attempt(conn, "comp_a")
    rich = make_skill(
        conditions=[cond("rows", ">=", 500), cond("missing_rate", "<=", 0.1)],
        action=set_action("model.params.max_depth", 8),
        evidence=[Evidence(attempt_id=attempt, iteration=2, slug="comp_a", delta=0.01)],
    )
    added = store.add_many([rich, make_skill("domain", "tabular_regression", "Plain domain")])
    store.record_loaded(attempt, added)
    store.record_usage(attempt, 3, [added[0].id], True, 0.02)
    rows = _stored_rows(conn)
    assert len(rows) == 2
    for row in rows:
        fast, full = row_to_skill(row), validated_skill(row)
        assert fast.model_dump() == full.model_dump()
        assert fast.conditions == full.conditions and fast.stats == full.stats
        assert fast.utility == full.utility
        for profile in ({"rows": 600, "missing_rate": 0.05}, {"rows": 100}, {}):
            assert fast.conditions_hold(profile) == full.conditions_hold(profile)
    assert row_to_skill(rows[0]).stats.applied == 1
    assert row_to_skill(rows[0]).conditions_hold({"rows": 600, "missing_rate": 0.05})


def test_a_row_missing_a_field_falls_back_to_pydantic_construction() -> None:
    partial = construct(Evidence, {"slug": "comp_a", "delta": 0.5})  # no attempt/iteration
    assert partial == Evidence.model_construct(slug="comp_a", delta=0.5)
    assert partial.attempt_id is None
    full = construct(Evidence, {"attempt_id": 1, "iteration": 2, "slug": "x", "delta": 0.1})
    assert full == Evidence(attempt_id=1, iteration=2, slug="x", delta=0.1)
    assert isinstance(construct(Skill, {"tier": "global"}), Skill)

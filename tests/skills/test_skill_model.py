"""The Skill model: conditions, content identity, and the SQL prefilter agreeing with it."""

from __future__ import annotations

import itertools

import psycopg
from psycopg.types.json import Jsonb
from skill_helpers import cond, make_skill, set_action

from haste_dagster.competitions.profile import DataProfile
from haste_dagster.skills.model import PROFILE_KEYS, Evidence


def test_condition_keys_cover_the_data_profile() -> None:
    assert set(DataProfile.model_fields) - {"slug"} == set(PROFILE_KEYS)


def test_conditions_are_false_on_missing_null_or_incomparable_values() -> None:
    assert cond("rows", ">=", 100).holds({"rows": 100})
    assert not cond("rows", ">=", 100).holds({})
    assert not cond("target_skew", ">", 1.0).holds({"target_skew": None})
    assert not cond("task", "<", 3).holds({"task": "regression"})
    assert cond("task", "!=", "forecast").holds({"task": "regression"})


def test_content_identity_ignores_whitespace_evidence_and_condition_order() -> None:
    a = make_skill(title="Deeper  trees", guidance="Go deeper.\n",
                   conditions=[cond("rows", ">", 5), cond("n_text", "==", 0)],
                   action=set_action("model.params.max_depth", 8))
    b = make_skill(title="Deeper trees", guidance="Go   deeper.",
                   conditions=[cond("n_text", "==", 0), cond("rows", ">", 5)],
                   action={"op": "set", "path": "model.params.max_depth", "value": 8},
                   evidence=[Evidence(slug="x", delta=0.1)])
    assert a.content_hash == b.content_hash and a.new_id() == b.new_id()
    assert a.new_id().startswith("sk_") and len(a.new_id()) == 19
    assert make_skill(title="Deeper trees!").content_hash != a.content_hash


def test_sql_prefilter_never_drops_a_skill_whose_conditions_hold(
    conn: psycopg.Connection,
) -> None:
    values = [None, True, False, 0, 3, 2.5, -1.0, "regression"]
    ops = ["<", "<=", ">", ">=", "==", "!="]
    keys = ["rows", "target_skew", "task"]
    checked = 0
    for key, op, wanted, actual in itertools.product(keys, ops, values[1:], values):
        condition = cond(key, op, wanted)
        profile = {} if actual is None and key == "rows" else {key: actual}
        row = conn.execute(
            "SELECT skill_conditions_may_hold(%s, %s) AS ok",
            (Jsonb([condition.model_dump(mode="json")]), Jsonb(profile)),
        ).fetchone()
        if condition.holds(profile):
            assert row["ok"], (condition, profile)
        checked += 1
    assert checked == 3 * 6 * 7 * 8


    # and it does drop failing numeric bounds, which is what makes it worth having
    conditions = Jsonb([{"key": "rows", "op": ">=", "value": 100}])
    for rows, expected in ((10, False), (5000, True)):
        row = conn.execute("SELECT skill_conditions_may_hold(%s, %s) AS ok",
                           (conditions, Jsonb({"rows": rows}))).fetchone()
        assert row["ok"] is expected

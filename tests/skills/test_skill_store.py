"""SkillStore basics on the real embedded PostgreSQL: idempotent add, versions, usage."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest
from skill_helpers import cond, insert_attempt, make_skill, set_action

from haste_dagster import db
from haste_dagster.errors import SkillError
from haste_dagster.skills.embeddings import HashingEmbedder
from haste_dagster.skills.model import Evidence
from haste_dagster.skills.store import SkillStore


def _rows(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) AS n FROM skills").fetchone()["n"]


def test_add_of_the_same_content_twice_yields_one_row(store: SkillStore) -> None:
    deeper = set_action("model.params.max_depth", 8)
    first = store.add(make_skill(title="Use deeper trees", guidance="More depth.", action=deeper))
    again = make_skill(title=" Use  deeper trees", guidance="More  depth.", action=deeper)
    again = store.add(again)
    assert again.id == first.id and again.version == first.version == 1
    assert _rows(store.conn) == 1
    assert first.id is not None and first.id.startswith("sk_")


def test_same_content_in_another_scope_is_another_skill(store: SkillStore) -> None:
    a = store.add(make_skill(scope="comp_a"))
    b = store.add(make_skill(scope="comp_b"))
    assert a.id != b.id
    assert _rows(store.conn) == 2


def test_concurrent_adds_of_the_same_content_yield_one_row(db_url: str) -> None:
    skill = make_skill(title="Concurrent skill", action=set_action("model.params.max_depth", 4))
    barrier = threading.Barrier(4)
    ids: list[str | None] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with db.connection(db_url) as c:
                s = SkillStore(c, HashingEmbedder())
                barrier.wait()
                ids.append(s.add(skill).id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1
    with db.connection(db_url) as c:
        assert _rows(c) == 1


def test_new_version_keeps_the_id_and_never_edits_the_old_row(store: SkillStore) -> None:
    shallow = set_action("model.params.max_depth", 3)
    v1 = store.add(make_skill(title="Shallow trees", action=shallow))
    v2 = store.new_version(v1.id or "", guidance="Shallow trees generalise on small data.")
    assert (v2.id, v2.version) == (v1.id, 2)
    assert store.get(v1.id or "").version == 2
    assert store.get(v1.id or "", 1).guidance == v1.guidance
    assert [e["kind"] for e in store.edges(v1.id)] == ["supersedes"]
    with pytest.raises(psycopg.errors.RaiseException, match="never edited in place"):
        with store.conn.transaction():
            store.conn.execute("UPDATE skills SET title = 'edited' WHERE id = %s", (v1.id,))


def test_new_version_without_a_change_writes_nothing(store: SkillStore) -> None:
    v1 = store.add(make_skill())
    assert store.new_version(v1.id or "", title=v1.title).version == 1
    assert _rows(store.conn) == 1


def test_known_content_with_new_evidence_makes_a_version_with_both(store: SkillStore) -> None:
    e1 = Evidence(attempt_id=1, iteration=2, slug="comp_a", delta=0.1)
    e3 = Evidence(attempt_id=3, iteration=1, slug="comp_a", delta=0.2)
    first = store.add(make_skill(evidence=[e1]))
    second = store.add(make_skill(evidence=[e3]))
    assert second.id == first.id and second.version == 2
    assert sorted(e.attempt_id for e in second.evidence) == [1, 3]
    assert store.add(make_skill(evidence=[e3])).version == 2  # nothing new: no version


def test_invalid_skills_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="scope_key"):
        make_skill(tier="domain", scope=None)
    with pytest.raises(ValueError, match="unknown data-profile key 'row'"):
        make_skill(conditions=[cond("row", ">", 5)])
    with pytest.raises(SkillError, match="skill action"):
        make_skill(action={"ops": [{"op": "explode"}]})


def test_usage_feeds_stats_utility_and_the_one_query_view(store: SkillStore) -> None:
    skill = store.add(make_skill(evidence=[Evidence(attempt_id=None, slug="comp_a", delta=0.3)]))
    a1, a2 = insert_attempt(store.conn, "comp_a"), insert_attempt(store.conn, "comp_a")
    store.record_loaded(a1, [skill])
    store.record_loaded(a1, [skill])  # a resumed attempt records again: no double count
    store.record_usage(a1, 3, [skill.id or ""], kept=True, delta=0.1)
    store.record_loaded(a2, [skill])
    store.record_usage(a2, 1, [skill.id or "", "sk_0000000000000000"], kept=False, delta=-0.2)
    got = store.get(skill.id or "")
    assert (got.stats.loaded, got.stats.applied, got.stats.kept) == (2, 2, 1)
    assert got.stats.mean_delta == pytest.approx(-0.05)
    # evidence 0.3 + kept 0.1 + dropped 0 over 3 trials
    assert store.utility(skill.id or "") == pytest.approx(0.4 / 3)
    rows = store.conn.execute(
        "SELECT attempt_id, loaded, kept, kept_delta FROM skill_attempts WHERE skill_id = %s "
        "ORDER BY attempt_id", (skill.id,)
    ).fetchall()
    assert [(r["attempt_id"], r["loaded"], r["kept"], r["kept_delta"]) for r in rows] == [
        (a1, True, True, 0.1), (a2, True, False, None)
    ]


def test_similar_ranks_the_closest_text_first(store: SkillStore) -> None:
    store.add(make_skill(title="Log transform the skewed target", guidance="log1p target skewed"))
    store.add(make_skill(title="Target encoding for categoricals", guidance="high cardinality"))
    found = store.similar("log transform skewed target", k=2)
    assert found[0][0].title == "Log transform the skewed target"
    assert found[0][1] > found[1][1]


def test_validate_all_reports_a_row_whose_content_no_longer_matches_its_hash(
    store: SkillStore,
) -> None:
    skill = store.add(make_skill(title="Valid skill"))
    assert store.validate_all() == []
    with store.conn.transaction():  # simulate a hand edit behind the trigger's back
        store.conn.execute("ALTER TABLE skills DISABLE TRIGGER skills_immutable")
        store.conn.execute("UPDATE skills SET title = 'Edited by hand' WHERE id = %s",
                           (skill.id,))
        store.conn.execute("ALTER TABLE skills ENABLE TRIGGER skills_immutable")
    assert store.validate_all() == [
        f"skill {skill.id} v1: content_hash does not match its content"
    ]


def test_jsonb_columns_read_back_as_written_including_non_ascii_text(conn) -> None:
    from haste_dagster.skills.nearest import read_skills

    value = {"text": "café — naïve 数据", "nested": [1, 2.5, None, True, {"k": "v"}]}
    got = read_skills(conn, "SELECT %s::jsonb AS j, '  [1, 2]  '::jsonb AS k", (json.dumps(value),))
    row = got.fetchone()
    assert row["j"] == value and row["k"] == [1, 2]

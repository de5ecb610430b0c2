"""Scoped loading: tiered / flat / none return exactly the specified sets."""

from __future__ import annotations

from typing import Any

import pytest
from skill_helpers import cond, make_skill

from haste_dagster.skills.model import Skill
from haste_dagster.skills.store import SkillStore

PROFILE: dict[str, Any] = {
    "task": "text_classification",
    "rows": 5000,
    "n_features": 2,
    "n_numeric": 1,
    "n_categorical": 0,
    "n_text": 1,
    "n_date": 0,
    "has_text": True,
    "has_date": False,
    "is_forecast": False,
    "target_skew": None,
    "max_cardinality": 0,
    "missing_rate": 0.0,
}


@pytest.fixture
def inventory(store: SkillStore) -> dict[str, Skill]:
    """Skills across tiers and scopes; some conditions hold on PROFILE, some do not."""
    specs = {
        "g_text": make_skill("global", None, "TF-IDF word n-grams for free text",
                             guidance="Free text columns: text classification with word "
                             "n-grams and a linear model.",
                             conditions=[cond("has_text", "==", True)]),
        "g_skew": make_skill("global", None, "Log transform a skewed target",
                             conditions=[cond("target_skew", ">=", 1.0)]),
        "g_any": make_skill("global", None, "Early stopping for boosted trees"),
        "g_retired": make_skill("global", None, "A retired global skill"),
        "d_text_ok": make_skill("domain", "text", "Character n-grams for short texts",
                                conditions=[cond("rows", ">=", 1000)]),
        "d_text_no": make_skill("domain", "text", "Tiny corpora need strong regularisation",
                                conditions=[cond("rows", "<", 1000)]),
        "d_tab": make_skill("domain", "tabular_regression", "Deeper trees for big tables"),
        "c_own_ok": make_skill("competition", "text_a", "Bigrams helped here", domain="text",
                               conditions=[cond("has_text", "==", True)]),
        "c_own_no": make_skill("competition", "text_a", "Needs three text columns",
                               domain="text", conditions=[cond("n_text", ">=", 3)]),
        "c_other": make_skill("competition", "text_b", "Other competition skill", domain="text"),
        "c_merged": make_skill("competition", "text_a", "A merged duplicate", domain="text"),
    }
    stored = {name: store.add(skill) for name, skill in specs.items()}
    stored["g_retired"] = store.new_version(stored["g_retired"].id or "", status="retired")
    stored["c_merged"] = store.new_version(stored["c_merged"].id or "", status="merged")
    return stored


def _names(inventory: dict[str, Skill], skills: list[Skill]) -> list[str]:
    by_id = {s.id: name for name, s in inventory.items()}
    return [by_id[s.id] for s in skills]


def test_tiered_loads_applicable_global_own_domain_and_own_competition(
    store: SkillStore, inventory: dict[str, Skill]
) -> None:
    loaded = store.scoped_skills("text_a", "text", PROFILE, "tiered")
    names = _names(inventory, loaded)
    assert sorted(names) == ["c_own_ok", "d_text_ok", "g_any", "g_text"]
    assert names[:2] == ["c_own_ok", "d_text_ok"]  # narrowest scope first


def test_tiered_ranks_globals_by_relevance_to_the_competition(
    store: SkillStore, inventory: dict[str, Skill]
) -> None:
    loaded = store.scoped_skills("text_a", "text", PROFILE, "tiered", top_k_global=1)
    assert _names(inventory, loaded) == ["c_own_ok", "d_text_ok", "g_text"]


def test_flat_loads_every_active_skill_and_none_loads_nothing(
    store: SkillStore, inventory: dict[str, Skill]
) -> None:
    flat = _names(inventory, store.scoped_skills("text_a", "text", PROFILE, "flat"))
    assert sorted(flat) == sorted(set(inventory) - {"g_retired", "c_merged"})
    assert store.scoped_skills("text_a", "text", PROFILE, "none") == []


def test_warm_start_on_a_new_competition_loads_only_global_and_domain(
    store: SkillStore, inventory: dict[str, Skill]
) -> None:
    loaded = store.scoped_skills("text_new", "text", PROFILE, "tiered")
    assert sorted(_names(inventory, loaded)) == ["d_text_ok", "g_any", "g_text"]


def test_tiered_looks_past_nearby_globals_whose_conditions_fail(store: SkillStore) -> None:
    close = [
        make_skill("global", None, f"Free text n-grams variant {i}",
                   guidance=f"text classification word n-grams free text {i}",
                   conditions=[cond("rows", "<", 10)])
        for i in range(40)
    ]
    store.add_many(close)
    far = store.add(make_skill("global", None, "Calibrate probabilities with isotonic fits"))
    loaded = store.scoped_skills("text_a", "text", PROFILE, "tiered", top_k_global=1)
    assert [s.id for s in loaded] == [far.id]


def test_repeated_searches_reuse_one_generic_plan(
    store: SkillStore, inventory: dict[str, Skill]
) -> None:
    """Once psycopg has prepared them, the nearest-neighbour searches of scoped loading and
    `similar` can run on a cached generic plan instead of being planned on every execution:
    the query vector is their only parameter (tier, status and LIMIT are literals), so the
    generic plan of the global search still uses the partial index over active globals.
    With parameters PostgreSQL kept planning each search anew at 100,000 skills (its
    generic plan, blind to tier = 'global', searched the whole index)."""
    first = store.scoped_skills("text_a", "text", PROFILE, "tiered")
    first_similar = store.similar("word n-grams", k=3)
    for _ in range(12):  # psycopg prepares at the 6th; PostgreSQL weighs 5 custom plans
        assert store.scoped_skills("text_a", "text", PROFILE, "tiered") == first
        assert store.similar("word n-grams", k=3) == first_similar
    prepared = store.conn.execute(
        """SELECT statement, parameter_types::text AS types, generic_plans
           FROM pg_prepared_statements WHERE statement LIKE '%embedding <=>%'"""
    ).fetchall()
    assert len(prepared) == 2  # the global search of scoped loading and similar's top-k
    assert [p["types"] for p in prepared] == ["{vector}", "{vector}"]
    assert all(p["generic_plans"] > 0 for p in prepared)
    global_search = next(p["statement"] for p in prepared if "'global'" in p["statement"])
    with store.conn.transaction():
        store.conn.execute("SET LOCAL enable_seqscan = off")  # a tiny table is read whole
        plan = store.conn.execute(f"EXPLAIN (GENERIC_PLAN) {global_search}").fetchall()
    assert "skills_global_hnsw" in "\n".join(r["QUERY PLAN"] for r in plan)


def test_candidates_chosen_on_a_few_columns_are_those_chosen_among_whole_skills(
    store: SkillStore,
) -> None:
    """The scoped load decides on cross-evaluation candidates from a few columns of their
    rows and reads only the chosen ones whole; the choice is the one made on whole skills,
    usage statistics included."""
    import numpy as np
    from skill_helpers import insert_attempt

    from haste_dagster.bench.store import PROFILE as BENCH_PROFILE
    from haste_dagster.bench.store import Layout, synthetic_skill, unit_vectors
    from haste_dagster.skills.scope import conditions_here, cross_candidates, is_candidate

    rng = np.random.default_rng(3)
    layout = Layout(n=600, n_domains=3, n_competitions=12)
    skills = [synthetic_skill(i, layout, rng, candidate_share=0.6) for i in range(600)]
    added = store.add_many(skills, unit_vectors(rng, len(skills)))
    attempt = insert_attempt(store.conn, "comp_0")
    for skill in added[::7]:  # measured uses: some effects fall below zero, none is chosen
        store.record_usage(attempt, 1, [skill.id or ""], kept=False, delta=-0.02)
    every = store.list(status="active")
    checked = 0
    for c in range(layout.n_competitions):
        slug, domain = f"comp_{c}", f"domain_{c % layout.n_domains}"
        loaded = store.scoped_skills(slug, domain, BENCH_PROFILE, "tiered")
        got = [s for s in loaded if is_candidate(s.tier, s.scope_key, slug, domain)]
        whole = [
            s for s in every
            if is_candidate(s.tier, s.scope_key, slug, domain)
            and (s.kind == "rule" or s.kind == "recipe" and s.domain == domain)
            and (s.tier == "domain" or s.domain == domain)
            and all(c.holds(BENCH_PROFILE) for c in conditions_here(
                s.conditions, s.kind, s.tier, s.scope_key, slug=slug, domain=domain))
        ]
        covered = {s.pattern for s in loaded
                   if s.pattern and s not in got and s.tier in ("domain", "global")}
        expected = cross_candidates(
            [s for s in whole if s.tier == "competition"], covered,
            foreign=[s for s in whole if s.tier == "domain"], slug=slug, profile=BENCH_PROFILE)
        assert [s.id for s in got] == [s.id for s in expected]
        checked += len(got)
    assert checked >= 20

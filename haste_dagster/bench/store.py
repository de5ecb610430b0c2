"""``haste bench store``: how fast the skill store inserts, scopes and searches at scale.

A throwaway database is created on the same server (dropped afterwards) and filled with
``n`` synthetic skills in batched inserts. Their embeddings are random unit vectors of
the store's dimension from ``SyntheticEmbedder``, so the bench measures the store
(PostgreSQL, pgvector's HNSW index, row decoding, condition filtering), not the embedder.

The synthetic inventory: 5% global skills, 20% domain skills over ``max(8, n // 500)``
domains, 75% competition skills over ``max(1, n // 25)`` competitions; each skill has 0-2
conditions on ``rows`` / ``missing_rate``, about half of which hold on the bench profile.
By default every skill is a literal change. With ``candidate_share`` that share of the
domain and competition skills are rules and recipes, with a measured positive effect: the
kinds a tiered load fetches from *other* competitions and domains as cross-evaluation
candidates (``skills.scope.cross_candidates``). Their patterns come from a bounded
vocabulary (``RULE_PATTERNS``, ``RECIPE_PATTERNS``), as real ones do: a pattern names a
change in the spec space, not a competition.
Measured: insert rate, and p50/p95 latency of ``scoped_skills(..., "tiered")`` for random
competitions and of ``similar(text, k=10)`` (top-k cosine through the HNSW index).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from haste_dagster import db
from haste_dagster.errors import ConfigError
from haste_dagster.skills.model import Condition, Evidence, Skill
from haste_dagster.skills.scope import is_candidate
from haste_dagster.skills.store import EMBEDDING_DIM, SkillStore

PROFILE: dict[str, Any] = {
    "task": "regression",
    "rows": 5000,
    "n_features": 12,
    "n_numeric": 10,
    "n_categorical": 2,
    "n_text": 0,
    "missing_rate": 0.04,
    "has_text": False,
    "is_forecast": False,
}


RULE_PATTERNS = 60  # distinct rule patterns of the synthetic vocabulary
RECIPE_PATTERNS = 8  # distinct recipe patterns (a recipe's pattern is its task and family)
RECIPE_SHARE = 0.3  # of a competition's candidate-kind skills, the recipes


class SyntheticEmbedder:
    """Random unit vectors (seeded): stands in for a model so only the store is timed."""

    name = f"synthetic-{EMBEDDING_DIM}"
    dim = EMBEDDING_DIM

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def embed(self, texts: list[str]) -> np.ndarray:
        return unit_vectors(self.rng, len(texts))


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass(frozen=True)
class Layout:
    n: int
    n_domains: int
    n_competitions: int

    @classmethod
    def for_size(cls, n: int) -> Layout:
        return cls(n, max(8, n // 500), max(1, n // 25))


def synthetic_skill(
    i: int, layout: Layout, rng: np.random.Generator, candidate_share: float = 0.0
) -> Skill:
    """Skill ``i`` of the synthetic inventory: every block of 20 holds 1 global, 4 domain
    and 15 competition skills, spread evenly over the domains and competitions; of the
    domain and competition skills, ``candidate_share`` are rules or recipes."""
    block, share = divmod(i, 20)
    conditions: list[Condition] = []
    for _ in range(int(rng.integers(0, 3))):
        if rng.random() < 0.5:
            conditions.append(
                Condition(key="rows", op=">=" if rng.random() < 0.7 else "<=",
                          value=int(rng.choice([500, 2000, 10000])))
            )
        else:
            conditions.append(
                Condition(key="missing_rate", op="<=", value=float(rng.choice([0.01, 0.1])))
            )
    common = {
        "title": f"Synthetic skill {i}",
        "guidance": f"Synthetic guidance number {i} for the store benchmark.",
        "conditions": conditions,
        "created_by": "seed",
    }
    if share == 0:
        return Skill(tier="global", **common)
    # drawn only with a share, so the default inventory is the same as it always was
    if candidate_share > 0 and rng.random() < candidate_share:
        recipe = share > 4 and rng.random() < RECIPE_SHARE
        pattern = (f"recipe:regression:family_{int(rng.integers(RECIPE_PATTERNS))}" if recipe
                   else f"rule:synthetic_{int(rng.integers(RULE_PATTERNS))}")
        common |= {"kind": "recipe" if recipe else "rule", "pattern": pattern,
                   "evidence": [Evidence(slug="synthetic", delta=float(rng.random()) / 100)]}
    if share <= 4:
        domain = f"domain_{(4 * block + share - 1) % layout.n_domains}"
        return Skill(tier="domain", scope_key=domain, **common)
    competition = (15 * block + share - 5) % layout.n_competitions
    return Skill(tier="competition", scope_key=f"comp_{competition}",
                 domain=f"domain_{competition % layout.n_domains}", **common)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 3),
        "p95_ms": round(1000 * (q[94] if len(ordered) > 1 else ordered[0]), 3),
        "max_ms": round(1000 * ordered[-1], 3),
    }


def run_store_bench(
    n: int,
    *,
    batch: int = 1000,
    queries: int = 200,
    seed: int = 0,
    candidate_share: float = 0.0,
    url: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Fill a throwaway database with ``n`` synthetic skills and time the store."""
    if n < 1:
        raise ConfigError("the bench needs at least one skill")
    if not 0.0 <= candidate_share <= 1.0:
        raise ConfigError(f"candidate share {candidate_share}: choose a share from 0 to 1")
    server = url or db.database_url()
    name = f"haste_bench_{uuid.uuid4().hex[:10]}"
    bench_url = db.create_database(server, name)
    try:
        with db.connection(bench_url) as conn:
            return _bench(conn, n, batch=batch, queries=queries, seed=seed,
                          candidate_share=candidate_share, progress=progress)
    finally:
        db.drop_database(server, name)


def _bench(
    conn: psycopg.Connection,
    n: int,
    *,
    batch: int,
    queries: int,
    seed: int,
    candidate_share: float,
    progress: Any,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    layout = Layout.for_size(n)
    load_before = os.getloadavg()[0]
    store = SkillStore(conn, SyntheticEmbedder(seed))
    insert_seconds = 0.0
    for start in range(0, n, batch):
        chunk = [synthetic_skill(i, layout, rng, candidate_share)
                 for i in range(start, min(n, start + batch))]
        vectors = unit_vectors(rng, len(chunk))
        began = time.perf_counter()
        store.add_many(chunk, vectors)
        insert_seconds += time.perf_counter() - began
        if progress is not None:
            progress(min(n, start + batch), n)
    with conn.transaction():
        conn.execute("ANALYZE skills")
    stored = store.count()

    scoped_times, scoped_sizes, candidates = [], [], []
    for _ in range(queries):
        c = int(rng.integers(layout.n_competitions))
        slug, domain = f"comp_{c}", f"domain_{c % layout.n_domains}"
        began = time.perf_counter()
        loaded = store.scoped_skills(slug, domain, PROFILE, "tiered", top_k_global=8)
        scoped_times.append(time.perf_counter() - began)
        scoped_sizes.append(len(loaded))
        candidates.append(sum(1 for s in loaded
                              if is_candidate(s.tier, s.scope_key, slug, domain)))

    similar_times = []
    for _ in range(queries):
        began = time.perf_counter()
        found = store.similar("synthetic query", k=10)
        similar_times.append(time.perf_counter() - began)
        assert len(found) == min(10, stored)

    with conn.transaction():
        plan = "\n".join(
            str(next(iter(r.values())))
            for r in conn.execute(
                """EXPLAIN SELECT id FROM skills WHERE is_current AND status = 'active'
                   ORDER BY embedding <=> %s LIMIT 10""",
                (unit_vectors(rng, 1)[0],),
            ).fetchall()
        )
    return {
        "skills": stored,
        "layout": {"domains": layout.n_domains, "competitions": layout.n_competitions,
                   "candidate_share": candidate_share},
        "insert": {
            "seconds": round(insert_seconds, 3),
            "skills_per_second": round(stored / insert_seconds, 1) if insert_seconds else None,
            "batch": batch,
        },
        "scoped_load": {
            **_percentiles(scoped_times),
            "queries": queries,
            "mean_skills_returned": round(statistics.mean(scoped_sizes), 1),
            "mean_candidates_returned": round(statistics.mean(candidates), 1),
        },
        "similar_top10": {**_percentiles(similar_times), "queries": queries},
        "hnsw_index_used": "skills_embedding_hnsw" in plan,
        # timings are wall-clock: on a shared machine they include waiting for a CPU
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        },
        "embedder": "synthetic random unit vectors (the bench times the store, not a model)",
    }

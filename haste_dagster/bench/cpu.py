"""``haste bench cpu``: CPU seconds per competition and stage, without and with the fold cache.

For each competition the same attempt (seed, iterations, heuristic policy, loading ``none``
so earlier attempts' skills cannot change the work) runs twice in a throwaway database:
once with the fold-feature cache off (``HASTE_FOLD_CACHE_MB=0``, the behaviour before the
cache) and once with the configured budget. Per run, CPU seconds of this process
(`time.process_time`; every fit here is single-threaded) for

* ``refinement``: the attempt (baseline and every candidate's cross-validation);
* ``final_fit``: the best spec fitted on all training data, hidden test predicted;
* ``grading``: the score, rank and medal of those predictions.

Both runs must record the same iteration scores (the cache must not change results); the
report says whether they did. Stages a pipeline adds later (e.g. a prototype screen inside
the attempt) are counted in ``refinement``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from haste_dagster import db
from haste_dagster.agents.attempts import AttemptConfig
from haste_dagster.agents.competition_agent import run_attempt
from haste_dagster.competitions.grading import grade
from haste_dagster.competitions.registry import Competition, load_competition
from haste_dagster.solution.evaluate import fit_predict
from haste_dagster.solution.fold_cache import ENV_MB
from haste_dagster.solution.spec import SolutionSpec

STAGES = ("refinement", "final_fit", "grading")


@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def measure_competition(
    conn: psycopg.Connection,
    competition: Competition,
    *,
    iterations: int | None,
    seed: int,
    cache_mb: str | None,
) -> dict[str, Any]:
    """One attempt + final fit + grade of ``competition``; CPU and wall seconds per stage."""
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        c0, w0 = time.process_time(), time.perf_counter()
        value = fn()
        cpu[stage] = round(time.process_time() - c0, 3)
        wall[stage] = round(time.perf_counter() - w0, 3)
        return value

    config = AttemptConfig(loading="none", iterations=iterations, seed=seed)
    with _env(ENV_MB, cache_mb):
        result = timed("refinement", lambda: run_attempt(conn, competition, config))
    spec = SolutionSpec.model_validate(result.best_spec)
    predictions = timed(
        "final_fit",
        lambda: fit_predict(
            spec, competition.problem, competition.train, competition.test_features, seed
        ),
    )
    graded = timed("grading", lambda: grade(competition, predictions))
    return {
        "cpu_seconds": {**cpu, "total": round(sum(cpu.values()), 3)},
        "wall_seconds": {**wall, "total": round(sum(wall.values()), 3)},
        "scores": [it["score"] for it in result.iterations],
        "best_cv": result.best_cv,
        "test_score": graded.score,
        "medal": graded.medal,
        "fold_cache": result.extra.get("fold_cache"),
    }


def run_cpu_bench(
    slugs: list[str],
    *,
    iterations: int | None = None,
    seed: int = 0,
    defs_dir: Path | None = None,
    url: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per competition: the attempt with the fold cache off (``before``) and on (``after``)."""
    server = url or db.database_url()
    name = f"haste_cpu_{uuid.uuid4().hex[:10]}"
    bench_url = db.create_database(server, name)
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    try:
        with db.connection(bench_url) as conn:
            for slug in slugs:
                competition = load_competition(slug, defs_dir)
                before = measure_competition(
                    conn, competition, iterations=iterations, seed=seed, cache_mb="0"
                )
                after = measure_competition(
                    conn, competition, iterations=iterations, seed=seed, cache_mb=None
                )
                row = {
                    "competition": slug,
                    "before": before,
                    "after": after,
                    "same_scores": before["scores"] == after["scores"],
                    "same_test_score": before["test_score"] == after["test_score"],
                }
                rows.append(row)
                if log is not None:
                    log(
                        f"{slug}: cpu {before['cpu_seconds']['total']} s -> "
                        f"{after['cpu_seconds']['total']} s, same scores {row['same_scores']}"
                    )
    finally:
        db.drop_database(server, name)
    totals = {
        side: round(sum(r[side]["cpu_seconds"]["total"] for r in rows), 3)
        for side in ("before", "after")
    }
    return {
        "iterations": iterations,
        "seed": seed,
        "competitions": rows,
        "cpu_seconds_total": totals,
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        },
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The per-competition CPU table (seconds, before -> after the fold cache)."""
    head = "| competition | " + " | ".join(STAGES) + " | total | fold cache hits | same scores |"
    lines = [head, "|" + " --- |" * (len(STAGES) + 4)]
    for r in report["competitions"]:
        b, a = r["before"]["cpu_seconds"], r["after"]["cpu_seconds"]
        cache = r["after"]["fold_cache"] or {}
        hits = f"{cache.get('hits', 0)}/{cache.get('hits', 0) + cache.get('misses', 0)}"
        cells = [f"{b[s]:.1f} → {a[s]:.1f}" for s in (*STAGES, "total")]
        lines.append(
            f"| {r['competition']} | " + " | ".join(cells) + f" | {hits} | {r['same_scores']} |"
        )
    t = report["cpu_seconds_total"]
    lines.append(f"| **all** | | | | **{t['before']:.1f} → {t['after']:.1f}** | | |")
    return "\n".join(lines)

"""`haste bench pipeline`: the straight line against the specialist's staged pipeline.

For every competition × seed, two attempts with the same policy, seed, folds and iteration
budget (so the same number of evaluations, `agents.pipeline.split_budget`) and no skills
(``loading="none"``, so only the pipeline differs):

* ``straight``: the domain default refined in one line (baseline + N iterations);
* ``staged``: prototype screen → winner and runner-up branches → ensemble (N + 1 rows).

Each is graded on the hidden test split by the product's own `make_submission` (the kept
ensemble when there is one). Reported per competition: mean hidden-test score, leaderboard
percentile and medals per arm, CPU seconds (search + final fit), how often the runner-up
branch won and the ensemble was kept, and whether staged is better or equal within one
bootstrap standard error of the hidden-test score. The issue's target: better-or-equal on
at least 12 of 16 competitions and a strictly better mean percentile.

Runs in one throwaway database on the server of the given URL (never in the user's store).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haste_dagster import db
from haste_dagster.bench.measure import Stopwatch, Usage, cpu_seconds

if TYPE_CHECKING:
    import psycopg

    from haste_dagster.competitions.registry import Competition

ARMS = ("straight", "staged")
TARGET_SHARE = 12 / 16  # better-or-equal on at least 12 of 16 competitions


@dataclass
class PipelineOptions:
    competitions: list[str] = field(default_factory=list)  # empty: every bundled one
    seeds: int = 3
    iterations: int | None = None  # None: each competition's budget
    policy: str = "heuristic"
    defs_dir: Path | None = None
    keep_database: bool = False
    log: Callable[[str], None] | None = None
    # written after every competition (``complete`` false until the end), so a run that is
    # stopped early still leaves what it measured
    json_path: Path | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "competitions": list(self.competitions),
            "seeds": self.seeds,
            "iterations": self.iterations,
            "policy": self.policy,
            "defs_dir": str(self.defs_dir) if self.defs_dir else None,
        }


@dataclass
class ArmRun:
    arm: str
    slug: str
    seed: int
    attempt_id: int
    evaluations: int  # recorded rows (each an evaluation)
    best_cv: float | None
    test_score: float
    medal: str
    rank: int | None
    n_teams: int
    percentile: float | None
    bootstrap_se: float
    usage: Usage
    runner_up_won: bool | None = None
    ensemble_kept: bool | None = None
    screen_spread: float | None = None
    screen: list[dict[str, Any]] | None = None  # staged: prototype, family, fold score
    screen_winner: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = self.usage.as_json()
        return data


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _run_arm(
    conn: psycopg.Connection,
    competition: Competition,
    arm: str,
    seed: int,
    options: PipelineOptions,
) -> ArmRun:
    from haste_dagster.agents.attempts import AttemptConfig
    from haste_dagster.agents.competition_agent import run_attempt
    from haste_dagster.agents.submission import make_submission

    config = AttemptConfig(
        policy=options.policy, loading="none", iterations=options.iterations, seed=seed,
        label=f"bench:pipeline:{arm}", pipeline=arm,  # type: ignore[arg-type]
    )
    with Stopwatch() as watch:
        result = run_attempt(conn, competition, config)
        grade = make_submission(conn, competition, result.attempt_id)
    extra = result.extra
    ensemble = extra.get("ensemble")
    percentile = None
    if grade.rank is not None and grade.n_teams:
        percentile = 1.0 - (grade.rank - 1) / grade.n_teams
    return ArmRun(
        arm=arm, slug=competition.slug, seed=seed, attempt_id=result.attempt_id,
        evaluations=len(result.iterations), best_cv=result.best_cv,
        test_score=float(grade.score), medal=str(grade.medal), rank=grade.rank,
        n_teams=int(grade.n_teams), percentile=percentile,
        bootstrap_se=float(grade.bootstrap_se), usage=watch.usage,
        runner_up_won=extra.get("runner_up_won") if arm == "staged" else None,
        ensemble_kept=(bool(ensemble and ensemble.get("kept")) if arm == "staged" else None),
        screen_spread=(extra.get("prototypes") or {}).get("spread") if arm == "staged" else None,
        screen=[
            {k: p.get(k) for k in ("name", "family", "fold_score")}
            for p in (extra.get("prototypes") or {}).get("screened", [])
        ] or None,
        screen_winner=(extra.get("prototypes") or {}).get("winner"),
    )


def compare(runs: list[ArmRun], higher_is_better: bool) -> dict[str, Any]:
    """One competition's comparison: per-arm means and the better-or-equal verdict (staged's
    mean hidden-test score no worse than straight's by more than one bootstrap SE)."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in runs if r.arm == arm]
        out[arm] = {
            "test_score": _mean([r.test_score for r in mine]),
            "percentile": _mean([r.percentile for r in mine]),
            "medals": [r.medal for r in mine],
            "cpu_seconds": _mean([r.usage.cpu_seconds for r in mine]),
            "evaluations": _mean([float(r.evaluations) for r in mine]),
        }
    staged = [r for r in runs if r.arm == "staged"]
    out["staged"]["runner_up_won"] = sum(bool(r.runner_up_won) for r in staged)
    out["staged"]["ensemble_kept"] = sum(bool(r.ensemble_kept) for r in staged)
    out["staged"]["screen_spread"] = _mean([r.screen_spread for r in staged])
    se = _mean([r.bootstrap_se for r in runs]) or 0.0
    a, b = out["staged"]["test_score"], out["straight"]["test_score"]
    gain = None if a is None or b is None else (a - b if higher_is_better else b - a)
    out["bootstrap_se"] = se
    out["staged_gain"] = gain  # positive: staged better on the hidden test
    out["better_or_equal"] = gain is not None and gain >= -se
    out["strictly_better"] = gain is not None and gain > 0
    return out


def verdict(per_competition: dict[str, dict[str, Any]]) -> dict[str, Any]:
    n = len(per_competition)
    ok = sum(1 for c in per_competition.values() if c["better_or_equal"])
    straight = _mean([c["straight"]["percentile"] for c in per_competition.values()])
    staged = _mean([c["staged"]["percentile"] for c in per_competition.values()])
    needed = math.ceil(TARGET_SHARE * n)
    return {
        "competitions": n,
        "better_or_equal": ok,
        "needed": needed,  # 12 of 16; the same share of a reduced set
        "mean_percentile": {"straight": straight, "staged": staged},
        "percentile_strictly_better": (
            staged is not None and straight is not None and staged > straight
        ),
        "met": ok >= needed and staged is not None and straight is not None and staged > straight,
        "runner_up_won": sum(c["staged"]["runner_up_won"] for c in per_competition.values()),
        "ensemble_kept": sum(c["staged"]["ensemble_kept"] for c in per_competition.values()),
        "reduced": n < 16,
    }


def run_pipeline_benchmark(url: str, options: PipelineOptions) -> dict[str, Any]:
    from haste_dagster.competitions.registry import load_competition, load_definitions
    from haste_dagster.config import competition_defs_dir

    say = options.log or (lambda message: None)
    slugs = list(options.competitions)
    if not slugs:
        definitions, _errors = load_definitions(options.defs_dir or competition_defs_dir())
        slugs = [d.slug for d in definitions]
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    base = db.server_conninfo(url)
    name = f"haste_bench_pipeline_{time.strftime('%Y%m%d%H%M%S')}_{uuid.uuid4().hex[:6]}"
    runs: list[ArmRun] = []
    per_competition: dict[str, dict[str, Any]] = {}

    def report(complete: bool) -> dict[str, Any]:
        return {
            "complete": complete,
            "options": options.as_json(),
            "database": name if options.keep_database else None,
            "per_competition": per_competition,
            "verdict": verdict(per_competition),
            "runs": [r.as_json() for r in runs],
            "usage": Usage(time.perf_counter() - wall0, cpu_seconds() - cpu0).as_json(),
        }
    with db.scratch_database(base, name, keep=options.keep_database) as conninfo:
        conn = db.connect(conninfo)
        try:
            for slug in slugs:
                competition = load_competition(slug, options.defs_dir)
                mine: list[ArmRun] = []
                for seed in range(options.seeds):
                    for arm in ARMS:
                        run = _run_arm(conn, competition, arm, seed, options)
                        say(
                            f"{slug} seed {seed} {arm}: test {run.test_score:.5g} {run.medal} "
                            f"(percentile {run.percentile}), {run.evaluations} evaluations, "
                            f"cpu {run.usage.cpu_seconds:.1f}s"
                            + (f", screen winner {run.screen_winner}, runner-up won "
                               f"{run.runner_up_won}, ensemble kept {run.ensemble_kept}"
                               if arm == "staged" else "")
                        )
                        mine.append(run)
                runs += mine
                per_competition[slug] = compare(mine, competition.metric.higher_is_better)
                if options.json_path is not None:
                    write_json(report(complete=False), options.json_path)
        finally:
            conn.close()
    return report(complete=True)


def merge_reports(reports: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    """One report from runs on disjoint competitions (say, one per core or machine), with
    the verdict recomputed over all of them. A stopped run contributes the competitions it
    finished (its report is rewritten after each), so a long benchmark resumes by running
    the rest and merging. Runs of different seeds, iterations or policy are not comparable
    and are refused, as is a competition measured twice."""
    from haste_dagster.errors import ConfigError

    if not reports:
        raise ConfigError("--merge: no reports given")
    comparable = ("seeds", "iterations", "policy")
    first_path, first = next(iter(reports.items()))
    per_competition: dict[str, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []
    for path, report in reports.items():
        for key in comparable:
            if report["options"][key] != first["options"][key]:
                raise ConfigError(
                    f"{path}: {key} is {report['options'][key]!r}, but {first_path} has "
                    f"{first['options'][key]!r}"
                )
        for slug, comparison in report["per_competition"].items():
            if slug in per_competition:
                raise ConfigError(f"{path}: {slug} is measured in another report too")
            per_competition[slug] = comparison
        runs += report["runs"]
    usages = [r["usage"] for r in reports.values()]
    return {
        "complete": all(r["complete"] for r in reports.values()),
        "options": {
            **{key: first["options"][key] for key in comparable},
            "competitions": list(per_competition),
            "defs_dir": first["options"]["defs_dir"],
            "merged_from": [str(p) for p in reports],
        },
        "database": None,
        "per_competition": per_competition,
        "verdict": verdict(per_competition),
        "runs": runs,
        # the shards ran side by side: wall is the longest one's, CPU their sum
        "usage": Usage(
            max(u["wall_seconds"] for u in usages), sum(u["cpu_seconds"] for u in usages)
        ).as_json(),
    }


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    return path

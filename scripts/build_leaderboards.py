"""Build `competition_defs/<slug>.leaderboard.csv` from a population of real entrants.

Entrants (every one a real pipeline, fitted on the training split and scored on the hidden
test split):
- `random`: specs sampled from the solution space (untuned pipelines of varying quality);
- `default`: the domain default spec, and a constant baseline (majority class / mean);
- `search@k`: a tuned random search with budget k — the spec with the best holdout score
  among k random specs (k in 5, 10, 20; several independent orderings each), i.e.
  teams that tuned with a small or large budget;
- `tuned@k`: a team that starts from the default and tunes it with k iterations of the
  heuristic policy (no skills), in a throwaway database (k in 10 and 20).

Random specs are capped at MAX_ROUNDS trees / boosting rounds: the space allows up to
thousands (fine for an agent that pays for them), but a leaderboard of 16 competitions
must build in well under an hour on 2 cores. For the same reason an entrant whose two fits
take longer than ENTRANT_SECONDS does not enter (a team that ran out of time).

Resumable: each evaluated spec is appended to `<out>/<slug>.entrants.jsonl`; a rerun skips
specs already there, and competitions whose CSV exists unless `--force`.

    python scripts/build_leaderboards.py [--only SLUG ...] [--random 40] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Empty

import numpy as np
import pandas as pd

from haste_dagster.competitions.grading import score_hidden
from haste_dagster.competitions.leaderboard import write_leaderboard
from haste_dagster.competitions.registry import load_competition, load_definitions
from haste_dagster.config import competition_defs_dir
from haste_dagster.solution.evaluate import fit_predict
from haste_dagster.solution.space import default_spec, random_spec
from haste_dagster.solution.spec import SolutionSpec, apply_patch, parse_patch

SEARCH_BUDGETS = (5, 10, 20)
ORDERINGS = 8
TUNED = ((10, 101), (20, 103))  # (iterations, seed)
MAX_ROUNDS = 400
ENTRANT_SECONDS = 120


def affordable(spec: SolutionSpec) -> SolutionSpec:
    """``spec`` with its tree / boosting-round count capped at MAX_ROUNDS."""
    params = spec.model.params
    capped = {k: MAX_ROUNDS for k in ("n_estimators", "max_iter") if params.get(k, 0) > MAX_ROUNDS}
    if not capped or spec.model.family in ("logistic_regression", "linear_svm"):
        return spec
    return apply_patch(
        spec,
        parse_patch(
            {"op": "set_model", "family": spec.model.family, "params": {**params, **capped}}
        ),
    )


def holdout_split(competition, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inner train/validation split of the training data (time-ordered for forecasts)."""
    train = competition.train
    problem = competition.problem
    if problem.task == "forecast":
        order = train.sort_values(problem.time_column)
        times = order[problem.time_column].drop_duplicates()
        cut = times.iloc[-max(1, problem.horizon or 1)]
        return order[order[problem.time_column] < cut], order[order[problem.time_column] >= cut]
    rng = np.random.default_rng(seed)
    mask = rng.random(len(train)) < 0.8
    return train[mask], train[~mask]


def evaluate_spec(competition, spec: SolutionSpec, seed: int) -> dict:
    """Holdout score (what a team sees while tuning) and hidden-test score of one spec."""
    problem = competition.problem
    t0 = time.monotonic()
    inner, valid = holdout_split(competition, seed)
    try:
        valid_pred = fit_predict(spec, problem, inner, valid.drop(columns=[problem.target]), seed)
        valid_score = competition.metric(
            valid[problem.target].to_numpy(), valid_pred, problem.classes
        )
        test_pred = fit_predict(spec, problem, competition.train, competition.test_features, seed)
        test_score = score_hidden(competition, test_pred)
    except Exception as exc:  # an entrant that crashes simply does not enter
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - t0}
    return {"valid": valid_score, "test": test_score, "seconds": time.monotonic() - t0}


def _evaluate_into(queue: mp.Queue, competition, spec: SolutionSpec) -> None:
    queue.put(evaluate_spec(competition, spec, 0))


def evaluate_in_time(competition, spec: SolutionSpec) -> dict:
    """evaluate_spec in a child process; an entrant not done in ENTRANT_SECONDS does not
    enter (a team that ran out of time), so one pathological pipeline cannot stall a build."""
    t0 = time.monotonic()
    queue: mp.Queue = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=_evaluate_into, args=(queue, competition, spec))
    child.start()
    try:
        return queue.get(timeout=ENTRANT_SECONDS)
    except Empty:
        return {"error": f"timed out after {ENTRANT_SECONDS}s", "seconds": time.monotonic() - t0}
    finally:
        child.kill()
        child.join()


def tuned_entrant(competition, iterations: int, seed: int, db_url: str) -> dict:
    """Tune the default spec with the heuristic policy, then score it on the hidden test."""
    from haste_dagster import db
    from haste_dagster.agents.attempts import AttemptConfig
    from haste_dagster.agents.competition_agent import run_attempt

    t0 = time.monotonic()
    with db.connection(db_url) as conn:
        result = run_attempt(
            conn,
            competition,
            AttemptConfig(loading="none", iterations=iterations, seed=seed, label="leaderboard"),
        )
    spec = SolutionSpec.model_validate(result.best_spec)
    test_pred = fit_predict(
        spec, competition.problem, competition.train, competition.test_features, seed
    )
    return {
        "test": score_hidden(competition, test_pred),
        "seconds": time.monotonic() - t0,
        "spec": result.best_spec,
    }


def leaderboard_database() -> str:
    """A fresh database on the HASTE server for the tuned entrants' attempts."""
    from haste_dagster import db

    # One per process, so several builders (e.g. on disjoint --only lists) can run at once.
    name = f"haste_leaderboard_build_{os.getpid()}"
    return db.create_database(db.database_url(), name, replace=True)


def constant_entrant(competition) -> float:
    problem, train = competition.problem, competition.train
    n = len(competition.test_features)
    kind = competition.metric.prediction
    y = train[problem.target]
    if kind == "label":
        pred = np.full(n, y.mode().iloc[0], dtype=object)
    elif kind == "proba":
        share = y.value_counts(normalize=True).reindex(problem.classes).fillna(0).to_numpy()
        pred = np.full(n, share[1]) if len(problem.classes) == 2 else np.tile(share, (n, 1))
    else:
        pred = np.full(n, float(y.mean()))
    return score_hidden(competition, pred)


def build(
    slug: str,
    out_dir: Path,
    n_random: int,
    jobs: int,
    force: bool,
    db_url: str,
    reuse_cached: bool = False,
) -> Path | None:
    csv_path = out_dir / f"{slug}.leaderboard.csv"
    if csv_path.exists() and not force:
        print(f"{slug}: {csv_path.name} exists (use --force to rebuild)")
        return None
    competition = load_competition(slug, out_dir)  # the --defs folder, not the default
    higher = competition.metric.higher_is_better
    cache_path = out_dir / f"{slug}.entrants.jsonl"
    done: dict[str, dict] = {}
    if cache_path.exists() and not force:
        for line in cache_path.read_text().splitlines():
            row = json.loads(line)
            done[row["name"]] = row
    rng = np.random.default_rng(20261124)
    specs = {
        f"random-{i:03d}": affordable(random_spec(competition.problem, rng))
        for i in range(n_random)
    }
    specs["default"] = default_spec(competition.problem)
    # A cached entrant counts only if it was evaluated with exactly this spec (unless
    # reuse_cached: then every cached entrant stands as evaluated, its spec in the cache).
    todo = [
        (name, spec)
        for name, spec in specs.items()
        if not (reuse_cached and name in done)
        and done.get(name, {}).get("spec") != spec.model_dump(mode="json")
    ]
    print(f"{slug}: {len(todo)} entrants to evaluate ({len(done)} cached)", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = pool.map(lambda item: evaluate_in_time(competition, item[1]), todo)
        with cache_path.open("a") as cache:
            for (name, spec), result in zip(todo, results, strict=True):
                row = {"name": name, "spec": spec.model_dump(mode="json"), **result}
                done[name] = row
                cache.write(json.dumps(row) + "\n")
                cache.flush()
                status = result.get("error") or f"test {result['test']:.5g}"
                print(f"  {name}: {status} ({result['seconds']:.1f}s)", flush=True)

    tuned_names = {f"tuned@{iterations}-{seed}" for iterations, seed in TUNED}
    for iterations, seed in TUNED:
        name = f"tuned@{iterations}-{seed}"
        if name in done:
            continue
        result = tuned_entrant(competition, iterations, seed, db_url)
        done[name] = {"name": name, **result}
        with cache_path.open("a") as cache:
            cache.write(json.dumps(done[name]) + "\n")
        print(f"  {name}: test {result['test']:.5g} ({result['seconds']:.1f}s)", flush=True)

    entrants = [
        {"entrant": name, "kind": name.split("-")[0], "score": row["test"]}
        for name, row in done.items()
        if "test" in row and (name in specs or name in tuned_names)
    ]
    entrants.append(
        {"entrant": "constant", "kind": "default", "score": constant_entrant(competition)}
    )
    randoms = [
        row for name, row in sorted(done.items()) if name.startswith("random") and "test" in row
    ]
    for budget in SEARCH_BUDGETS:
        chosen: set[str] = set()
        for ordering in range(ORDERINGS if budget < len(randoms) else 1):
            order = np.random.default_rng(ordering).permutation(len(randoms))[:budget]
            pool = [randoms[i] for i in order]
            best = (max if higher else min)(pool, key=lambda r: r["valid"])
            if best["name"] in chosen:
                continue  # the same tuned pipeline twice is one team
            chosen.add(best["name"])
            entrants.append(
                {
                    "entrant": f"search@{budget}-{ordering}",
                    "kind": f"search@{budget}",
                    "score": best["test"],
                }
            )
    write_leaderboard(csv_path, entrants, higher)
    print(f"{slug}: wrote {csv_path.name} with {len(entrants)} entrants")
    return csv_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=None, help="slugs to build (default: all)")
    parser.add_argument("--random", type=int, default=24, help="random entrants per competition")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--defs", type=Path, default=None)
    parser.add_argument(
        "--reuse-cached",
        action="store_true",
        help="keep every cached entrant as evaluated even if the generator now draws another "
        "spec under its name (before 2026-11-30 random_spec depended on PYTHONHASHSEED)",
    )
    args = parser.parse_args(argv)
    defs_dir = args.defs or competition_defs_dir()
    definitions, errors = load_definitions(defs_dir)
    for error in errors:
        print(f"skipping broken definition: {error}", file=sys.stderr)
    db_url = leaderboard_database()
    for definition in definitions:
        if args.only and definition.slug not in args.only:
            continue
        build(
            definition.slug,
            defs_dir,
            args.random,
            args.jobs,
            args.force,
            db_url,
            reuse_cached=args.reuse_cached,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

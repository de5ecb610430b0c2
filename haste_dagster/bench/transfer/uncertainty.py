"""How sure the transfer figures are: intervals over (competition, seed) pairs, and the
figures pooled over independent replicates of the whole benchmark (``--campaign-seed``).

One pair is a cold and a warm attempt with the same competition, seed, budget and folds.
The intervals resample pairs (a percentile bootstrap) or count them (Wilson's interval,
the exact sign test). The pairs of one benchmark share its campaign, so they are not
independent draws of it: the intervals describe the evaluation's noise, not the campaign's.
Replicates run with other campaign seeds show that variation directly, which is why
:func:`pooled_figures` reports each replicate beside the pool.

What the figures would be without any transfer is measured too (:func:`retry_outcomes`):
cold attempts of the same competition with other seeds, paired with each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import permutations
from typing import Any

import numpy as np
from scipy.stats import binomtest

from haste_dagster.bench.transfer.measures import as_good_as, evaluations_to_reach
from haste_dagster.errors import ConfigError

RESAMPLES = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class PairOutcome:
    """What the targets read from one (competition, seed) pair."""

    slug: str
    seed: int
    cold_evaluations: int
    warm_evaluations: int  # budget + 1 (and control evaluations) when never reached
    reached: bool
    higher_is_better: bool
    cold_test: float | None
    warm_test: float | None
    cold_kept_rate: float | None  # None: no scored refinement iteration
    warm_kept_rate: float | None


# What replicates must share (a report from before the option existed ran the default).
SHARED_OPTIONS = {"policy": "heuristic", "pipeline": "straight", "iterations": None,
                  "competitions": [], "evaluation": [], "defs_dirs": [], "quick": False}


def check_replicates(reports: Mapping[str, Mapping[str, Any]]) -> None:
    """A ConfigError naming the reports and the option when ``reports`` are not replicates
    of one benchmark: the same options but the campaign seed, and no evaluation seed in
    common (cold is deterministic per competition and seed: a shared seed would count the
    same cold attempt twice)."""
    def option(name: str, key: str) -> Any:
        value = reports[name].get("options", {}).get(key)
        return SHARED_OPTIONS[key] if value is None else value

    first, *others = list(reports)
    for name in others:
        for key in SHARED_OPTIONS:
            if option(name, key) != option(first, key):
                raise ConfigError(f"{name} and {first} are not replicates: {key} "
                                  f"{option(name, key)!r} vs {option(first, key)!r}")
    seen: dict[int, str] = {}
    for name, report in reports.items():
        for seed in report.get("seeds", []):
            if seed in seen:
                raise ConfigError(f"{name} and {seen[seed]} share evaluation seed {seed}: run "
                                  "replicates with other --campaign-seed values")
            seen[seed] = name


def outcomes_from_json(payload: Mapping[str, Any], source: str) -> list[PairOutcome]:
    """The pairs of a transfer report's JSON (``haste bench transfer --json``); a
    ConfigError naming ``source`` when it is not one."""
    try:
        per_competition = payload["warm_vs_cold"]["per_competition"]
        attempts = {(a["arm"], a["slug"], a["seed"]): a for a in payload["attempts"]}
        out = []
        for slug, summary in per_competition.items():
            for pair in summary["pairs"]:
                out.append(pair_outcome(
                    attempts[("cold", slug, pair["seed"])],
                    attempts[("warm", slug, pair["seed"])],
                    int(pair["cold_evaluations"]), int(pair["warm_evaluations"]),
                    bool(pair["reached"]),
                ))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{source}: not a transfer report (haste bench transfer --json): missing or "
            f"malformed {exc}"
        ) from exc
    return out


def retry_outcomes(cold: Sequence[Mapping[str, Any]]) -> list[PairOutcome]:
    """The no-transfer reference: pairs of *cold* attempts (report JSON rows) of one
    competition with different seeds, the second standing where warm would. It is what
    retrying with a new seed and no skills gives; a warm figure that is no better than this
    one's shows no transfer. Unlike warm and cold, the two attempts of a pair were validated
    on different folds, so this reference is, if anything, noisier than a real pair."""
    by_slug: dict[str, list[Mapping[str, Any]]] = {}
    for attempt in cold:
        if attempt["best_cv"] is not None:
            by_slug.setdefault(attempt["slug"], []).append(attempt)
    out = []
    for attempts in by_slug.values():
        for first, retry in permutations(sorted(attempts, key=lambda a: a["seed"]), 2):
            higher = bool(first["higher_is_better"])
            target = float(first["best_cv"])
            first_n = evaluations_to_reach(first["iterations"], target, higher)
            retry_n = evaluations_to_reach(retry["iterations"], target, higher)
            assert first_n is not None  # its own best is always reached
            out.append(pair_outcome(
                first, retry, first_n,
                retry_n if retry_n is not None else int(retry["budget"]) + 1,
                retry_n is not None,
            ))
    return out


def pair_outcome(
    cold: Mapping[str, Any], warm: Mapping[str, Any], cold_n: int, warm_n: int, reached: bool
) -> PairOutcome:
    """A pair from two attempts' JSON rows (``AttemptRecord.as_json``) and its counts: the
    one way a pair is made, from a report in memory or read back from its file."""
    return PairOutcome(
        str(cold["slug"]), int(cold["seed"]), cold_n, warm_n, reached,
        bool(cold["higher_is_better"]), cold["test_score"], warm["test_score"],
        cold["kept_rate"] if cold["scored_iterations"] else None,
        warm["kept_rate"] if warm["scored_iterations"] else None,
    )


def figures(
    outcomes: Sequence[PairOutcome], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """The three pair-based targets with their intervals (reproducible: ``seed``)."""
    n = len(outcomes)
    out: dict[str, Any] = {"pairs": n, "level": LEVEL, "resamples": resamples}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    tail = (1 - LEVEL) / 2 * 100

    warm = np.array([o.warm_evaluations for o in outcomes], dtype=float)
    cold = np.array([o.cold_evaluations for o in outcomes], dtype=float)
    ratios = warm[draws].sum(axis=1) / cold[draws].sum(axis=1)
    out["warm_cold_iteration_ratio"] = {
        "measured": float(warm.sum() / cold.sum()),
        "ci": [float(v) for v in np.percentile(ratios, [tail, 100 - tail])],
        "never_reached": sum(1 for o in outcomes if not o.reached),
    }

    tested = [o for o in outcomes if o.cold_test is not None and o.warm_test is not None]
    if tested:
        better = sum(1 for o in tested if o.warm_test != o.cold_test
                     and as_good_as(o.warm_test, o.cold_test, o.higher_is_better))  # type: ignore[arg-type]
        tied = sum(1 for o in tested if o.warm_test == o.cold_test)
        worse = len(tested) - better - tied
        at_least = better + tied
        interval = binomtest(at_least, len(tested)).proportion_ci(LEVEL, method="wilson")
        out["warm_test_at_least_cold_share"] = {
            "measured": at_least / len(tested),
            "ci": [float(interval.low), float(interval.high)],
            "better": better, "tied": tied, "worse": worse,
            # two-sided exact sign test of better vs worse, ties left out
            "sign_test_p": (
                float(binomtest(better, better + worse).pvalue) if better + worse else None
            ),
        }

    kept = [o for o in outcomes if o.cold_kept_rate is not None and o.warm_kept_rate is not None]
    if kept:
        w = np.array([o.warm_kept_rate for o in kept], dtype=float)
        c = np.array([o.cold_kept_rate for o in kept], dtype=float)
        measured = float(w.mean() / c.mean()) if c.mean() > 0 else None
        picks = rng.integers(0, len(kept), size=(resamples, len(kept)))
        cold_means = c[picks].mean(axis=1)
        ok = cold_means > 0
        boot = w[picks].mean(axis=1)[ok] / cold_means[ok]
        out["warm_cold_kept_rate_ratio"] = {
            "measured": measured,
            "ci": [float(v) for v in np.percentile(boot, [tail, 100 - tail])] if ok.any() else None,
        }
    return out


def pooled_figures(
    replicates: Mapping[str, Sequence[PairOutcome]], cold: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """Each replicate's figures, those of all their pairs together and, given the
    replicates' ``cold`` attempts, the no-transfer reference over all of them."""
    pooled = [o for outcomes in replicates.values() for o in outcomes]
    return {
        "replicates": {name: figures(outcomes) for name, outcomes in replicates.items()},
        "pooled": figures(pooled),
        "retry_reference": figures(retry_outcomes(cold)),
    }

"""The benchmark's measures: pure functions of attempt records (see the package doc)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from haste_dagster.bench.transfer.report import AttemptRecord

INVENTORY_BINS = ((0, 0), (1, 9), (10, 24), (25, 49), (50, None))


def as_good_as(score: float, target: float, higher_is_better: bool) -> bool:
    return score >= target if higher_is_better else score <= target


def _counts(row: dict[str, Any]) -> bool:
    """Whether a row's score is a cross-validated incumbent: kept, scored, and not a staged
    attempt's screen row (one validation fold: it spends an evaluation, but its score is not
    comparable with a full cross-validation)."""
    return bool(row["kept"]) and row["score"] is not None and row.get("branch") != "screen"


def incumbent_curve(
    iterations: Sequence[dict[str, Any]], higher_is_better: bool
) -> list[float | None]:
    """The incumbent (best kept) CV score after each iteration, in idx order (a staged
    attempt's branches each keep their own incumbent: the curve is the best of them)."""
    curve: list[float | None] = []
    best: float | None = None
    for row in sorted(iterations, key=lambda r: r["idx"]):
        if _counts(row) and (best is None or as_good_as(row["score"], best, higher_is_better)):
            best = float(row["score"])
        curve.append(best)
    return curve


def evaluations_to_reach(
    iterations: Sequence[dict[str, Any]], target: float, higher_is_better: bool
) -> int | None:
    """``idx + 1`` of the first kept iteration scoring at least ``target``; None if none does
    (every row spends an evaluation, screen rows included)."""
    for row in sorted(iterations, key=lambda r: r["idx"]):
        if _counts(row) and as_good_as(float(row["score"]), target, higher_is_better):
            return int(row["idx"]) + 1
    return None


@dataclass
class PairRatio:
    slug: str
    seed: int
    target: float  # the cold attempt's final CV score
    cold_evaluations: int
    warm_evaluations: int  # budget + 1 when never reached (censored)
    reached: bool
    ratio: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def pair_ratio(cold: AttemptRecord, warm: AttemptRecord) -> PairRatio:
    """Evaluations warm needs to reach cold's final CV score, over cold's own (see module doc)."""
    if cold.best_cv is None:
        raise ValueError(f"cold attempt {cold.attempt_id} has no CV score")
    higher = cold.higher_is_better
    cold_n = evaluations_to_reach(cold.iterations, cold.best_cv, higher)
    assert cold_n is not None  # its own best is always reached
    warm_n = evaluations_to_reach(warm.iterations, cold.best_cv, higher)
    reached = warm_n is not None
    warm_count = (warm_n if warm_n is not None else warm.budget + 1) + warm.control_evaluations
    return PairRatio(
        cold.slug, cold.seed, cold.best_cv, cold_n, warm_count, reached, warm_count / cold_n
    )


def spread(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation, min, max and count of the non-missing values."""
    xs = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if xs.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(xs.mean()),
        "std": float(xs.std(ddof=1)) if xs.size > 1 else 0.0,
        "min": float(xs.min()),
        "max": float(xs.max()),
        "n": int(xs.size),
    }


def medal_rate(records: Sequence[AttemptRecord]) -> tuple[float | None, int, int]:
    graded = [r for r in records if r.medal is not None]
    medals = sum(1 for r in graded if r.medal != "none")
    return (medals / len(graded) if graded else None), medals, len(graded)


def ablation_summary(records: Sequence[AttemptRecord], slugs: Sequence[str]) -> dict[str, Any]:
    rate, medals, graded = medal_rate(records)
    return {
        "attempts": len(records),
        "graded": graded,
        "medals": medals,
        "medal_rate": rate,
        "medal_counts": {
            m: sum(1 for r in records if r.medal == m) for m in ("gold", "silver", "bronze", "none")
        },
        "mean_score": {s: spread([r.test_score for r in records if r.slug == s]) for s in slugs},
        "mean_cv": {s: spread([r.best_cv for r in records if r.slug == s]) for s in slugs},
        "mean_percentile": spread([r.percentile for r in records]),
        "kept_rate": spread([r.kept_rate for r in records]),
        "skills_loaded": spread([float(r.skills_loaded) for r in records]),
        "tokens": {
            "prompt": sum(r.prompt_tokens for r in records),
            "completion": sum(r.completion_tokens for r in records),
            "completion_per_attempt": spread([float(r.completion_tokens) for r in records]),
        },
        "cpu_seconds": spread([r.usage.cpu_seconds for r in records]),
        "control_evaluations": sum(r.control_evaluations for r in records),
        "inert_skipped": sum(r.inert_skipped for r in records),
    }


def kept_rate_bins(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for low, high in INVENTORY_BINS:
        inside = [
            p["kept_rate"]
            for p in points
            if p["inventory_size"] >= low
            and (high is None or p["inventory_size"] <= high)
            and p["scored_iterations"] > 0
        ]
        label = f"{low}+" if high is None else (str(low) if low == high else f"{low}-{high}")
        out.append({"inventory": label, "low": low, "high": high, **spread(inside)})
    return out


# Where a proposal came from, and for the search's own moves what the domain's search prior
# (the counts the evaluation loaded) said of that move: never counted, tried and never kept,
# kept before.
PROPOSAL_SOURCES = ("skill", "search", "screen")
PRIOR_VERDICTS = ("no_count", "never_kept", "kept_before")
KIND_PREFIX = "kind:"


def proposal_counts(
    records: Sequence[AttemptRecord],
    priors: Mapping[str, Mapping[str, Sequence[int]]],
    kinds: Mapping[str, str],
) -> dict[str, Any]:
    """Per arm, the evaluated proposals tried and kept by source (a loaded skill, the
    policy's own search, a staged attempt's screen), the skills' by the kind of the first
    skill named (``kinds``: skill id → recipe, rule, change…; unknown ids left out) and the
    search's moves by the prior's verdict on them (``priors``: domain → move → [tried,
    kept]). Starts (rows that apply no patch) and rows without a ``move`` (reports written
    before it was recorded) are left out."""
    counts: dict[str, dict[str, list[int]]] = {}
    for record in records:
        moves = priors.get(record.domain, {})
        for row in record.iterations:
            if "move" not in row:
                continue
            if row.get("branch") == "screen":
                source = "screen"  # a staged attempt's prototypes, its first rows
            elif row["move"] is None:
                continue  # a start (the baseline, a branch's first row): nothing proposed
            else:
                source = "skill" if row.get("skills") else "search"
            keys = [source]
            if source == "skill" and row["skills"][0] in kinds:
                keys.append(KIND_PREFIX + kinds[row["skills"][0]])
            if source == "search":
                tried, kept = moves.get(row["move"], (0, 0))
                keys.append("no_count" if not tried else "never_kept" if not kept
                            else "kept_before")
            arm = counts.setdefault(record.arm, {})
            for key in keys:
                tally = arm.setdefault(key, [0, 0])
                tally[0] += 1
                tally[1] += int(bool(row["kept"]))
    return {arm: proposal_table(c) for arm, c in counts.items()}


def proposal_table(counts: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """``proposal_counts``' shape for one arm from its ``key → [tried, kept]`` counts."""
    def tally(key: str) -> dict[str, Any]:
        tried, kept = counts.get(key, (0, 0))
        return {"tried": tried, "kept": kept, "rate": kept / tried if tried else None}

    return {
        **{source: tally(source) for source in PROPOSAL_SOURCES},
        "skill_by_kind": {key.removeprefix(KIND_PREFIX): tally(key) for key in sorted(counts)
                          if key.startswith(KIND_PREFIX)},
        "search_by_prior": {verdict: tally(verdict) for verdict in PRIOR_VERDICTS},
    }


def pooled_proposals(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``proposals`` of several reports summed (those without the entry left out)."""
    counts: dict[str, dict[str, list[int]]] = {}
    for proposals in reports:
        for arm, table in proposals.items():
            rows = {**{s: table[s] for s in PROPOSAL_SOURCES}, **table["search_by_prior"],
                    **{KIND_PREFIX + k: v for k, v in table.get("skill_by_kind", {}).items()}}
            have = counts.setdefault(arm, {})
            for key, tally in rows.items():
                pair = have.setdefault(key, [0, 0])
                pair[0] += tally["tried"]
                pair[1] += tally["kept"]
    return {arm: proposal_table(c) for arm, c in counts.items()}

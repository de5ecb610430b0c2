"""The transfer benchmark's verdicts, on reports built by hand: targets(), the ablation's
same_as_cold, and the warm-vs-FLAML win direction for a lower-is-better metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from haste_dagster.bench.measure import Usage
from haste_dagster.bench.transfer import (
    TARGETS,
    AttemptRecord,
    PeerRecord,
    Plan,
    TransferOptions,
    TransferReport,
)

SLUGS = ["eval_a", "eval_b"]


def _record(arm: str, slug: str, seed: int = 0, **kw: Any) -> AttemptRecord:
    loading = {"warm": "tiered", "cold": "tiered", "flat": "flat", "none": "none"}[arm]
    values: dict[str, Any] = {
        "phase": "evaluation", "arm": arm, "slug": slug, "domain": "d", "seed": seed,
        "loading": loading, "attempt_id": 1, "database": "x", "higher_is_better": False,
        "budget": 4, "inventory_size": 0, "skills_loaded": 0, "skills_loaded_by_tier": {},
        "skill_ids_loaded": [], "best_cv": 1.0, "kept_rate": 0.5, "scored_iterations": 4,
        "stopped": "budget", "iterations": [{"idx": 0, "score": 1.0, "kept": True}],
        "prompt_tokens": 0, "completion_tokens": 0, "search": Usage(1.0, 1.0),
        "submission": Usage(0.1, 0.1), "test_score": 1.0, "medal": "none", "rank": None,
        "n_teams": None, "percentile": None, "bootstrap_se": None,
    }  # fmt: skip
    values.update(kw)
    return AttemptRecord(**values)


def _rows(*scores: float) -> list[dict[str, Any]]:
    best = None
    out = []
    for i, s in enumerate(scores):  # lower is better: kept when it improves
        kept = best is None or s < best
        best = s if kept else best
        out.append({"idx": i, "score": s, "kept": kept})
    return out


def _report(evaluation: list[AttemptRecord], peers: list[PeerRecord] | None = None,
            campaign: list[AttemptRecord] | None = None) -> TransferReport:  # fmt: skip
    plan = Plan([], list(SLUGS), {s: Path(".") for s in SLUGS}, {s: "d" for s in SLUGS}, [0])
    return TransferReport(
        options=TransferOptions(modes=("tiered", "flat", "none"), peers=("flaml",)),
        plan=plan,
        databases={},
        started_at="",
        evaluation=evaluation,
        peers=peers or [],
        campaign=campaign or [],
    )


def _peer(slug: str, score: float) -> PeerRecord:
    return PeerRecord("flaml", slug, 0, 1.0, 1.0, Usage(1.0, 1.0), score, "none", None, None, None)


def test_warm_beats_flaml_with_the_lower_score_for_a_lower_is_better_metric() -> None:
    records = [_record("warm", "eval_a", test_score=0.8), _record("warm", "eval_b", test_score=1.2)]
    report = _report(records, [_peer("eval_a", 1.0), _peer("eval_b", 1.0)])
    summary = report.peer_summary()["flaml"]
    assert summary["eval_a"]["warm_at_least_as_good"] is True  # 0.8 < 1.0: warm wins
    assert summary["eval_b"]["warm_at_least_as_good"] is False  # 1.2 > 1.0: FLAML wins
    assert summary["_summary"] == {"compared": 2, "warm_at_least_as_good": 1, "share": 0.5}
    verdict = report.targets()["warm_at_least_flaml_share"]
    assert verdict["measured"] == 0.5 and verdict["met"] is False  # target 0.75


def test_ablation_same_as_cold_compares_each_arm_curve_with_its_cold_pair() -> None:
    cold_a, cold_b = _rows(3.0, 2.0, 2.5), _rows(4.0, 3.0, 3.5)
    evaluation = [
        _record("cold", "eval_a", iterations=cold_a),
        _record("cold", "eval_b", iterations=cold_b),
        _record("none", "eval_a", iterations=cold_a),  # same curve
        _record("none", "eval_b", iterations=cold_b),  # same curve
        _record("warm", "eval_a", iterations=_rows(3.0, 1.5)),  # different
        _record("warm", "eval_b", iterations=cold_b),  # same
        _record("flat", "eval_a", iterations=_rows(2.0)),
        _record("flat", "eval_b", iterations=_rows(5.0)),
        _record("flat", "eval_b", seed=1, iterations=cold_b),  # no cold pair: not counted
    ]
    ablation = _report(evaluation).ablation()
    assert ablation["none"]["same_as_cold"] == 1.0
    assert ablation["tiered"]["same_as_cold"] == 0.5
    assert ablation["tiered"]["arm"] == "warm"  # the tiered mode is the warm arm
    assert ablation["flat"]["same_as_cold"] == 0.0


def test_targets_are_met_or_missed_against_their_thresholds() -> None:
    # Cold reaches its best (2.0) at evaluation 2 of 3; warm reaches 2.0 at evaluation 1.
    evaluation = [
        _record("cold", "eval_a", best_cv=2.0, iterations=_rows(3.0, 2.0, 2.5)),
        _record("warm", "eval_a", best_cv=1.0, iterations=_rows(1.0, 1.5), medal="gold",
                inventory_size=60, kept_rate=0.9),
        _record("flat", "eval_a", medal="none"),
    ]  # fmt: skip
    targets = _report(evaluation).targets()
    ratio = targets["warm_cold_iteration_ratio"]
    assert ratio["measured"] == pytest.approx(1 / 2)
    assert TARGETS["warm_cold_iteration_ratio"] < 0.5 and ratio["met"] is False  # missed
    kept = targets["kept_rate_at_50_skills"]
    assert (kept["attempts"], kept["measured"], kept["met"]) == (1, pytest.approx(0.9), True)
    diff = targets["tiered_minus_flat_medal_rate"]
    assert diff["measured"] == pytest.approx(1.0) and diff["met"] is True
    # FLAML did not run: unmeasured, neither met nor missed, with the reason.
    share = targets["warm_at_least_flaml_share"]
    assert share["measured"] is None and share["met"] is None and "FLAML" in share["note"]


def test_a_ratio_at_the_target_is_met_and_just_above_it_is_not() -> None:
    # 20 cold evaluations vs 7 warm: 0.35, the target exactly (<= is met).
    cold = _record("cold", "eval_a", best_cv=1.0, iterations=_rows(*[2.0] * 19, 1.0))
    warm = _record("warm", "eval_a", best_cv=1.0, iterations=_rows(*[2.0] * 6, 1.0))
    report = _report([cold, warm])
    assert report.targets()["warm_cold_iteration_ratio"]["measured"] == pytest.approx(0.35)
    assert report.targets()["warm_cold_iteration_ratio"]["met"] is True
    warm_late = _record("warm", "eval_a", best_cv=1.0, iterations=_rows(*[2.0] * 7, 1.0))
    later = _report([cold, warm_late]).targets()["warm_cold_iteration_ratio"]
    assert later["measured"] == pytest.approx(0.4) and later["met"] is False

"""The transfer figures' intervals and the pooling of replicates, on hand-made pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from haste_dagster.bench.transfer import (
    PairOutcome,
    check_replicates,
    figures,
    pooled_figures,
    retry_outcomes,
)
from haste_dagster.cli.bench import app as bench_app
from haste_dagster.errors import ConfigError


def _pair(cold_n: int, warm_n: int, cold_test: float, warm_test: float,
          higher: bool = False, kept: tuple[float, float] = (0.2, 0.2)) -> PairOutcome:
    return PairOutcome("c", 0, cold_n, warm_n, warm_n <= 20, higher, cold_test, warm_test,
                       kept[0], kept[1])


def test_intervals_hold_the_measured_figure_and_repeat_exactly() -> None:
    pairs = [_pair(10 + i, 5 + 2 * i, 1.0, 1.0 - 0.01 * (i % 3), kept=(0.1 + 0.02 * i, 0.2))
             for i in range(12)]
    first, again = figures(pairs), figures(pairs)
    assert first == again
    for key in ("warm_cold_iteration_ratio", "warm_test_at_least_cold_share",
                "warm_cold_kept_rate_ratio"):
        low, high = first[key]["ci"]
        assert low <= first[key]["measured"] <= high and low < high


def test_the_share_counts_ties_as_at_least_cold_and_the_sign_test_leaves_them_out() -> None:
    # lower is better here: a warm test score below the cold one is "better"
    pairs = ([_pair(10, 10, 2.0, 1.9)] * 6 + [_pair(10, 10, 2.0, 2.0)] * 2
             + [_pair(10, 10, 2.0, 2.1)] * 4)
    share = figures(pairs)["warm_test_at_least_cold_share"]
    assert share["measured"] == pytest.approx(8 / 12)
    assert (share["better"], share["tied"], share["worse"]) == (6, 2, 4)
    assert share["sign_test_p"] == pytest.approx(0.75390625)  # 2 * P(X >= 6), X ~ B(10, 1/2)
    assert share["ci"] == pytest.approx([0.3906, 0.8619], abs=1e-4)  # Wilson, 8 of 12


def test_pooling_sums_every_replicates_evaluations_rather_than_averaging_ratios() -> None:
    one = [_pair(2, 4, 1.0, 1.0), _pair(2, 4, 1.0, 1.0)]  # ratio 2.0 over 4 cold evaluations
    two = [_pair(20, 10, 1.0, 1.0)]  # ratio 0.5 over 20
    pooled = pooled_figures({"one": one, "two": two})
    assert pooled["replicates"]["one"]["warm_cold_iteration_ratio"]["measured"] == 2.0
    assert pooled["replicates"]["two"]["warm_cold_iteration_ratio"]["measured"] == 0.5
    assert pooled["pooled"]["pairs"] == 3
    assert pooled["pooled"]["warm_cold_iteration_ratio"]["measured"] == pytest.approx(18 / 24)


def test_pool_refuses_a_file_that_is_not_a_transfer_report(tmp_path: Path) -> None:
    other = tmp_path / "pipeline.json"
    other.write_text(json.dumps({"complete": True, "runs": []}))
    result = CliRunner().invoke(bench_app, ["transfer", "--pool", str(other)])
    said = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2
    assert "pipeline.json: not a transfer report" in said
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"options": {}, "attempts": [],
                                  "warm_vs_cold": {"per_competition": {"x": {"pairs": [{}]}}}}))
    result = CliRunner().invoke(bench_app, ["transfer", "--pool", str(broken)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "broken.json: not a transfer report" in said and "malformed 'seed'" in said


def test_pool_refuses_a_report_given_twice(tmp_path: Path) -> None:
    report = tmp_path / "one.json"
    report.write_text("{}")
    result = CliRunner().invoke(bench_app, ["transfer", "--pool", str(report), "--pool",
                                            str(report)])
    assert result.exit_code == 2
    assert "given twice" in " ".join(result.output.split())


def _cold(seed: int, scores: list[float], test: float, budget: int = 5) -> dict:
    """A cold attempt's JSON row (lower is better): every score kept when it improves."""
    rows, best = [], None
    for idx, score in enumerate(scores):
        kept = best is None or score < best
        best = score if kept else best
        rows.append({"idx": idx, "score": score, "kept": kept})
    return {"slug": "c", "seed": seed, "best_cv": best, "iterations": rows, "budget": budget,
            "higher_is_better": False, "test_score": test, "kept_rate": 0.5,
            "scored_iterations": len(scores) - 1}


def test_the_retry_reference_pairs_cold_attempts_of_other_seeds_both_ways() -> None:
    slow = _cold(0, [5.0, 4.0, 3.0, 2.0], test=2.5)  # reaches 2.0 at its 4th evaluation
    fast = _cold(1, [3.0, 2.5, 2.6], test=2.4)  # best 2.5 at its 2nd; never reaches 2.0
    pairs = {(o.seed, o.cold_evaluations, o.warm_evaluations, o.reached)
             for o in retry_outcomes([slow, fast])}
    # slow first: fast never reaches 2.0 (budget + 1); fast first: slow reaches 2.5 at 4
    assert pairs == {(0, 4, 6, False), (1, 2, 4, True)}


def _report(seeds: list[int], **options: object) -> dict:
    return {"seeds": seeds, "options": {"pipeline": "straight", **options}}


def test_replicates_must_share_their_options_and_no_evaluation_seed() -> None:
    check_replicates({"a": _report([0, 1]), "b": _report([10, 11])})
    check_replicates({"old": {"seeds": [0], "options": {"pipeline": None}},  # before the option
                      "new": _report([10])})
    with pytest.raises(ConfigError, match="b and a are not replicates: pipeline 'staged'"):
        check_replicates({"a": _report([0]), "b": _report([10], pipeline="staged")})
    with pytest.raises(ConfigError, match="b and a share evaluation seed 1"):
        check_replicates({"a": _report([0, 1]), "b": _report([1, 2])})

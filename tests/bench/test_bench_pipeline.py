"""`haste bench pipeline`'s comparison and verdict, on hand-made runs."""

from __future__ import annotations

from haste_dagster.bench.measure import Usage
from haste_dagster.bench.pipeline import ArmRun, compare, verdict


def _run(arm: str, score: float, percentile: float, se: float = 0.1, **kw) -> ArmRun:
    return ArmRun(
        arm=arm, slug="c", seed=0, attempt_id=1, evaluations=11, best_cv=score,
        test_score=score, medal="none", rank=1, n_teams=10, percentile=percentile,
        bootstrap_se=se, usage=Usage(1.0, 1.0), **kw,
    )


def test_staged_within_one_standard_error_counts_as_better_or_equal() -> None:
    # lower is better: staged worse by 0.05 < SE 0.1 → better-or-equal, not strictly better
    c = compare([_run("straight", 1.0, 0.5), _run("staged", 1.05, 0.4)], higher_is_better=False)
    assert c["better_or_equal"] and not c["strictly_better"]
    c = compare([_run("straight", 1.0, 0.5), _run("staged", 1.2, 0.4)], higher_is_better=False)
    assert not c["better_or_equal"]
    c = compare(
        [_run("straight", 0.8, 0.5), _run("staged", 0.9, 0.7, runner_up_won=True,
                                          ensemble_kept=True)],
        higher_is_better=True,
    )
    assert c["strictly_better"] and c["staged"]["runner_up_won"] == 1
    assert c["staged"]["ensemble_kept"] == 1


def test_verdict_needs_the_share_of_competitions_and_a_better_mean_percentile() -> None:
    good = compare([_run("straight", 1.0, 0.5), _run("staged", 0.9, 0.6)], False)
    bad = compare([_run("straight", 1.0, 0.5), _run("staged", 2.0, 0.4)], False)
    assert verdict({"a": good, "b": good, "c": good, "d": bad})["met"]  # 3 of 4 = 12 of 16
    v = verdict({"a": good, "b": good, "c": bad, "d": bad})
    assert not v["met"] and v["better_or_equal"] == 2 and v["needed"] == 3
    # enough competitions but a worse mean percentile: missed
    tie = compare([_run("straight", 1.0, 0.9), _run("staged", 1.0, 0.5)], False)
    assert not verdict({"a": tie})["met"]

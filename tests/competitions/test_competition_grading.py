"""Medal thresholds (Kaggle / MLE-bench rule), medal boundaries, and grading a submission."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from haste_dagster.competitions.grading import (
    PredictionError,
    Thresholds,
    grade,
    medal_for,
    medal_thresholds,
    paired_bootstrap,
    score_hidden,
)
from haste_dagster.competitions.registry import load_competition


def _leaderboard(n: int) -> list[float]:
    """Scores 1..n in a scrambled order: the grader must sort them itself."""
    scores = [float(i) for i in range(1, n + 1)]
    random.Random(n).shuffle(scores)
    return scores


# Expected values worked out by hand from the rule. With scores 1..n, the k-th best is
# n - k + 1 when higher is better and k when lower is better.
#   n=50   (1-99):    gold pos int(5)=5,  silver int(10)=10, bronze int(20)=20
#   n=150  (100-249): gold pos 10,        silver int(30)=30, bronze int(60)=60
#   n=300  (250-999): gold pos 10+int(0.6)=10, silver 50, bronze 100
#   n=1000 (1000+):   gold pos 10+int(2)=12, silver int(50)=50, bronze int(100)=100
#   n=2000 (1000+):   gold pos 10+int(4)=14, silver int(100)=100, bronze int(200)=200
HIGHER_IS_BETTER = {
    50: (46.0, 41.0, 31.0),
    150: (141.0, 121.0, 91.0),
    300: (291.0, 251.0, 201.0),
    1000: (989.0, 951.0, 901.0),
    2000: (1987.0, 1901.0, 1801.0),
}
LOWER_IS_BETTER = {
    50: (5.0, 10.0, 20.0),
    150: (10.0, 30.0, 60.0),
    300: (10.0, 50.0, 100.0),
    1000: (12.0, 50.0, 100.0),
    2000: (14.0, 100.0, 200.0),
}
MEDIANS = {50: 25.5, 150: 75.5, 300: 150.5, 1000: 500.5, 2000: 1000.5}


@pytest.mark.parametrize("n", sorted(HIGHER_IS_BETTER))
def test_thresholds_follow_kaggle_rule_when_higher_is_better(n: int) -> None:
    t = medal_thresholds(_leaderboard(n), higher_is_better=True)
    assert (t.gold, t.silver, t.bronze) == HIGHER_IS_BETTER[n]
    assert t.median == MEDIANS[n]
    assert t.n_teams == n


@pytest.mark.parametrize("n", sorted(LOWER_IS_BETTER))
def test_thresholds_follow_kaggle_rule_when_lower_is_better(n: int) -> None:
    t = medal_thresholds(_leaderboard(n), higher_is_better=False)
    assert (t.gold, t.silver, t.bronze) == LOWER_IS_BETTER[n]
    assert t.median == MEDIANS[n]


def test_tiny_leaderboard_uses_first_place_for_every_medal() -> None:
    # n=3: int(0.3)=0 and int(0.6)=0 are lifted to 1 by max(1, ·); int(1.2)=1: all 1st place.
    t = medal_thresholds([0.5, 0.9, 0.7], higher_is_better=True)
    assert (t.gold, t.silver, t.bronze) == (0.9, 0.9, 0.9)


def test_medal_is_awarded_at_exactly_the_threshold_and_not_just_below() -> None:
    up = Thresholds(gold=0.9, silver=0.8, bronze=0.7, median=0.6, n_teams=50)
    assert medal_for(0.9, up, True) == "gold"
    assert medal_for(0.8999, up, True) == "silver"
    assert medal_for(0.8, up, True) == "silver"
    assert medal_for(0.7999, up, True) == "bronze"
    assert medal_for(0.7, up, True) == "bronze"
    assert medal_for(0.6999, up, True) == "none"

    down = Thresholds(gold=1.0, silver=2.0, bronze=3.0, median=4.0, n_teams=50)
    assert medal_for(1.0, down, False) == "gold"
    assert medal_for(1.0001, down, False) == "silver"
    assert medal_for(2.0, down, False) == "silver"
    assert medal_for(3.0, down, False) == "bronze"
    assert medal_for(3.0001, down, False) == "none"


def _oracle(competition) -> np.ndarray:
    """Probability of 'b' that ranks the hidden rows perfectly (x > 100 ⇔ class b)."""
    return (competition.test_features["x"].to_numpy() > 100).astype(float)


def test_perfect_submission_ranks_first_with_gold_from_leaderboard(
    write_def, tmp_path: Path
) -> None:
    write_def("tiny", medals=None)
    scores = [0.99, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55]
    pd.DataFrame(
        {"entrant": [f"e{i}" for i in range(10)], "score": scores, "kind": "random"}
    ).to_csv(tmp_path / "tiny.leaderboard.csv", index=False)
    competition = load_competition("tiny", tmp_path)

    result = grade(competition, _oracle(competition))

    assert result.score == 1.0
    assert (result.rank, result.n_teams, result.medal) == (1, 11, "gold")
    # 10 teams: gold is 1st place, silver 2nd, bronze 4th; median of the 10 scores.
    assert (result.thresholds.gold, result.thresholds.silver, result.thresholds.bronze) == (
        0.99,
        0.95,
        0.85,
    )
    assert result.thresholds.median == pytest.approx(0.775)
    assert result.above_median is True


def test_weak_submission_gets_its_rank_and_no_medal(write_def, tmp_path: Path) -> None:
    write_def("tiny", medals=None)
    pd.DataFrame({"entrant": ["a", "b", "c"], "score": [0.9, 0.8, 0.7], "kind": "random"}).to_csv(
        tmp_path / "tiny.leaderboard.csv", index=False
    )
    competition = load_competition("tiny", tmp_path)
    constant = np.full(len(competition.test_features), 0.5)  # AUC 0.5

    result = grade(competition, constant)

    assert result.score == 0.5
    assert (result.rank, result.n_teams, result.medal, result.above_median) == (4, 4, "none", False)


def test_yaml_medals_grade_without_leaderboard(write_def, tmp_path: Path) -> None:
    write_def("tiny")  # medals gold 0.95 / silver 0.9 / bronze 0.8
    competition = load_competition("tiny", tmp_path)
    result = grade(competition, _oracle(competition))
    assert result.medal == "gold"
    assert result.rank is None and result.above_median is None


def test_competition_without_leaderboard_or_medals_is_scored_with_medal_none(
    write_def, tmp_path
) -> None:
    write_def("tiny", medals=None)
    competition = load_competition("tiny", tmp_path)
    result = grade(competition, _oracle(competition))
    assert result.score == 1.0
    assert (result.medal, result.thresholds, result.rank, result.above_median) == (
        None,
        None,
        None,
        None,
    )


def test_series_predictions_are_matched_by_row_id(write_def, tmp_path: Path) -> None:
    write_def("tiny")
    competition = load_competition("tiny", tmp_path)
    rng = np.random.default_rng(0)
    proba = rng.random(len(competition.test_features))
    aligned = pd.Series(proba, index=competition.test_features["row_id"])
    shuffled = aligned.sample(frac=1.0, random_state=1)
    assert score_hidden(competition, shuffled) == score_hidden(competition, proba)
    # The same values in the wrong order would score differently (proves order matters).
    assert score_hidden(competition, shuffled.to_numpy()) != score_hidden(competition, proba)


def test_bad_predictions_raise_clear_errors(write_def, tmp_path: Path) -> None:
    write_def("tiny")
    competition = load_competition("tiny", tmp_path)
    n = len(competition.test_features)
    with pytest.raises(PredictionError, match=f"expected {n} predictions"):
        score_hidden(competition, np.zeros(n - 1))
    with pytest.raises(PredictionError, match="NaN"):
        score_hidden(competition, np.r_[np.zeros(n - 1), np.nan])
    wrong_ids = pd.Series(np.zeros(n), index=np.arange(n) + 10_000)
    with pytest.raises(PredictionError, match="row_id"):
        score_hidden(competition, wrong_ids)


def test_label_predictions_must_be_known_classes(write_def, tmp_path: Path) -> None:
    write_def("tiny_labels", metric="f1_macro", medals=None)
    competition = load_competition("tiny_labels", tmp_path)
    n = len(competition.test_features)
    truth = np.where(competition.test_features["x"] > 100, "b", "a")
    assert score_hidden(competition, truth) == 1.0
    with pytest.raises(PredictionError, match="not a class"):
        score_hidden(competition, np.array(["a"] * (n - 1) + ["zebra"]))


def test_bootstrap_se_is_reproducible_and_paired_difference_of_equal_is_zero(
    write_def, tmp_path: Path
) -> None:
    write_def("tiny")
    competition = load_competition("tiny", tmp_path)
    noisy = np.random.default_rng(5).random(len(competition.test_features))
    first, second = grade(competition, noisy), grade(competition, noisy)
    assert first.bootstrap_se == second.bootstrap_se
    assert first.bootstrap_se > 0
    mean, se = paired_bootstrap(competition, noisy, noisy)
    assert (mean, se) == (0.0, 0.0)

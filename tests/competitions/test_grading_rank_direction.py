"""Rank, above_median and medals for a lower-is-better metric (rmse), ties, and YAML medals
taking precedence over a leaderboard's thresholds. Each case is built so that the opposite
direction, or counting a tie as better, gives a different answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_competitions import write_tiny_regression

from haste_dagster.competitions.grading import grade, score_hidden
from haste_dagster.competitions.leaderboard import write_leaderboard
from haste_dagster.competitions.registry import clear_cache, load_competition_path


def _competition(tmp_path: Path, board: list[float] | None, medals: dict | None):  # noqa: ANN202
    path = write_tiny_regression(tmp_path, "rank_probe", seed=3, rows=120)
    definition = yaml.safe_load(path.read_text())
    if medals is None:
        definition.pop("medals")
    else:
        definition["medals"] = medals
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    if board is not None:
        entries = [{"entrant": f"e{i}", "score": s, "kind": "model"} for i, s in enumerate(board)]
        write_leaderboard(tmp_path / "rank_probe.leaderboard.csv", entries, False)
    clear_cache()
    return load_competition_path(path)


def _constant_score(tmp_path: Path) -> tuple[np.ndarray, float]:
    """A constant prediction and its rmse on the hidden split (the board is built around it)."""
    competition = _competition(tmp_path / "probe", None, {"gold": 0, "silver": 1, "bronze": 2})
    predictions = np.full(len(competition.test_features), 0.5)
    return predictions, score_hidden(competition, predictions)


def test_lower_is_better_rank_counts_only_strictly_lower_scores_and_ties_share_it(
    tmp_path: Path,
) -> None:
    predictions, s = _constant_score(tmp_path)
    # 1 entrant better (lower), 1 tied, 3 worse: rank 2 (reversed direction: 4; tie
    # counted as better: 3).
    board = [s + 1, s - 1, s, s + 3, s + 2]
    result = grade(_competition(tmp_path / "a", board, None), predictions)
    assert result.score == pytest.approx(s)
    assert (result.rank, result.n_teams) == (2, 6)
    # The board median is s + 1: a lower score is above the median (reversed: False).
    assert result.thresholds.median == pytest.approx(s + 1)
    assert result.above_median is True
    # Two tied entrants still leave the submission second, beside them.
    tied = grade(_competition(tmp_path / "b", [s, s - 1, s, s + 1], None), predictions)
    assert (tied.rank, tied.n_teams) == (2, 5)


def test_lower_is_better_score_worse_than_the_median_is_not_above_it(tmp_path: Path) -> None:
    predictions, s = _constant_score(tmp_path)
    result = grade(_competition(tmp_path / "a", [s - 3, s - 2, s - 1, s + 1], None), predictions)
    assert result.thresholds.median == pytest.approx(s - 1.5)
    assert result.above_median is False
    assert result.rank == 4


def test_leaderboard_thresholds_for_lower_is_better_without_yaml_medals(tmp_path: Path) -> None:
    predictions, s = _constant_score(tmp_path)
    # n=5: gold and silver at the best score (s - 1), bronze at the 2nd best (s).
    result = grade(_competition(tmp_path / "a", [s + 1, s - 1, s, s + 3, s + 2], None), predictions)
    assert result.thresholds.gold == pytest.approx(s - 1)
    assert result.thresholds.bronze == pytest.approx(s)
    assert result.medal == "bronze"


def test_yaml_medals_take_precedence_over_the_leaderboard(tmp_path: Path) -> None:
    predictions, s = _constant_score(tmp_path)
    medals = {"gold": s - 0.1, "silver": s + 0.1, "bronze": s + 0.2}
    result = grade(
        _competition(tmp_path / "a", [s + 1, s - 1, s, s + 3, s + 2], medals), predictions
    )
    # The board alone gives bronze (test above); the YAML's thresholds give silver.
    assert (result.thresholds.gold, result.thresholds.silver) == (medals["gold"], medals["silver"])
    assert result.medal == "silver"
    # The leaderboard still ranks the submission and gives the median.
    assert (result.rank, result.n_teams) == (2, 6)
    assert result.thresholds.n_teams == 5
    assert result.thresholds.median == pytest.approx(s + 1)

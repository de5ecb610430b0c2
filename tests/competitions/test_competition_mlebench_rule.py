"""The medal rule against MLE-bench's ``Grader.rank_score``: bracket edges, ties, file order,
5-decimal rounding, and the documented difference on one-team / all-tied boards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from haste_dagster.competitions.grading import (
    competition_thresholds,
    medal_for,
    medal_positions,
    medal_thresholds,
    rank_score,
)
from haste_dagster.competitions.registry import load_competition

# (n, gold, silver, bronze positions), worked out by hand from rank_score's brackets:
#   1-99: max(1, int(.1n)), max(1, int(.2n)), max(1, int(.4n)); 100-249: 10, int(.2n), int(.4n)
#   250-999: 10 + int(.002n), 50, 100; 1000+: 10 + int(.002n), int(.05n), int(.1n)
EDGES = [
    (1, 1, 1, 1),
    (99, 9, 19, 39),
    (100, 10, 20, 40),
    (249, 10, 49, 99),
    (250, 10, 50, 100),
    (999, 11, 50, 100),
    (1000, 12, 50, 100),
]


@pytest.mark.parametrize(("n", "gold", "silver", "bronze"), EDGES)
def test_bracket_edges_pick_mlebench_positions(n: int, gold: int, silver: int, bronze: int) -> None:
    assert medal_positions(n) == (gold, silver, bronze)
    # On a board of distinct scores n..1 (best first) the k-th best is n - k + 1.
    t = medal_thresholds([float(s) for s in range(n, 0, -1)], higher_is_better=True)
    assert (t.gold, t.silver, t.bronze) == (n - gold + 1, n - silver + 1, n - bronze + 1)
    down = medal_thresholds([float(s) for s in range(1, n + 1)], higher_is_better=False)
    assert (down.gold, down.silver, down.bronze) == (gold, silver, bronze)


def test_one_team_board_gives_gold_for_matching_or_beating_it() -> None:
    t = medal_thresholds([0.8], higher_is_better=True)
    assert (t.gold, t.silver, t.bronze, t.median, t.n_teams) == (0.8, 0.8, 0.8, 0.8, 1)
    assert rank_score(0.8, t, [0.8], True) == ("gold", False, 1)
    assert rank_score(0.79, t, [0.8], True) == ("none", False, 2)


def test_all_tied_lower_is_better_board_uses_the_metric_direction() -> None:
    # MLE-bench reads the direction off the board (first row == last row → higher is
    # better) and gives 0.3 no medal; the metric says RMSE is lower-is-better: gold.
    board = [0.5] * 5
    t = medal_thresholds(board, higher_is_better=False)
    assert rank_score(0.3, t, board, False) == ("gold", True, 1)
    assert rank_score(0.5, t, board, False) == ("gold", False, 1)  # a tie wins the medal
    assert rank_score(0.6, t, board, False) == ("none", False, 6)


def test_rounding_to_five_decimals_before_ranking_turns_silver_into_gold() -> None:
    board = [0.91234, 0.90, 0.89, 0.88, 0.87, 0.86, 0.85, 0.84, 0.83, 0.82]
    t = medal_thresholds(board, higher_is_better=True)
    assert (t.gold, t.silver) == (0.91234, 0.90)
    assert medal_for(0.912336, t, True) == "silver"  # unrounded it would miss gold
    medal, above, rank = rank_score(0.912336, t, board, True)
    assert (medal, above, rank) == ("gold", True, 1)


def _tiny_with_board(write_def, tmp_path: Path, scores: list[float]) -> object:
    write_def("tiny", medals=None)
    pd.DataFrame(
        {"entrant": [f"e{i}" for i in range(len(scores))], "score": scores, "kind": "random"}
    ).to_csv(tmp_path / "tiny.leaderboard.csv", index=False)
    return load_competition("tiny", tmp_path)


def test_unsorted_leaderboard_file_gives_the_sorted_files_thresholds(
    write_def, tmp_path: Path
) -> None:
    scores = list(np.linspace(0.6, 0.99, 30).round(4))
    sorted_t = competition_thresholds(_tiny_with_board(write_def, tmp_path, scores[::-1]))[0]
    shuffled = list(np.random.default_rng(3).permutation(scores))
    assert shuffled != scores[::-1]
    unsorted_t = competition_thresholds(_tiny_with_board(write_def, tmp_path, shuffled))[0]
    assert unsorted_t == sorted_t
    # 30 teams: gold is the 3rd best, silver the 6th, bronze the 12th.
    best_first = sorted(scores, reverse=True)
    assert (sorted_t.gold, sorted_t.silver, sorted_t.bronze) == (
        best_first[2],
        best_first[5],
        best_first[11],
    )

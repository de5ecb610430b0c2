"""Leaderboard files: ``competition_defs/<slug>.leaderboard.csv`` with entrant, score, kind.

Built by ``scripts/build_leaderboards.py`` from real entrants scored on the hidden split,
or converted from an MLE-bench ``leaderboard.csv`` by ``haste competitions import-mlebench``;
read here for medal thresholds and ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from haste_dagster.errors import CompetitionDefError

COLUMNS = ("entrant", "score", "kind")
LFS_POINTER = b"version https://git-lfs"


class LeaderboardError(CompetitionDefError):
    """A leaderboard file is unusable: a Git LFS pointer, no score column, a missing score."""


def read_leaderboard(path: Path | str, require: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
    """The leaderboard as a frame (``require`` columns; ``score`` checked), in file order.

    ``require=("score",)`` reads an MLE-bench ``leaderboard.csv`` (Kaggle's columns).
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            head = stream.read(len(LFS_POINTER))
    except OSError as exc:
        raise LeaderboardError(str(path), None, f"cannot read leaderboard: {exc}") from None
    if head == LFS_POINTER:
        raise LeaderboardError(
            str(path),
            None,
            "this is a Git LFS pointer, not the leaderboard: run `git lfs pull` in the "
            "mle-bench checkout (or fetch the file some other way)",
        )
    try:
        board = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise LeaderboardError(str(path), None, f"cannot read leaderboard: {exc}") from None
    missing = [c for c in require if c not in board.columns]
    if missing:
        raise LeaderboardError(str(path), missing[0], f"leaderboard lacks column(s) {missing}")
    if board.empty:
        raise LeaderboardError(str(path), None, "leaderboard has no entrants")
    scores = pd.to_numeric(board["score"], errors="coerce")
    bad = ~np.isfinite(scores.to_numpy(dtype=float))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LeaderboardError(
            str(path), "score", f"row {row + 2} has no finite score: {board['score'].iloc[row]!r}"
        )
    board["score"] = scores.astype(float)
    return board[list(require)]


def write_leaderboard(
    path: Path | str, entries: Iterable[Mapping[str, Any]], higher_is_better: bool
) -> Path:
    """Write entrants best-first (the order MLE-bench leaderboards have)."""
    board = pd.DataFrame(list(entries), columns=list(COLUMNS))
    board = board.sort_values("score", ascending=not higher_is_better, kind="stable")
    path = Path(path)
    board.to_csv(path, index=False)
    return path

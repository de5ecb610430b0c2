"""Leaderboard files: ``competition_defs/<slug>.leaderboard.csv`` with entrant, score, kind.

Built by ``scripts/build_leaderboards.py`` from real entrants scored on the hidden split;
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


def read_leaderboard(path: Path | str) -> pd.DataFrame:
    """The leaderboard as a frame (entrant, score, kind), in file order; checked."""
    path = Path(path)
    try:
        board = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise CompetitionDefError(str(path), None, f"cannot read leaderboard: {exc}") from None
    missing = [c for c in COLUMNS if c not in board.columns]
    if missing:
        raise CompetitionDefError(str(path), missing[0], f"leaderboard lacks column(s) {missing}")
    if board.empty:
        raise CompetitionDefError(str(path), None, "leaderboard has no entrants")
    scores = pd.to_numeric(board["score"], errors="coerce")
    bad = ~np.isfinite(scores.to_numpy(dtype=float))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CompetitionDefError(
            str(path), "score", f"row {row + 2} has no finite score: {board['score'].iloc[row]!r}"
        )
    board["score"] = scores.astype(float)
    return board[list(COLUMNS)]


def write_leaderboard(
    path: Path | str, entries: Iterable[Mapping[str, Any]], higher_is_better: bool
) -> Path:
    """Write entrants best-first (the order MLE-bench leaderboards have)."""
    board = pd.DataFrame(list(entries), columns=list(COLUMNS))
    board = board.sort_values("score", ascending=not higher_is_better, kind="stable")
    path = Path(path)
    board.to_csv(path, index=False)
    return path

"""A tiny CSV competition with explicit medal thresholds, fast enough for loop tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_competitions import write_tiny_regression


def write_tiny_competition(folder: Path, slug: str = "tiny_regression", rows: int = 400) -> Path:
    return write_tiny_regression(folder, slug, seed=7, rows=rows)


@pytest.fixture
def tiny_defs(tmp_path: Path) -> Path:
    folder = tmp_path / "defs"
    folder.mkdir()
    write_tiny_competition(folder)
    return folder

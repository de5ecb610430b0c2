"""`haste campaign` off a terminal (CI logs, `make run > file`): rich draws its progress bars
only once the campaign ends, so each finished step is also printed as a line of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tiny_competitions import write_tiny_regression
from typer.testing import CliRunner

from haste_dagster.cli import app

runner = CliRunner()


def test_a_campaign_off_a_terminal_prints_a_line_for_each_finished_step(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    defs = tmp_path / "defs"
    write_tiny_regression(defs, "tiny_progress_a", seed=1, iterations=2)
    write_tiny_regression(defs, "tiny_progress_b", seed=2, iterations=2)
    result = runner.invoke(
        app, ["campaign", "--defs", str(defs), "--iterations", "1", "--no-rerun"]
    )
    assert result.exit_code == 0, result.output
    lines = re.findall(
        r"^(round\d) (cold|warm) (tiny_progress_\w): done, test [\d.]+, medal (\w+) \(\d+ s\)$",
        result.output,
        flags=re.MULTILINE,
    )
    assert [line[:3] for line in lines] == [
        ("round1", "cold", "tiny_progress_a"),
        ("round2", "warm", "tiny_progress_b"),
    ]

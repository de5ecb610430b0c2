"""A user's own ungraded CSV competition (no `medals:`, no leaderboard) through `haste solve
--defs`: solved normally, JSON written with the hidden-test score and medal null, attempt
finished, skills extracted; bad counts refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_competitions import write_tiny_regression
from typer.testing import CliRunner

from haste_dagster import db
from haste_dagster.cli import app

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    return db_url


def _ungraded(folder: Path) -> Path:
    path = write_tiny_regression(folder, "own_data", iterations=3)
    definition = yaml.safe_load(path.read_text())
    del definition["medals"]
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


def test_ungraded_competition_is_solved_and_reports_score_with_medal_null(
    cli_env: str, tmp_path: Path
) -> None:
    defs = tmp_path / "defs"
    _ungraded(defs)
    out = tmp_path / "own.json"
    result = runner.invoke(app, ["solve", "own_data", "--defs", str(defs), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "ungraded" in result.output
    payload = json.loads(out.read_text())
    assert payload["medal"] is None and payload["thresholds"] is None and payload["rank"] is None
    assert isinstance(payload["score"], float) and payload["score"] > 0  # an RMSE
    with db.connection(cli_env) as conn:
        attempt = conn.execute(
            "SELECT status, test_score, medal FROM attempts WHERE id = %s",
            (payload["attempt_id"],),
        ).fetchone()
        skills = conn.execute(
            "SELECT id FROM skills WHERE source_attempt = %s", (payload["attempt_id"],)
        ).fetchall()
    assert attempt["status"] == "finished" and attempt["medal"] is None
    assert attempt["test_score"] == pytest.approx(payload["score"])
    assert {s["id"] for s in skills} == set(payload["new_skills"])


@pytest.mark.parametrize("value", ["0", "-1"])
def test_iterations_below_one_are_refused_naming_the_option(
    cli_env: str, tmp_path: Path, value: str
) -> None:
    defs = tmp_path / "defs"
    _ungraded(defs)
    for command in (["solve", "own_data"], ["campaign"]):
        result = runner.invoke(app, [*command, "--defs", str(defs), "--iterations", value])
        assert result.exit_code == 2
        assert "--iterations" in result.output
    with db.connection(cli_env) as conn:
        assert conn.execute("SELECT count(*) AS n FROM attempts").fetchone()["n"] == 0


def test_unknown_competition_error_mentions_defs(cli_env: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["solve", "not_there", "--defs", str(tmp_path)])
    assert result.exit_code == 2
    assert "--defs" in result.output


def test_broken_leaderboard_fails_before_any_attempt_is_recorded(
    cli_env: str, tmp_path: Path
) -> None:
    defs = tmp_path / "defs"
    _ungraded(defs)
    (defs / "own_data.leaderboard.csv").write_text("version https://git-lfs.github.com/spec/v1\n")
    result = runner.invoke(app, ["solve", "own_data", "--defs", str(defs)])
    assert result.exit_code == 2 and "Git LFS pointer" in result.output
    with db.connection(cli_env) as conn:
        assert conn.execute("SELECT count(*) AS n FROM attempts").fetchone()["n"] == 0

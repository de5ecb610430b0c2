"""An MLE-bench competition end to end through the CLI: import, solve two iterations, write
the submission in the sample's format, grade it the way `mlebench grade-sample` reports."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlebench_layout import write_layout
from typer.testing import CliRunner

from haste_dagster import db
from haste_dagster.cli import app

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    return db_url


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_imported_competition_solves_writes_sample_format_and_grades(
    cli_env: str, tmp_path: Path
) -> None:
    layout = write_layout(tmp_path)
    defs = tmp_path / "defs"
    out = _run(
        "competitions", "import-mlebench", str(layout.data_dir),
        "--registry", str(layout.registry), "--out", str(defs),
    )
    assert "synthetic-playground.yaml" in out
    submission, result_json = tmp_path / "submission.csv", tmp_path / "result.json"
    _run(
        "solve", "synthetic-playground", "--defs", str(defs), "--iterations", "2",
        "--submission", str(submission), "--json", str(result_json),
    )
    result = json.loads(result_json.read_text())
    assert len(result["iterations"]) == 3  # the baseline and two refinements
    sample = pd.read_csv(layout.public / "sample_submission.csv")
    written = pd.read_csv(submission)
    assert list(written.columns) == list(sample.columns)
    assert written["id"].tolist() == sample["id"].tolist()
    assert written["target"].between(0, 1).all()

    report = json.loads(_run("grade", "synthetic-playground", str(submission), "--defs", str(defs)))
    assert report["score"] == round(result["score"], 5)
    assert report["medal"] == result["medal"]
    assert report["medal"] in ("gold", "silver", "bronze", "none")
    flags = {m: report[f"{m}_medal"] for m in ("gold", "silver", "bronze")}
    assert sum(flags.values()) == (report["medal"] != "none") == report["any_medal"]
    if report["medal"] != "none":
        assert flags[report["medal"]]
    # 20 Kaggle teams, best first from 0.95 down to 0.55: gold is the 2nd best score.
    assert report["gold_threshold"] == pytest.approx(0.95 - 0.4 / 19)
    assert report["median_threshold"] == pytest.approx(0.75)
    assert report["above_median"] == (report["score"] > 0.75)
    assert (report["valid_submission"], report["is_lower_better"]) == (True, False)
    with db.connection(cli_env) as conn:
        row = conn.execute(
            "SELECT status, test_score, medal FROM attempts WHERE id = %s", (result["attempt_id"],)
        ).fetchone()
    assert (row["status"], row["medal"]) == ("finished", result["medal"])


def test_grading_a_bad_submission_names_the_error_and_writes_nothing(
    cli_env: str, tmp_path: Path
) -> None:
    layout = write_layout(tmp_path)
    defs = tmp_path / "defs"
    _run(
        "competitions", "import-mlebench", str(layout.data_dir),
        "--registry", str(layout.registry), "--out", str(defs),
    )
    bad = tmp_path / "bad.csv"
    pd.read_csv(layout.public / "sample_submission.csv").head(10).to_csv(bad, index=False)
    report = tmp_path / "report.json"
    result = runner.invoke(
        app, ["grade", "synthetic-playground", str(bad), "--defs", str(defs), "--json", str(report)]
    )
    assert result.exit_code == 2
    assert "SubmissionError" in result.output and "50 missing" in result.output
    assert not report.exists()


def test_import_with_lfs_leaderboard_fails_naming_it(cli_env: str, tmp_path: Path) -> None:
    layout = write_layout(tmp_path)
    (layout.registry / "leaderboard.csv").write_text("version https://git-lfs.github.com/spec/v1\n")
    result = runner.invoke(
        app,
        ["competitions", "import-mlebench", str(layout.data_dir), "--registry",
         str(layout.registry), "--out", str(tmp_path / "defs")],
    )
    assert result.exit_code == 2
    assert "LeaderboardError" in result.output and "git lfs pull" in result.output
    assert not (tmp_path / "defs").exists() or not any((tmp_path / "defs").iterdir())

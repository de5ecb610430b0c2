"""Multi-target competitions solved through the CLI: one sub-attempt per target, the stacked
hidden-test predictions graded with the real multi-target metric, written in the sample's
format and graded again by `haste grade`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlebench_layout import write_layout
from typer.testing import CliRunner

from haste_dagster import db
from haste_dagster.cli import app
from haste_dagster.competitions.metrics import get_metric

runner = CliRunner()
SLUG = "synthetic-playground"


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    return db_url


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _import(tmp_path: Path, kind: str) -> tuple[object, Path]:
    layout = write_layout(tmp_path, kind=kind)
    defs = tmp_path / "defs"
    _run(
        "competitions", "import-mlebench", str(layout.data_dir),
        "--registry", str(layout.registry), "--out", str(defs),
    )
    return layout, defs


@pytest.mark.parametrize(
    ("kind", "targets", "per_column"),
    [
        ("multitarget", ["energy", "bandgap"], "rmsle"),
        ("multilabel", ["toxic", "severe"], "roc_auc"),
    ],
)
def test_multi_target_competition_solves_per_target_and_grades(
    cli_env: str, tmp_path: Path, kind: str, targets: list[str], per_column: str
) -> None:
    layout, defs = _import(tmp_path, kind)
    submission, result_json = tmp_path / "submission.csv", tmp_path / "result.json"
    _run(
        "solve", SLUG, "--defs", str(defs), "--iterations", "2",
        "--submission", str(submission), "--json", str(result_json),
    )
    result = json.loads(result_json.read_text())
    # Two iterations over two targets: one refinement each, after each target's baseline.
    details = result["targets"]
    assert [d["target"] for d in details] == targets
    assert [d["budget_iterations"] for d in details] == [1, 1]
    assert {d["metric"] for d in details} == {per_column}
    assert [(it["target"], it["idx"]) for it in result["iterations"]] == [
        (targets[0], 0), (targets[0], 1), (targets[1], 0), (targets[1], 1),
    ]
    # The multi-target metric is the mean of the per-column one, on CV and on the hidden test.
    assert result["best_cv"] == pytest.approx(np.mean([d["best_cv"] for d in details]))
    assert result["score"] == pytest.approx(np.mean([d["test_score"] for d in details]))
    assert result["medal"] in ("gold", "silver", "bronze", "none")

    sample = pd.read_csv(layout.public / "sample_submission.csv")
    written = pd.read_csv(submission)
    assert list(written.columns) == list(sample.columns) == ["id", *targets]
    assert written["id"].tolist() == sample["id"].tolist()
    assert (written[targets] >= 0).all().all()
    if kind == "multilabel":
        assert written[targets].le(1).all().all()
    # Graded from the file alone, the real multi-target metric against the private answers.
    answers = layout.answers.set_index("id").loc[written["id"]]
    metric = get_metric(f"mean_columnwise_{per_column}")
    direct = metric(answers[targets].to_numpy(), written[targets].to_numpy())
    report = json.loads(_run("grade", SLUG, str(submission), "--defs", str(defs)))
    assert report["score"] == round(result["score"], 5) == round(direct, 5)
    assert report["medal"] == result["medal"]

    with db.connection(cli_env) as conn:
        rows = conn.execute(
            "SELECT id, parent_id, target, status, test_score, medal FROM attempts ORDER BY id"
        ).fetchall()
        counts = conn.execute(
            "SELECT attempt_id, count(*) AS n FROM iterations GROUP BY attempt_id"
        ).fetchall()
    parent, *subs = rows
    assert parent["id"] == result["attempt_id"] and parent["parent_id"] is None
    assert (parent["status"], parent["medal"]) == ("finished", result["medal"])
    assert parent["test_score"] == pytest.approx(result["score"])
    assert [(s["parent_id"], s["target"], s["status"]) for s in subs] == [
        (parent["id"], t, "finished") for t in targets
    ]
    assert {r["attempt_id"]: r["n"] for r in counts} == {s["id"]: 2 for s in subs}


def test_resume_continues_each_target_where_it_stopped(cli_env: str, tmp_path: Path) -> None:
    _layout, defs = _import(tmp_path, "multitarget")
    first = tmp_path / "first.json"
    _run("solve", SLUG, "--defs", str(defs), "--iterations", "2", "--json", str(first))
    with db.connection(cli_env) as conn:
        # Simulate a crash after the first target: the second target's rows and the grade
        # are lost, the parent is left ungraded.
        parent = json.loads(first.read_text())["attempt_id"]
        second = conn.execute(
            "SELECT id FROM attempts WHERE parent_id = %s AND target = 'bandgap'", (parent,)
        ).fetchone()["id"]
        conn.execute("DELETE FROM attempts WHERE id = %s", (second,))
        conn.execute(
            "UPDATE attempts SET status = 'failed', test_score = NULL WHERE id = %s", (parent,)
        )
        conn.commit()
    again = tmp_path / "again.json"
    _run("solve", SLUG, "--defs", str(defs), "--resume", "--json", str(again))
    result = json.loads(again.read_text())
    assert (result["attempt_id"], result["resumed"]) == (parent, True)
    assert [it["target"] for it in result["iterations"]] == ["energy"] * 2 + ["bandgap"] * 2
    with db.connection(cli_env) as conn:
        n_attempts = conn.execute("SELECT count(*) AS n FROM attempts").fetchone()["n"]
        graded = conn.execute(
            "SELECT test_score FROM attempts WHERE id = %s", (parent,)
        ).fetchone()["test_score"]
    assert n_attempts == 3  # the parent and one sub-attempt per target, none duplicated
    assert graded == pytest.approx(result["score"])


def test_unsupported_multi_target_path_is_refused_before_compute(
    cli_env: str, tmp_path: Path
) -> None:
    """The Dagster attempt asset runs one target: it refuses a multi-target competition
    with a named error instead of failing after its budget."""
    from haste_dagster.competitions.registry import check_solvable, load_competition
    from haste_dagster.errors import CompetitionDefError

    _layout, defs = _import(tmp_path, "multilabel")
    competition = load_competition(SLUG, defs)
    check_solvable(competition, per_target=True)
    with pytest.raises(CompetitionDefError, match="one target at a time"):
        check_solvable(competition)

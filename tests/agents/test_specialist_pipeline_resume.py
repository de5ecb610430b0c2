"""SIGKILL a staged attempt in each stage, resume it, and compare with an uninterrupted run.

A real child process runs the staged attempt with one hook that SIGKILLs it at a chosen
point (every database write and computation is the production code's); the test resumes
the attempt and checks that no recorded row was lost or rewritten and that the finished
rows equal those of an uninterrupted run with the same seed in another database."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tiny_competitions import write_tiny_regression

from haste_dagster import db
from haste_dagster.agents.attempts import AttemptConfig
from haste_dagster.agents.competition_agent import run_attempt
from haste_dagster.competitions.registry import load_competition

SLUG = "tiny_resume"
ITERATIONS = 10  # 11 rows: 3 screen, 5 winner, 2 runner-up, 1 ensemble
CONFIG = {"pipeline": "staged", "iterations": ITERATIONS, "loading": "none", "seed": 3}

CHILD = r"""
import json, os, signal, sys
fault, url, defs = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
from pathlib import Path

def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

from haste_dagster.agents import pipeline, records

at = fault["at"]
if at == "during_screen":  # one prototype recorded, the second one being scored
    real_cv = pipeline.cross_validate
    calls = []
    def cross_validate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            die()
        return real_cv(*args, **kwargs)
    pipeline.cross_validate = cross_validate
elif at == "after_row":  # the n-th row of a branch committed, nothing of the next started
    real_report = pipeline.StagedPipeline._report
    def report(self, row, budget):
        real_report(self, row, budget)
        if row.branch == fault["branch"] and row.idx == fault["idx"]:
            die()
    pipeline.StagedPipeline._report = report
elif at == "inside_write":  # the row of `idx` sent inside its transaction, not committed
    real_record = records.record_iteration
    def record_iteration(conn, row):
        real_record(conn, row)
        if row.idx == fault["idx"]:
            die()
    records.record_iteration = record_iteration
elif at == "during_ensemble":  # every branch recorded, the ensemble being scored
    def cross_validate_ensemble(*args, **kwargs):
        die()
    pipeline.cross_validate_ensemble = cross_validate_ensemble
else:
    raise SystemExit(f"unknown fault point {at!r}")

from haste_dagster import db
from haste_dagster.agents.attempts import AttemptConfig
from haste_dagster.agents.competition_agent import run_attempt
from haste_dagster.competitions.registry import load_competition
competition = load_competition(fault["slug"], Path(defs))
with db.connection(url) as conn:
    resume = fault.get("resume")
    run_attempt(conn, competition, AttemptConfig(**fault["config"]), resume_attempt_id=resume)
print("finished without being killed")
"""

ROW_COLUMNS = (
    "idx, branch, patch, rationale, spec, detail, cv_mean, fold_scores, kept, skill_ids, error,"
    " incumbent_before"
)


def _fresh(server_url: str) -> str:
    url = db.create_database(server_url, f"stg_{uuid.uuid4().hex[:10]}")
    with db.connection(url):
        pass
    return url


def _recorded(url: str) -> tuple[list[dict], list[dict]]:
    with db.connection(url) as conn:
        attempts = conn.execute(
            "SELECT id, status, best_spec, best_cv, plan, pipeline FROM attempts ORDER BY id"
        ).fetchall()
        rows = conn.execute(
            f"SELECT {ROW_COLUMNS} FROM iterations ORDER BY attempt_id, idx"
        ).fetchall()
    return attempts, rows


@pytest.fixture(scope="module")
def resume_defs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("defs")
    write_tiny_regression(folder, SLUG, seed=5, rows=150, iterations=ITERATIONS)
    return folder


@pytest.fixture(scope="module")
def reference(server_url: str, resume_defs: Path) -> tuple[list[dict], list[dict]]:
    url = _fresh(server_url)
    with db.connection(url) as conn:
        run_attempt(conn, load_competition(SLUG, resume_defs), AttemptConfig(**CONFIG))
    return _recorded(url)


def _index(rows: list[dict], branch: str, n: int) -> int:
    """The idx of the n-th row (1-based) of ``branch``."""
    return [r["idx"] for r in rows if r["branch"] == branch][n - 1]


def test_sigkill_in_every_stage_then_resume_matches_an_uninterrupted_run(
    server_url: str, resume_defs: Path, reference: tuple[list[dict], list[dict]]
) -> None:
    """One attempt killed four times, once in each stage, each kill in a resumed process:
    inside the screen's second evaluation, after a winner iteration is committed, inside the
    write of the runner-up's iteration, inside the ensemble's evaluation."""
    ref_attempts, ref_rows = reference
    # the reference has every stage, so each kill point is reached
    assert {r["branch"] for r in ref_rows} == {"screen", "winner", "runner_up", "ensemble"}
    faults = [
        ({"at": "during_screen"}, lambda rows: [r["branch"] for r in rows] == ["screen"]),
        (
            {"at": "after_row", "branch": "winner", "idx": _index(ref_rows, "winner", 2)},
            lambda rows: rows[-1]["idx"] == _index(ref_rows, "winner", 2),
        ),
        (
            {"at": "inside_write", "idx": _index(ref_rows, "runner_up", 2)},
            lambda rows: rows[-1]["idx"] == _index(ref_rows, "runner_up", 2) - 1,
        ),
        (
            {"at": "during_ensemble"},
            lambda rows: len(rows) == len(ref_rows) - 1 and rows[-1]["branch"] != "ensemble",
        ),
    ]
    url = _fresh(server_url)
    attempt_id = None
    before: list[dict] = []
    for fault, stage_reached in faults:
        done = subprocess.run(
            [sys.executable, "-c", CHILD,
             json.dumps({**fault, "slug": SLUG, "config": CONFIG, "resume": attempt_id}),
             url, str(resume_defs)],
            capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == -signal.SIGKILL, (fault, done.stdout + done.stderr[-3000:])
        attempts, rows = _recorded(url)
        assert len(attempts) == 1 and attempts[0]["status"] == "running"
        attempt_id = attempts[0]["id"]
        assert stage_reached(rows), (fault, [(r["idx"], r["branch"]) for r in rows])
        assert rows[: len(before)] == before  # nothing lost or rewritten by the resume
        assert rows == ref_rows[: len(rows)]  # what was recorded is what a clean run records
        before = rows

    with db.connection(url) as conn:
        run_attempt(
            conn, load_competition(SLUG, resume_defs), AttemptConfig(**CONFIG),
            resume_attempt_id=attempt_id,
        )
    attempts, after = _recorded(url)
    assert after[: len(before)] == before
    assert after == ref_rows  # no row repeated or missing, every stage as uninterrupted
    keys = ("status", "best_spec", "best_cv", "plan", "pipeline")
    assert [{k: a[k] for k in keys} for a in attempts] == [
        {k: a[k] for k in keys} for a in ref_attempts
    ]

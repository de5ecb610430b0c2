"""The one resume rule (records.resumable_attempt) that the CLI, the assets and the
distributed job share, and the cases where their two former rules disagreed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from haste_dagster.agents import records
from haste_dagster.defs.steps import run_is_live

SLUG = "resume_probe"


@dataclass(frozen=True)
class Settings:
    policy: str = "heuristic"
    loading: str = "tiered"
    seed: int = 0


def _attempt(
    conn: psycopg.Connection,
    settings: Settings = Settings(),
    *,
    status: str = "running",
    graded: bool = False,
    run_id: str | None = None,
) -> int:
    attempt_id = records.create_attempt(
        conn,
        slug=SLUG,
        policy=settings.policy,
        loading=settings.loading,
        seed=settings.seed,
        budget_iterations=5,
        dagster_run_id=run_id,
    )
    conn.execute("UPDATE attempts SET status = %s WHERE id = %s", (status, attempt_id))
    if graded:
        records.record_grade(
            conn, attempt_id, test_score=1.0, medal="none", predictions=b"", grade={}
        )
    return attempt_id


def test_an_unfinished_attempt_resumes_only_with_the_same_policy_loading_and_seed(
    conn: psycopg.Connection,
) -> None:
    # The old CLI rule took the newest unfinished attempt whatever its settings, so
    # `--resume --seed 1` continued a seed-0 attempt (with seed 0's draws).
    crashed = _attempt(conn, Settings(seed=0))
    assert records.resumable_attempt(conn, SLUG, Settings(seed=1)) is None
    assert records.resumable_attempt(conn, SLUG, Settings(loading="flat")) is None
    assert records.resumable_attempt(conn, SLUG, Settings(policy="llm")) is None
    assert records.resumable_attempt(conn, SLUG, Settings(seed=0)) == crashed


def test_a_finished_but_ungraded_attempt_resumes_and_a_graded_one_does_not(
    conn: psycopg.Connection,
) -> None:
    # The old asset rule ignored an attempt that finished but crashed before its grade
    # (skills are written first), starting over; the CLI's finished it. Both finish it now.
    graded = _attempt(conn, status="finished", graded=True)
    assert records.resumable_attempt(conn, SLUG, Settings()) is None
    ungraded = _attempt(conn, status="finished")
    assert ungraded > graded
    assert records.resumable_attempt(conn, SLUG, Settings()) == ungraded


def test_the_newest_candidate_is_resumed_unless_its_run_is_still_live(
    conn: psycopg.Connection,
) -> None:
    older = _attempt(conn, status="failed")
    newer = _attempt(conn, status="running")
    assert records.resumable_attempt(conn, SLUG, Settings()) == newer
    # A live newest attempt blocks resuming: an older one is not picked up beside it.
    assert records.resumable_attempt(
        conn, SLUG, Settings(), run_is_live=lambda a: a.id == newer
    ) is None
    assert older < newer


def _run(instance: DagsterInstance, status: DagsterRunStatus) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="probe", run_id=run_id, status=status))
    return run_id


def test_dagster_liveness_resumes_failed_or_cancelled_runs_and_failed_cli_attempts(
    conn: psycopg.Connection,
) -> None:
    instance = DagsterInstance.ephemeral()
    live = run_is_live(instance)
    cases = {
        DagsterRunStatus.STARTED: None,
        DagsterRunStatus.FAILURE: "resumed",
        DagsterRunStatus.CANCELED: "resumed",
    }
    for status, expected in cases.items():
        attempt_id = _attempt(conn, run_id=_run(instance, status))
        found = records.resumable_attempt(conn, SLUG, Settings(), run_is_live=live)
        assert found == (attempt_id if expected else None), status
        conn.execute("UPDATE attempts SET status = 'finished', test_score = 0 WHERE id = %s",
                     (attempt_id,))
    # Started by the CLI (no run id): Dagster resumes it only once it is marked failed,
    # since a CLI process may still be running it; the CLI itself (never_live) resumes it.
    running = _attempt(conn, status="running")
    assert records.resumable_attempt(conn, SLUG, Settings(), run_is_live=live) is None
    assert records.resumable_attempt(conn, SLUG, Settings()) == running
    conn.execute("UPDATE attempts SET status = 'failed' WHERE id = %s", (running,))
    assert records.resumable_attempt(conn, SLUG, Settings(), run_is_live=live) == running

"""The distributed job on a real Celery worker (real redis-server broker) gives the same
attempt, iteration by iteration, as an in-process run with the same seed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dagster import DagsterInstance, build_reconstructable_job, execute_job
from dist_helpers import SLUG, run_config

from haste_dagster import db
from haste_dagster.config import PROJECT_ROOT

ROUNDS, CANDIDATES, SEED = 2, 2, 4
TRAINING_STEPS = ("start_attempt", "evaluate_candidate", "train_final_model")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
    port = _free_port()
    log = tmp_path / "redis.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start:\n{_tail(log)}")
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def celery_worker(
    redis_url: str,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    """`celery -A haste_dagster.defs.executors worker -Q dagster,gpu`, as docs/deploy.md says.

    Started after `instance`, so it inherits HASTE_DAGSTER_PG_URL (Dagster's storage) along
    with HASTE_DATABASE_URL, the competition folder and the GPU routing.
    """
    monkeypatch.setenv("HASTE_CELERY_BROKER_URL", redis_url)
    monkeypatch.setenv("HASTE_GPU_QUEUE", "gpu")
    name = f"haste-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "haste_dagster.defs.executors", "worker",
             "-Q", "dagster,gpu", "--prefetch-multiplier=1", "--concurrency", "2",
             "--loglevel", "INFO", "--hostname", f"{name}@%h"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    try:
        while " ready." not in _tail(log, 100_000):
            if proc.poll() is not None:
                pytest.fail(f"the celery worker exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the celery worker was not ready after 60 s:\n{_tail(log)}")
            time.sleep(0.2)
        yield {"name": name, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _run(instance: DagsterInstance, executor: str, label: str) -> Any:
    job = build_reconstructable_job(
        "haste_dagster.defs.distributed",
        "build_distributed_attempt_job",
        reconstructable_kwargs={"rounds": ROUNDS, "candidates": CANDIDATES, "executor": executor},
    )
    return execute_job(job, instance=instance, run_config=run_config(seed=SEED, label=label))


def _attempt(db_url: str, attempt_id: int) -> dict[str, Any]:
    with db.connection(db_url) as conn:
        attempt = conn.execute(
            "SELECT best_cv, best_spec, test_score, medal, status FROM attempts WHERE id = %s",
            (attempt_id,),
        ).fetchone()
        iterations = conn.execute(
            """SELECT idx, patch, rationale, skill_ids, cv_mean, cv_std, fold_scores, kept,
                      incumbent_before, error
               FROM iterations WHERE attempt_id = %s ORDER BY idx""",
            (attempt_id,),
        ).fetchall()
    return {"attempt": dict(attempt), "iterations": [dict(r) for r in iterations]}


def test_a_celery_run_on_a_real_worker_matches_an_in_process_run(
    dist_env: dict[str, Any], instance: DagsterInstance, celery_worker: dict[str, Any]
) -> None:
    with _run(instance, "in_process", "in_process") as local:
        assert local.success
        local_final = local.output_for_node("train_final_model")
    with _run(instance, "celery", "celery") as remote:
        assert remote.success, _tail(celery_worker["log"])
        remote_final = remote.output_for_node("train_final_model")
        events = list(remote.all_events)
        run_id = remote.run_id

    assert remote_final["attempt_id"] != local_final["attempt_id"]
    local_attempt = _attempt(dist_env["db_url"], local_final["attempt_id"])
    remote_attempt = _attempt(dist_env["db_url"], remote_final["attempt_id"])
    # Same seed, same data, same policy: the same proposals, scores and keep decisions.
    assert remote_attempt["iterations"] == local_attempt["iterations"]
    assert len(remote_attempt["iterations"]) == 1 + ROUNDS * CANDIDATES
    assert remote_attempt["attempt"] == local_attempt["attempt"]
    assert remote_attempt["attempt"]["status"] == "finished"
    assert remote_final["test_score"] == local_final["test_score"]
    assert remote_final["medal"] == local_final["medal"]

    # Every step ran in the worker, and training steps went through the `gpu` queue.
    engine = [e.message for e in events if e.event_type_value == "ENGINE_EVENT"]
    steps = {e.step_key for e in events if e.event_type_value == "STEP_SUCCESS"}
    assert len(steps) == 2 + ROUNDS * (2 + CANDIDATES)  # start, final; propose, select, evals
    for step in steps:
        assert f"Executing steps {step} in celery worker" in "\n".join(engine), step
        queue = "gpu" if step.startswith(TRAINING_STEPS) else "dagster"
        assert f'Submitting celery task for step "{step}" to queue "{queue}".' in engine, step
    assert celery_worker["name"] in _tail(celery_worker["log"], 1_000_000)

    # No GPU here: the training steps detected the CPU and said so in their metadata.
    devices = [
        e.event_specific_data.metadata["device"].value
        for e in events
        if e.event_type_value == "STEP_OUTPUT" and e.step_key.startswith("evaluate_candidate")
    ]
    assert devices == ["cpu"] * (ROUNDS * CANDIDATES)
    # The run as stored (and shown in the UI) holds no broker URL.
    stored = instance.get_run_by_id(run_id)
    assert stored is not None and "redis://" not in json.dumps(stored.run_config)
    assert SLUG in json.dumps(stored.run_config)

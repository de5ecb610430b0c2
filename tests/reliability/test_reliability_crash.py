"""Crash and resume: SIGKILL a real attempt process (the `haste solve` CLI, and a Dagster run
of the attempt asset) at chosen and random points, resume it, and compare with an
uninterrupted run of the same seed in another database.

Guarantees: no recorded iteration or usage row is lost or rewritten, no skill is written
twice, and the resumed attempt ends exactly where the uninterrupted one does (iterations,
usage, skills, grade)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    TINY,
    TINY_ITERATIONS,
    TINY_SEED,
    check_resumed,
    child_env,
    fresh_db,
    haste,
    recorded,
    seed_skills,
    tiny_solve,
    with_fault,
    write_competition,
)

from haste_dagster import db

# Kill points: in the baseline cross-validation; right after an iteration is committed and
# between an iteration's row and its usage rows (the iteration drawn by the seed); inside the
# skill store's INSERT transaction; from outside at a random moment (delay drawn by the
# seed). Each runs in a fresh database.
KILL_POINTS = [
    pytest.param({"at": "during_baseline"}, id="during_baseline"),
    pytest.param({"at": "after_iteration_write", "seed": 1}, id="after_iteration_write"),
    pytest.param({"at": "inside_iteration_write", "seed": 2}, id="inside_iteration_write"),
    pytest.param({"at": "during_skill_write"}, id="during_skill_write"),
    pytest.param({"at": "external", "seed": 7}, id="external_random_time"),
]


@pytest.mark.parametrize("fault", KILL_POINTS)
def test_sigkill_of_haste_solve_then_resume_loses_nothing_and_matches_an_uninterrupted_run(
    fault: dict[str, Any],
    server_url: str,
    tiny_defs: Path,
    tiny_reference: dict[str, Any],
    tally: Counter,
) -> None:
    url = fresh_db(server_url)
    seed_skills(url, TINY)
    args = tiny_solve(tiny_defs)
    rng = random.Random(fault.get("seed", 0))
    if fault["at"] == "external":
        proc = subprocess.Popen(
            haste(*args), env=child_env(url), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        delay = rng.uniform(0.0, 0.6)
        deadline = time.monotonic() + 120
        with db.connection(url) as conn:
            while time.monotonic() < deadline and proc.poll() is None:
                row = conn.execute("SELECT count(*) AS n FROM iterations").fetchone()
                if row["n"] >= 1:
                    break
                time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        returncode = proc.wait(timeout=60)
    else:
        if fault["at"] in ("after_iteration_write", "inside_iteration_write"):
            fault = {**fault, "idx": rng.randint(1, TINY_ITERATIONS - 1)}
        done = subprocess.run(
            with_fault(fault, *args), env=child_env(url), capture_output=True, text=True,
            timeout=300,
        )
        returncode = done.returncode
    assert returncode == -signal.SIGKILL, f"the process was not killed ({returncode})"
    tally["faults_injected"] += 1

    before = recorded(url)
    assert len(before["attempts"]) == 1
    recorded_idx = [r[0] for r in before["iterations"]]
    if fault["at"] == "after_iteration_write":  # the write it was killed after is there
        assert recorded_idx == list(range(fault["idx"] + 1))
    if fault["at"] == "inside_iteration_write":  # all or nothing: row and usage together
        assert recorded_idx == list(range(fault["idx"]))
        assert all(u[1] is None or u[1] < fault["idx"] for u in before["usage"])

    resumed = subprocess.run(
        haste(*args, "--resume"), env=child_env(url), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_resumed(url, before, tiny_reference, tally)


def test_sigkill_of_a_dagster_run_of_the_attempt_asset_then_a_rerun_resumes_it(
    server_url: str,
    tiny_defs: Path,
    tiny_reference: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tally: Counter,
) -> None:
    """`dagster asset materialize` of attempt → submission → competition_skills on the
    Postgres-backed instance, killed (whole process group) after iteration 2 is recorded."""
    from dagster import DagsterRunStatus

    from haste_dagster.defs.instance import dagster_instance

    url = fresh_db(server_url)
    seed_skills(url, TINY)
    monkeypatch.setenv("HASTE_DAGSTER_PG_URL", "")  # set by prepare_dagster_home; restored after
    monkeypatch.setenv("HASTE_COMPETITION_DEFS", str(tiny_defs))
    home = tmp_path / "dagster_home"
    instance = dagster_instance(url, home)
    instance.add_dynamic_partitions("competition", [TINY])
    env = child_env(
        url,
        DAGSTER_HOME=str(home),
        HASTE_COMPETITION_DEFS=str(tiny_defs),
        HASTE_ARTIFACTS=str(tmp_path / "artifacts"),
        HASTE_SKILL_ASSETS=str(tmp_path / "skill_assets"),
        HASTE_DAGSTER_EXECUTOR="in_process",
    )
    run_config = {
        "ops": {"attempt": {"config": {"iterations": TINY_ITERATIONS, "seed": TINY_SEED}}}
    }
    command = [
        sys.executable,
        "-m", "dagster", "asset", "materialize", "-m", "haste_dagster.defs.definitions",
        "--select", "attempt,submission,competition_skills", "--partition", TINY,
        "--config-json", json.dumps(run_config),
    ]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    with db.connection(url) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT max(idx) AS n FROM iterations").fetchone()
            if row["n"] is not None and row["n"] >= 2:
                break
            assert proc.poll() is None, "the Dagster run ended before it could be killed"
            time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    tally["faults_injected"] += 1
    before = recorded(url)
    assert len(before["iterations"]) >= 3

    # Nobody saw the run die: Dagster still shows it as started. Force-terminating it (the UI's
    # "terminate" on a run whose process is gone) marks it canceled; the attempt asset then
    # resumes the attempt that run left behind instead of starting a second one.
    (run,) = instance.get_runs()
    assert run.status == DagsterRunStatus.STARTED
    instance.report_run_canceled(run, message="run worker killed (SIGKILL)")

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_resumed(url, before, tiny_reference, tally)
    instance.dispose()


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (its children, theirs...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan nobody reaps stays one)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_of_a_campaign_with_workers_ends_its_workers_mid_attempt(
    server_url: str, tmp_path: Path, tally: Counter
) -> None:
    """`haste campaign --workers 2`, killed while both workers solve: the workers end within
    seconds rather than solving their attempts on (racing a resumed campaign), and once
    they are gone nothing more is written."""
    url = fresh_db(server_url)
    defs = tmp_path / "defs"
    # Two domains, so round 1 holds both and one wave runs them side by side; attempts long
    # enough (many iterations on more rows) to outlast the check by far.
    write_competition(defs, "rel_worker_a", seed=11, rows=1500, iterations=400, domain="rel_a")
    write_competition(defs, "rel_worker_b", seed=12, rows=1500, iterations=400, domain="rel_b")
    proc = subprocess.Popen(
        haste("campaign", "--workers", "2", "--no-rerun", "--defs", str(defs)),
        env=child_env(url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    with db.connection(url) as conn:
        while time.monotonic() < deadline:
            solving = conn.execute(
                """SELECT count(DISTINCT attempt_id) AS n FROM iterations i
                   JOIN attempts a ON a.id = i.attempt_id WHERE a.status = 'running'"""
            ).fetchone()["n"]
            if solving == 2:
                break
            assert proc.poll() is None, "the campaign ended before it could be killed"
            time.sleep(0.05)
        assert solving == 2, "the two workers never solved side by side"
        workers = _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        tally["faults_injected"] += 1

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_running(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if _running(p)], "workers outlived their campaign"
        written = conn.execute("SELECT count(*) AS n FROM iterations").fetchone()["n"]
        time.sleep(3)
        assert conn.execute("SELECT count(*) AS n FROM iterations").fetchone()["n"] == written
        statuses = conn.execute("SELECT status FROM attempts ORDER BY id").fetchall()
    # Ended mid-attempt: neither worker finished its attempt after the kill.
    assert [r["status"] for r in statuses] == ["running", "running"]

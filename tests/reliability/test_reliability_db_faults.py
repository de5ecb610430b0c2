"""Database faults: the embedded PostgreSQL stopped in the middle of an attempt.

The test starts its own embedded server in a dedicated HASTE_HOME (never the session's shared
test server), stops it while `haste solve` is iterating, and checks that the command fails
with a clear message (no traceback, no secret), that nothing committed is lost, and that
`haste solve --resume`, which starts the server again, finishes the attempt exactly like an
uninterrupted run of the same seed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, check_resumed, child_env, haste, recorded, seed_skills, tiny_solve

from haste_dagster import db


@pytest.fixture
def own_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """(HASTE_HOME, URL) of an embedded server of this test alone; stopped and removed after.

    Made with mkdtemp, not tmp_path, for the reason given in tests/conftest.py (the server
    runs as its own system user when the tests run as root)."""
    home = Path(tempfile.mkdtemp(prefix="haste-rel-dbfault-"))
    monkeypatch.setenv("HASTE_HOME", str(home))
    monkeypatch.delenv("HASTE_DATABASE_URL", raising=False)
    try:
        url = db.database_url()
        with db.connection(url):
            pass
        yield home, url
    finally:
        subprocess.run(haste("db", "stop"), env=_home_env(home), capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def _home_env(home: Path) -> dict[str, str]:
    env = child_env(None, HASTE_HOME=str(home))
    env.pop("HASTE_DATABASE_URL", None)  # the embedded server of `home`
    return env


def _looks_clear(output: str) -> None:
    assert "Traceback" not in output and "╭" not in output, output[-3000:]
    assert "error:" in output


def test_postgres_stopped_mid_attempt_fails_clearly_then_resume_finishes_it_uncorrupted(
    own_server: tuple[Path, str],
    tiny_defs: Path,
    tiny_reference: dict[str, Any],
    tally: Counter,
) -> None:
    home, url = own_server
    seed_skills(url, TINY)
    args = tiny_solve(tiny_defs)
    proc = subprocess.Popen(
        haste(*args), env=_home_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    with db.connection(url) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT max(idx) AS n FROM iterations").fetchone()
            if row["n"] is not None and row["n"] >= 1:
                break
            assert proc.poll() is None, "the attempt ended before the server could be stopped"
            time.sleep(0.02)
    before = recorded(url)  # committed, whatever happens next
    assert db.stop_embedded()  # pg_ctl stop (fast mode): open sessions are cut off
    tally["faults_injected"] += 1
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, output[-3000:]  # a handled error, not a crash
    _looks_clear(output)
    attempt_id = before["attempts"][0]["id"]
    assert f"attempt {attempt_id}" in output and "--resume" in " ".join(output.split())

    # While it is down, a command aimed at it says which database it cannot reach.
    down = subprocess.run(haste(*args), env=child_env(url), capture_output=True, text=True,
                          timeout=120)
    tally["faults_injected"] += 1
    assert down.returncode == 2
    _looks_clear(down.stderr)
    assert "cannot connect to postgresql://" in " ".join(down.stderr.split())

    # `--resume` starts the embedded server again and finishes the same attempt.
    resumed = subprocess.run(haste(*args, "--resume"), env=_home_env(home), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_resumed(url, before, tiny_reference, tally)

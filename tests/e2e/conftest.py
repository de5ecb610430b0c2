"""Starting `haste ui` for the end-to-end tests: a free localhost port, a fresh database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ui_server import CHROMIUM, UiProcess, free_port, ignore_interrupts


@pytest.fixture
def chromium() -> Path:
    """Debian's browser; checked before the UI starts so a broken CI setup fails fast."""
    if not CHROMIUM.exists():
        pytest.fail("CI needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def launch_ui(db_url: str, tmp_path: Path) -> Iterator[Callable[..., UiProcess]]:
    """launch_ui(defs_dir=None): `haste ui` in the background on a free port (not waited for).

    ``like_shell_background``: started as `haste ui &` from a script is, with SIGINT and
    SIGQUIT ignored (a non-interactive shell does that, and it is inherited across exec).

    The teardown stops what is left of it: SIGINT, then SIGKILL to its process group."""
    started: list[UiProcess] = []

    def launch(defs_dir: Path | None = None, *, like_shell_background: bool = False) -> UiProcess:
        if defs_dir is None:
            defs_dir = tmp_path / "defs"
            defs_dir.mkdir(exist_ok=True)
        port = free_port()
        env = {
            **os.environ,
            "HASTE_DATABASE_URL": db_url,
            "HASTE_COMPETITION_DEFS": str(defs_dir),
            "HASTE_ARTIFACTS": str(tmp_path / "artifacts"),
            "HASTE_SKILL_ASSETS": str(tmp_path / "skill_assets"),
            # One process per run instead of one per step: light on small machines.
            "HASTE_DAGSTER_EXECUTOR": "in_process",
            "PYTHONUNBUFFERED": "1",
        }
        log = tmp_path / f"haste_ui_{port}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "haste_dagster", "ui", "--host", "127.0.0.1",
                 "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the teardown stops all of it
                preexec_fn=ignore_interrupts if like_shell_background else None,
            )
        started.append(UiProcess(proc, f"http://127.0.0.1:{port}", port, log))
        return started[-1]

    yield launch
    for ui in started:
        if ui.proc.poll() is None:
            ui.proc.send_signal(signal.SIGINT)
            try:
                ui.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group goes too
            os.killpg(ui.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        ui.proc.wait(timeout=10)

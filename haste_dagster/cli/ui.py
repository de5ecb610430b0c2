"""`haste ui`: the Dagster webserver and daemon on the HASTE database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console
from rich.markup import escape

from haste_dagster import db
from haste_dagster.config import PROJECT_ROOT, home_dir, redact

console = Console(stderr=True)
DEFINITIONS_MODULE = "haste_dagster.defs.definitions"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_SECONDS = 20.0  # for `dagster dev` to stop its webserver, daemon and code servers


def dagster_dev_command(host: str, port: int, workspace: Path | None = None) -> list[str]:
    """`dagster dev` (webserver + daemon, so schedules and sensors tick) for this project."""
    workspace = workspace or PROJECT_ROOT / "workspace.yaml"
    # An installed (non-checkout) package has no workspace.yaml: load the module directly.
    target = ["-w", str(workspace)] if workspace.exists() else ["-m", DEFINITIONS_MODULE]
    return [sys.executable, "-m", "dagster", "dev", *target, "-h", host, "-p", str(port)]


def prepare_environment() -> dict[str, str]:
    """Start the database if needed, migrate it, write DAGSTER_HOME; the env for `dagster dev`."""
    from haste_dagster.defs.instance import prepare_dagster_home

    url = db.database_url()
    with db.connection(url):
        pass  # migrates the HASTE schema before any run needs it
    dagster_home = prepare_dagster_home(url)
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home)
    env["HASTE_HOME"] = str(home_dir())  # absolute, so every child resolves the same folder
    console.print(f"database {redact(url)}; DAGSTER_HOME {dagster_home}")
    return env


def register(app: typer.Typer) -> None:
    @app.command()
    def ui(
        host: str = typer.Option(
            "127.0.0.1", help="Interface to bind; keep it local unless proxied."
        ),
        port: int = typer.Option(3000, help="Port of the Dagster webserver."),
        defs: Path | None = typer.Option(
            None, help="folder of competition YAMLs (default: HASTE_COMPETITION_DEFS)"
        ),
    ) -> None:
        """Start the Dagster UI (webserver + daemon) with its storage on the HASTE PostgreSQL."""
        try:
            env = prepare_environment()
            if defs is not None:  # the sensor and every step read competitions from here
                env["HASTE_COMPETITION_DEFS"] = str(defs.resolve())
        except db.DatabaseError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from exc
        command = dagster_dev_command(host, port)
        console.print(f"Dagster UI on http://{host}:{port}")
        raise typer.Exit(supervise(command, env))


# --- process supervision ----------------------------------------------------------------------
# `dagster dev` runs as our child in its own session, so a terminal's Ctrl-C reaches only us
# and every stop signal takes one path: we ask `dagster dev` to stop (SIGINT, what it handles),
# wait, then terminate whatever is left of the tree. Started in the background, a shell makes
# SIGINT ignored and that is inherited across exec; our handlers replace it before the child
# starts, so nothing below us inherits an ignored signal. As a Linux child subreaper we adopt
# grandchildren whose parent died first, so none escapes the final sweep.


def _become_subreaper() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_child_subreaper = 36
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc; elsewhere an empty set)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap(pids: set[int]) -> None:
    """Collect those of ``pids`` that are our exited children (adopted orphans included), so
    none lingers as a zombie; `dagster dev` itself is left to its Popen."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive:
        _reap(alive)
        alive &= descendants(os.getpid())
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return alive


def supervise(command: list[str], env: dict[str, str], grace: float = GRACE_SECONDS) -> int:
    """Run ``command`` until it exits or a stop signal arrives, then stop its whole tree.

    Returns its exit code, or 128 + the signal number when stopped by a signal."""
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    _become_subreaper()
    try:
        child = subprocess.Popen(command, env=env, start_new_session=True)
        while child.poll() is None and not received:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.5)
        tree = descendants(os.getpid())
        if received and child.poll() is None:
            console.print("stopping the Dagster UI and its processes")
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=grace)
        # Whatever outlived `dagster dev` (or was left behind by its crash) goes too.
        tree = (tree | descendants(os.getpid())) - {child.pid}
        left = _wait_gone(tree, timeout=1.0 if received else 0.0)
        _signal_all(left, signal.SIGTERM)
        left = _wait_gone(left, timeout=5.0)
        _signal_all(left | ({child.pid} if child.poll() is None else set()), signal.SIGKILL)
        child.wait()
        _wait_gone(left, timeout=5.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0] if received else int(child.returncode)

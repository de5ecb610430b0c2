"""`haste ui` stops itself and every process below it on SIGTERM, however it was started."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
from ui_server import UiProcess, alive, port_is_free

from haste_dagster.cli.ui import descendants

pytestmark = pytest.mark.slow


def test_haste_ui_started_in_the_background_stops_all_its_children_on_sigterm(
    launch_ui: Callable[..., UiProcess],
) -> None:
    ui = launch_ui(like_shell_background=True)
    ui.wait_ready()
    tree = descendants(ui.proc.pid)
    # `dagster dev`, and below it at least the webserver and the daemon.
    assert len(tree) >= 3, tree
    ui.proc.send_signal(signal.SIGTERM)
    assert ui.proc.wait(timeout=90) == 128 + signal.SIGTERM
    assert not {pid for pid in tree if alive(pid)}, ui.log.read_text()[-3000:]
    assert port_is_free(ui.port)


STUBBORN_TREE = """
import os, subprocess, sys
from haste_dagster.cli.ui import supervise

# The middle process ignores SIGINT and SIGTERM; its two children do not.
middle = (
    "import signal, subprocess, time;"
    "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "kids = [subprocess.Popen(['sleep', '600']) for _ in range(2)]; time.sleep(600)"
)
sys.exit(supervise([sys.executable, "-c", middle], dict(os.environ), grace=1.0))
"""


def test_supervise_escalates_until_a_tree_that_ignores_stop_signals_is_gone() -> None:
    import os
    import subprocess
    import sys
    import time

    from ui_server import ignore_interrupts

    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN_TREE],
        env=dict(os.environ),
        start_new_session=True,
        preexec_fn=ignore_interrupts,
    )
    try:
        deadline = time.monotonic() + 60
        while len(tree := descendants(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(tree) == 3, tree  # the middle process and its two sleeps
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert not {pid for pid in tree if alive(pid)}
    finally:
        if proc.poll() is None:
            proc.kill()

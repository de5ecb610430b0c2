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

"""End to end: `haste ui` serves the Dagster UI; a materialization launched from the page
in headless Chromium runs through the daemon and succeeds."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Fail instead of skip in CI: there a missing browser is a broken setup, not an optional extra.
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("Debian chromium is not installed (/usr/bin/chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"`haste ui` exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-4000:]}")


def _graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


@pytest.fixture
def chromium() -> Path:
    """Debian's browser; checked before the UI starts so a broken CI setup fails fast."""
    if not CHROMIUM.exists():
        pytest.fail("CI needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def haste_ui(db_url: str, tmp_path: Path) -> Iterator[str]:
    """`haste ui` on a free localhost port with a fresh database; yields the base URL."""
    defs = tmp_path / "defs"
    defs.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "HASTE_DATABASE_URL": db_url,
        "HASTE_COMPETITION_DEFS": str(defs),
        "HASTE_ARTIFACTS": str(tmp_path / "artifacts"),
        "HASTE_SKILL_ASSETS": str(tmp_path / "skill_assets"),
        # One process per run instead of one per step: keeps the test light on small machines.
        "HASTE_DAGSTER_EXECUTOR": "in_process",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "haste_ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "haste_dagster",
                "ui",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the teardown stops all of it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/server_info", proc, log, timeout=180)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # `dagster dev` shuts its children down on SIGINT
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group (a run worker, a slow child) goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def test_ui_launches_a_materialization_that_succeeds(
    chromium: Path, haste_ui: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        # A fresh profile per test; Playwright only drives the system browser, never its own.
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{haste_ui}/assets/transfer_report")
            # The button's accessible name includes its icon's: "materialization Materialize".
            button = page.get_by_role(
                "button", name=re.compile(r"^(materialization )?Materialize$")
            )
            expect(button).to_be_enabled(timeout=120_000)
            button.click()
            # With upstream assets never materialized the UI first asks to confirm.
            confirm = page.get_by_role("button", name="Confirm")
            launched = page.get_by_text(re.compile(r"Launched run"))
            expect(confirm.or_(launched).first).to_be_visible()
            if confirm.is_visible():
                confirm.click()
            # The "Launched run …" toast has a View button that opens the run.
            expect(launched).to_be_visible()
            page.get_by_text("View", exact=True).click()
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]+.*"))
            # The run page streams the event log; the run must end in RUN_SUCCESS.
            expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible(timeout=240_000)
        finally:
            browser.close()

    runs = _graphql(
        haste_ui,
        "{ runsOrError { ... on Runs { results { status assetSelection { path } } } } }",
    )["runsOrError"]["results"]
    assert [r["status"] for r in runs] == ["SUCCESS"]
    assert runs[0]["assetSelection"] == [{"path": ["transfer_report"]}]
    assert (tmp_path / "artifacts" / "transfer_report.md").exists()

"""End to end: `haste ui` serves the Dagster UI; a materialization launched from the page
in headless Chromium runs through the daemon and succeeds."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from ui_server import CHROMIUM, CHROMIUM_ARGS, UiProcess, graphql

# Fail instead of skip in CI: there a missing browser is a broken setup, not an optional extra.
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("Debian chromium is not installed (/usr/bin/chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture
def haste_ui(launch_ui: Callable[..., UiProcess]) -> str:
    """`haste ui` on a free localhost port with a fresh database; the base URL."""
    ui = launch_ui()
    ui.wait_ready()
    return ui.base


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
            # Under load the launch takes longer than expect's 5 s default.
            expect(confirm.or_(launched).first).to_be_visible(timeout=60_000)
            if confirm.is_visible():
                confirm.click()
            # The "Launched run …" toast has a View button that opens the run.
            expect(launched).to_be_visible(timeout=60_000)
            page.get_by_text("View", exact=True).click()
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]+.*"))
            # The run page streams the event log; the run must end in RUN_SUCCESS.
            expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible(timeout=240_000)
        finally:
            browser.close()

    runs = graphql(
        haste_ui,
        "{ runsOrError { ... on Runs { results { status assetSelection { path } } } } }",
    )["runsOrError"]["results"]
    assert [r["status"] for r in runs] == ["SUCCESS"]
    assert runs[0]["assetSelection"] == [{"path": ["transfer_report"]}]
    assert (tmp_path / "artifacts" / "transfer_report.md").exists()

"""End to end: a skill's lineage read in the Dagster UI, in headless Chromium.

Two tiny competitions of one domain are solved and their shared pattern promoted to a
domain skill, then the first competition is solved again and loads it (in this process,
on the same Dagster storage, while `haste ui` starts). The inventory page then shows the
domain skill with its parents and its loaded/kept counts, and the attempt page what became
of it in that attempt. HASTE_E2E_SCREENSHOTS=<folder> keeps screenshots of both pages."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_competitions import write_tiny_regression
from ui_server import CHROMIUM, CHROMIUM_ARGS, UiProcess

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("Debian chromium is not installed (/usr/bin/chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow

DOMAIN = "tabular_regression"
SLUGS = ("tiny_alpha", "tiny_beta")


def _materialize(db_url: str, dagster_home: Path) -> None:
    from haste_dagster.defs.definitions import build_definitions
    from haste_dagster.defs.instance import dagster_instance
    from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME

    instance = dagster_instance(db_url, dagster_home)
    try:
        defs = build_definitions()
        instance.add_dynamic_partitions(COMPETITION_PARTITIONS_NAME, list(SLUGS))
        solve = defs.resolve_job_def("solve_competition")
        config = {"ops": {"attempt": {"config": {"iterations": 2}}}}
        for slug in SLUGS:
            assert solve.execute_in_process(
                instance=instance, partition_key=slug, run_config=config
            ).success
        promote = defs.resolve_job_def("promote_domain")
        assert promote.execute_in_process(instance=instance, partition_key=DOMAIN).success
        # The warm re-run: tiered loading brings it the new domain skill.
        assert solve.execute_in_process(
            instance=instance, partition_key=SLUGS[0], run_config=config
        ).success
        assert defs.resolve_job_def("refresh_skills").execute_in_process(instance=instance).success
    finally:
        instance.dispose()


def _cells(page, first: str) -> list[str]:  # noqa: ANN001 (playwright Page)
    """The cells of the one innermost table row whose first cell is exactly ``first``."""
    from playwright.sync_api import expect

    row = page.locator("tr:not(:has(tr))").filter(
        has=page.locator("td:first-child", has_text=re.compile(rf"^\s*{first}\s*$"))
    )
    expect(row).to_have_count(1, timeout=60_000)
    return [c.strip() for c in row.locator("td").all_inner_texts()]


def _shoot(page, key: str, path: Path) -> None:  # noqa: ANN001 (playwright Page)
    """A screenshot of one metadata row (the page scrolls inside a panel, not the window)."""
    page.locator("tr").filter(
        has=page.locator("td:first-child", has_text=re.compile(rf"^\s*{key}\s*$"))
    ).first.screenshot(path=str(path))


def test_ui_shows_a_skills_parents_usage_and_its_outcome_in_the_attempt(
    chromium: Path,
    launch_ui: Callable[..., UiProcess],
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from haste_dagster.defs.audit import OUTCOME_COLUMNS, SKILL_COLUMNS
    from haste_dagster.defs.definitions import default_resources

    defs = tmp_path / "defs"
    for seed, slug in enumerate(SLUGS, start=1):
        write_tiny_regression(defs, slug, seed, 300, iterations=3, seconds=300, domain=DOMAIN)
    monkeypatch.setenv("HASTE_COMPETITION_DEFS", str(defs))
    monkeypatch.setenv("HASTE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("HASTE_SKILL_ASSETS", str(tmp_path / "skill_assets"))
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")  # lexical embeddings: no model, fast
    monkeypatch.setenv("HASTE_DAGSTER_PG_URL", "")  # set by prepare_dagster_home, restored after
    ui = launch_ui(defs)  # starts while this process materializes
    _materialize(db_url, tmp_path / "dagster_test")

    with default_resources()["skill_store"].open() as (conn, store):
        domain_skill = store.list(tier="domain", scope_key=DOMAIN)[0]
        warm_attempt = conn.execute(
            "SELECT max(id) AS id FROM attempts WHERE slug = %s", (SLUGS[0],)
        ).fetchone()["id"]
        outcome = next(u for u in store.attempt_usage(warm_attempt) if u["id"] == domain_skill.id)
    assert domain_skill.stats.loaded >= 1 and domain_skill.parent_ids

    ui.wait_ready()
    shots = os.environ.get("HASTE_E2E_SCREENSHOTS")
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1200},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{ui.base}/assets/skill_inventory")
            row = dict(zip(SKILL_COLUMNS, _cells(page, domain_skill.id), strict=True))
            parents = re.search(r"parents ([^·]+)", row["lineage"]).group(1)
            assert set(parents.strip().split(", ")) == set(domain_skill.parent_ids)
            stats = domain_skill.stats
            assert row["usage"].startswith(
                f"loaded {stats.loaded} · applied {stats.applied} · kept {stats.kept} · "
            )
            assert row["lineage"].startswith(f"promotion in run {domain_skill.dagster_run_id}")
            if shots:
                _shoot(page, "skill_table", Path(shots) / "skill_inventory.png")

            page.goto(f"{ui.base}/assets/attempt?partition={SLUGS[0]}")
            # The page shows the warm attempt, the one that loaded the domain skill.
            assert _cells(page, "attempt_id")[-1] == str(warm_attempt)
            cells = dict(zip(OUTCOME_COLUMNS, _cells(page, domain_skill.id), strict=True))
            if outcome["applied"]:
                assert cells["outcome"].startswith(
                    f"applied {outcome['applied']} (iterations "
                ) and f" · kept {outcome['kept']} · " in cells["outcome"]
            else:
                assert cells["outcome"] == "loaded, not applied"
            expect(page.get_by_role("img", name=re.compile("learning curve"))).to_be_visible()
            if shots:
                _shoot(page, "skill_outcomes", Path(shots) / "attempt_outcomes.png")
                _shoot(page, "learning_curve", Path(shots) / "attempt_curve.png")
        finally:
            browser.close()

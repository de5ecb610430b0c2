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


def _rows(page, first: str, count: int | None = 1) -> list[list[str]]:  # noqa: ANN001
    """Cells of the innermost table rows whose first cell is exactly ``first`` (Page)."""
    from playwright.sync_api import expect

    rows = page.locator("tr:not(:has(tr))").filter(
        has=page.locator("td:first-child", has_text=re.compile(rf"^\s*{first}\s*$"))
    )
    expect(rows.first).to_be_visible(timeout=60_000)
    if count is not None:
        expect(rows).to_have_count(count)
    return [[c.strip() for c in row.locator("td").all_inner_texts()] for row in rows.all()]


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

    from haste_dagster.defs.audit import LINEAGE_COLUMNS, OUTCOME_COLUMNS, SKILL_COLUMNS
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
            # Its row in skill_table, then one row per fact in skill_lineage.
            rows = _rows(page, domain_skill.id, count=None)
            (usage,) = [r for r in rows if len(r) == len(SKILL_COLUMNS)]
            row = dict(zip(SKILL_COLUMNS, usage, strict=True))
            stats = domain_skill.stats
            assert (row["tier"], row["loaded"], row["applied"], row["kept"]) == (
                "domain", str(stats.loaded), str(stats.applied), str(stats.kept)
            )
            facts = [tuple(r[1:]) for r in rows if len(r) == len(LINEAGE_COLUMNS)]
            assert {v for f, v in facts if f == "parent"} == set(domain_skill.parent_ids)
            run = domain_skill.dagster_run_id[:8]
            assert ("created by", f"promotion · run {run}") in facts
            if shots:
                for key in ("skill_table", "skill_lineage"):
                    _shoot(page, key, Path(shots) / f"inventory_{key}.png")

            page.goto(f"{ui.base}/assets/attempt?partition={SLUGS[0]}")
            # The page shows the warm attempt, the one that loaded the domain skill.
            assert _rows(page, "attempt_id")[0][-1] == str(warm_attempt)
            cells = dict(zip(OUTCOME_COLUMNS, _rows(page, domain_skill.id)[0], strict=True))
            assert cells["applied"] == str(outcome["applied"])
            assert cells["kept"] == (str(outcome["kept"]) if outcome["applied"] else "")
            expect(page.get_by_role("img", name=re.compile("learning curve"))).to_be_visible()
            if shots:
                _shoot(page, "skill_outcomes", Path(shots) / "attempt_outcomes.png")
                _shoot(page, "learning_curve", Path(shots) / "attempt_curve.png")
        finally:
            browser.close()

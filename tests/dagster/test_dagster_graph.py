"""The whole asset graph, materialized in-process for two tiny competitions against a real
Dagster instance whose storage is the HASTE PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions, EventLogRecord

from haste_dagster import db
from haste_dagster.defs.definitions import build_definitions
from haste_dagster.defs.instance import dagster_instance
from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME

DOMAIN = "tabular_regression"
SLUGS = ("tiny_alpha", "tiny_beta")
ITERATIONS = 2


def _latest(instance: DagsterInstance, asset: str, partition: str | None = None) -> EventLogRecord:
    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=AssetKey(asset), asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    assert records, f"{asset}[{partition}] was never materialized"
    return records[0]


def _metadata(record: EventLogRecord) -> dict[str, Any]:
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _input_pointer(record: EventLogRecord, upstream: str) -> int:
    """The storage id of the upstream materialization this one was computed from."""
    tags = record.asset_materialization.tags or {}
    return int(tags[f"dagster/input_event_pointer/{upstream}"])


@pytest.fixture(scope="module")
def graph_env(
    server_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_defs_writer: Callable
) -> Iterator[dict[str, Any]]:
    """One fresh database and folders for this module (materializing once is the slow part)."""
    url = db.create_database(server_url, f"t_graph_{uuid.uuid4().hex[:8]}")
    root = tmp_path_factory.mktemp("graph")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HASTE_DATABASE_URL", url)
        mp.setenv("HASTE_COMPETITION_DEFS", str(tiny_defs_writer(root / "defs")))
        mp.setenv("HASTE_ARTIFACTS", str(root / "artifacts"))
        mp.setenv("HASTE_SKILL_ASSETS", str(root / "skill_assets"))
        mp.setenv("HASTE_EMBEDDINGS", "hashing")  # lexical embeddings: no model, fast
        mp.setenv("HASTE_DAGSTER_PG_URL", "")  # set by prepare_dagster_home, restored after
        yield {"url": url, "root": root}


@pytest.fixture(scope="module")
def materialized(graph_env: dict[str, Any]) -> Iterator[tuple[DagsterInstance, Definitions]]:
    instance = dagster_instance(graph_env["url"], graph_env["root"] / "dagster")
    defs = build_definitions()  # domains read from the tiny defs folder
    instance.add_dynamic_partitions(COMPETITION_PARTITIONS_NAME, list(SLUGS))
    solve = defs.resolve_job_def("solve_competition")
    attempt_config = {"ops": {"attempt": {"config": {"iterations": ITERATIONS}}}}
    for slug in SLUGS:
        result = solve.execute_in_process(
            instance=instance, partition_key=slug, run_config=attempt_config
        )
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"no_test_rows_in_train": True, "grade_reproducible": True}
    assert (
        defs.resolve_job_def("promote_domain")
        .execute_in_process(instance=instance, partition_key=DOMAIN)
        .success
    )
    refresh = defs.resolve_job_def("refresh_skills").execute_in_process(instance=instance)
    assert refresh.success
    checks = {e.check_name: e.passed for e in refresh.get_asset_check_evaluations()}
    assert checks == {"skills_valid_with_resolvable_lineage": True}
    yield instance, defs
    instance.dispose()


def test_lineage_runs_from_attempt_through_competition_skills_to_domain_skills(
    materialized: tuple[DagsterInstance, Definitions], graph_env: dict[str, Any]
) -> None:
    instance, _ = materialized
    domain = _latest(instance, "domain_skills", DOMAIN)
    with db.connection(graph_env["url"]) as conn:
        for slug in SLUGS:
            attempt = _latest(instance, "attempt", slug)
            skills = _latest(instance, "competition_skills", slug)
            # Dagster's provenance: competition_skills[slug] was computed from attempt[slug].
            assert _input_pointer(skills, "attempt") == attempt.storage_id
            assert _metadata(skills)["attempt_id"] == _metadata(attempt)["attempt_id"]
            # ... and the run that made the attempt is the one recorded in the database.
            row = conn.execute(
                "SELECT dagster_run_id, slug FROM attempts WHERE id = %s",
                (_metadata(attempt)["attempt_id"],),
            ).fetchone()
            assert row == {"dagster_run_id": attempt.run_id, "slug": slug}
            # domain_skills came after (and from) the competition skills of both competitions.
            assert domain.storage_id > skills.storage_id
    # HASTE's lineage, as recorded in the event log: each promoted domain skill names the
    # competition skills it was abstracted from, and they come from both competitions.
    competition_skill_ids = {
        slug: set(_metadata(_latest(instance, "competition_skills", slug))["skill_ids"])
        for slug in SLUGS
    }
    parents = _metadata(domain)["parents"]
    assert parents, "promotion found no pattern shared by the two competitions"
    for parent_ids in parents.values():
        for slug in SLUGS:
            assert set(parent_ids) & competition_skill_ids[slug], f"no parent from {slug}"
    newest_skills = max(
        (_latest(instance, "competition_skills", s) for s in SLUGS), key=lambda r: r.storage_id
    )
    assert _input_pointer(domain, "competition_skills") == newest_skills.storage_id
    assert _input_pointer(_latest(instance, "global_skills"), "domain_skills") == domain.storage_id


def test_materializations_carry_scores_medals_and_the_learning_curve(
    materialized: tuple[DagsterInstance, Definitions],
) -> None:
    instance, _ = materialized
    for slug in SLUGS:
        attempt = _metadata(_latest(instance, "attempt", slug))
        assert attempt["iterations"] == ITERATIONS + 1  # the baseline, then the refinements
        assert 0.0 <= attempt["kept_rate"] <= 1.0
        assert isinstance(attempt["skills_loaded"], list)
        assert Path(attempt["learning_curve_path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert attempt["learning_curve"].startswith("![")
        submission = _metadata(_latest(instance, "submission", slug))
        assert submission["medal"] in {"gold", "silver", "bronze", "none"}
        assert submission["score"] > 0
        assert submission["attempt_id"] == attempt["attempt_id"]
    report = _metadata(_latest(instance, "transfer_report"))
    assert report["attempts"] == len(SLUGS)
    assert all(slug in report["table"] for slug in SLUGS)


def test_skill_inventory_is_exported_as_reviewable_files(
    materialized: tuple[DagsterInstance, Definitions], graph_env: dict[str, Any]
) -> None:
    instance, _ = materialized
    inventory = _metadata(_latest(instance, "skill_inventory"))
    files = sorted((graph_env["root"] / "skill_assets").rglob("*.md"))
    assert inventory["files"] == len(files) == inventory["skills"] > 0
    assert inventory["by_tier"].get("domain", 0) >= 1


def test_nightly_consolidation_job_runs_on_the_same_store(
    materialized: tuple[DagsterInstance, Definitions],
) -> None:
    instance, defs = materialized
    result = defs.resolve_job_def("consolidate_skills").execute_in_process(instance=instance)
    assert result.success
    inventory = _latest(instance, "skill_inventory")
    assert inventory.run_id == result.run_id
    assert "consolidation_passes" in _metadata(inventory)

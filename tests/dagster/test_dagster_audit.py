"""Skill lineage auditable from what the Dagster UI shows: run ids on skills, the per-skill
tables, each attempt's skill outcomes, and the lineage check after the nightly job.

Two tiny competitions of one domain are solved, their pattern promoted, then the first is
solved again, so its second attempt loads the domain skill (loaded/applied/kept counts)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    Definitions,
    EventLogRecord,
)

from haste_dagster import db
from haste_dagster.defs.definitions import build_definitions, default_resources
from haste_dagster.defs.instance import dagster_instance
from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME
from haste_dagster.skills.store import SkillStore

DOMAIN = "tabular_regression"
SLUGS = ("tiny_alpha", "tiny_beta")
RUN_CONFIG = {"ops": {"attempt": {"config": {"iterations": 2}}}}
LINEAGE_CHECK = AssetCheckKey(AssetKey("skill_inventory"), "skills_valid_with_resolvable_lineage")


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


def _row(table: Any, skill_id: str) -> dict[str, Any]:
    """The row of ``skill_id`` in a table metadata value, by column name."""
    rows = [r.data for r in table.records if r.data["id"] == skill_id]
    assert len(rows) == 1, f"{skill_id} is not one row of {table.records}"
    return rows[0]


def _facts(table: Any, skill_id: str) -> list[tuple[str, str]]:
    return [(r.data["fact"], r.data["value"]) for r in table.records if r.data["id"] == skill_id]


@pytest.fixture(scope="module")
def audited(
    server_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_defs_writer: Callable
) -> Iterator[dict[str, Any]]:
    url = db.create_database(server_url, f"t_audit_{uuid.uuid4().hex[:8]}")
    root = tmp_path_factory.mktemp("audit")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HASTE_DATABASE_URL", url)
        mp.setenv("HASTE_COMPETITION_DEFS", str(tiny_defs_writer(root / "defs")))
        mp.setenv("HASTE_ARTIFACTS", str(root / "artifacts"))
        mp.setenv("HASTE_SKILL_ASSETS", str(root / "skill_assets"))
        mp.setenv("HASTE_EMBEDDINGS", "hashing")
        mp.setenv("HASTE_DAGSTER_PG_URL", "")
        instance = dagster_instance(url, root / "dagster")
        defs = build_definitions()
        instance.add_dynamic_partitions(COMPETITION_PARTITIONS_NAME, list(SLUGS))
        solve = defs.resolve_job_def("solve_competition")
        runs: dict[str, Any] = {"solve": []}
        for slug in (*SLUGS, SLUGS[0]):
            result = solve.execute_in_process(
                instance=instance, partition_key=slug, run_config=RUN_CONFIG
            )
            assert result.success
            runs["solve"].append(result.run_id)
            if slug == SLUGS[1]:
                promote = defs.resolve_job_def("promote_domain").execute_in_process(
                    instance=instance, partition_key=DOMAIN
                )
                assert promote.success
                runs["promote"] = promote.run_id
        assert defs.resolve_job_def("refresh_skills").execute_in_process(instance=instance).success
        yield {"url": url, "root": root, "instance": instance, "defs": defs, "runs": runs}
        instance.dispose()


@pytest.fixture
def store(audited: dict[str, Any]) -> Iterator[SkillStore]:
    resource = default_resources()["skill_store"]
    with resource.open() as (_conn, skill_store):
        yield skill_store


def test_each_skill_records_the_run_and_attempt_that_wrote_it_also_in_its_export(
    audited: dict[str, Any], store: SkillStore
) -> None:
    instance, runs = audited["instance"], audited["runs"]
    competition_skills = store.list(tier="competition", status=None)
    assert competition_skills
    for skill in competition_skills:
        extracted_in = skill.dagster_run_id
        attempt_runs = {
            r["dagster_run_id"]
            for r in store.conn.execute(
                "SELECT dagster_run_id FROM attempts WHERE id = %s", (skill.source_attempt,)
            ).fetchall()
        }
        # Extracted by the run that made its attempt (solve_competition runs the chain).
        assert attempt_runs == {extracted_in}, skill.id
        assert extracted_in in runs["solve"]
    domain_skills = store.list(tier="domain", scope_key=DOMAIN, status=None)
    assert domain_skills, "promotion found no pattern shared by the two competitions"
    assert {s.dagster_run_id for s in domain_skills} == {runs["promote"]}
    assert _latest(instance, "domain_skills", DOMAIN).run_id == runs["promote"]
    for skill in [*competition_skills, *domain_skills]:
        exported = next((audited["root"] / "skill_assets").rglob(f"{skill.id}.md")).read_text()
        assert f"dagster_run_id: {skill.dagster_run_id}" in exported
    extracted = competition_skills[0]
    exported = next((audited["root"] / "skill_assets").rglob(f"{extracted.id}.md")).read_text()
    assert f"source_attempt: {extracted.source_attempt}" in exported


def test_inventory_table_lists_each_skill_with_parents_usage_and_run(
    audited: dict[str, Any], store: SkillStore
) -> None:
    inventory = _metadata(_latest(audited["instance"], "skill_inventory"))
    skills = store.list(status=None)
    assert set(inventory["ids"].split()) == {s.id for s in skills}
    domain_skill = max(store.list(tier="domain", scope_key=DOMAIN), key=lambda s: s.stats.loaded)
    # The second attempt of the first competition loaded it (tiered loading: its domain).
    assert domain_skill.stats.loaded >= 1
    stats = domain_skill.stats
    row = _row(inventory["skill_table"], domain_skill.id)
    assert (row["tier"], row["loaded"], row["applied"], row["kept"]) == (
        "domain", stats.loaded, stats.applied, stats.kept
    )
    facts = _facts(inventory["skill_lineage"], domain_skill.id)
    assert {v for f, v in facts if f == "parent"} == set(domain_skill.parent_ids)
    assert ("scope", DOMAIN) in facts
    assert ("created by", f"promotion · run {audited['runs']['promote'][:8]}") in facts
    # Source attempts reach below the parents: the competitions the pattern was seen in.
    for slug in SLUGS:
        assert any(f == "source attempt" and v.endswith(f"({slug})") for f, v in facts), slug
    details = inventory["skill_details"]
    assert f"`{audited['runs']['promote']}`" in details and f"`{domain_skill.id}`" in details
    # domain_skills carries the same story for its own scope (usage as of its materialization,
    # before the warm re-run loaded the skill).
    domain = _metadata(_latest(audited["instance"], "domain_skills", DOMAIN))
    assert _facts(domain["skill_lineage"], domain_skill.id) == facts
    assert _row(domain["skill_table"], domain_skill.id)["loaded"] == 0


def test_attempt_shows_what_became_of_each_loaded_skill_and_its_grade(
    audited: dict[str, Any], store: SkillStore
) -> None:
    instance = audited["instance"]
    record = _latest(instance, "attempt", SLUGS[0])
    attempt = _metadata(record)
    assert record.run_id == audited["runs"]["solve"][-1]  # the warm re-run
    usage = store.attempt_usage(attempt["attempt_id"])
    loaded = {u["id"] for u in usage if u["loaded"]}
    assert set(attempt["skills_loaded"]) == loaded
    assert any(u["tier"] == "domain" for u in usage)
    for use in usage:
        row = _row(attempt["skill_outcomes"], use["id"])
        assert row["applied"] == use["applied"]
        assert row.get("kept") == (use["kept"] if use["applied"] else None)
    assert attempt["skills_applied"] == sum(1 for u in usage if u["applied"])
    assert attempt["skills_kept"] == sum(1 for u in usage if u["kept"])
    assert attempt["skill_outcomes_summary"].startswith(f"{len(loaded)} skills loaded")
    assert len(repr(attempt["best_cv"]).replace(".", "").lstrip("0")) <= 6  # rounded
    # The learning curve is drawn inline (short Markdown), the full PNG one click away.
    assert attempt["learning_curve"].startswith("![")
    assert len(attempt["learning_curve"]) < 1000 < len(attempt["learning_curve_full"])
    # Once graded, the attempt is observed with its hidden-test score and medal.
    observed = instance.fetch_observations(
        AssetRecordsFilter(asset_key=AssetKey("attempt"), asset_partitions=[SLUGS[0]]), limit=1
    ).records[0]
    observation = {k: v.value for k, v in observed.asset_observation.metadata.items()}
    submission = _metadata(_latest(instance, "submission", SLUGS[0]))
    assert observation["attempt_id"] == attempt["attempt_id"] == submission["attempt_id"]
    assert (observation["test_score"], observation["medal"]) == (
        submission["score"],
        submission["medal"],
    )
    assert submission["attempt"] == f"/assets/attempt?partition={SLUGS[0]}"


def test_competition_skills_say_nothing_kept_means_no_skills(audited: dict[str, Any]) -> None:
    from haste_dagster.defs import steps

    resources = default_resources()
    with db.connection(audited["url"]) as conn:
        # An attempt whose one refinement was reverted: nothing to extract.
        attempt_id = conn.execute(
            """INSERT INTO attempts (slug, policy, loading, seed, budget_iterations, status)
               VALUES (%s, 'heuristic', 'tiered', 7, 1, 'finished') RETURNING id""",
            (SLUGS[1],),
        ).fetchone()["id"]
        conn.execute(
            """INSERT INTO iterations (attempt_id, idx, patch, cv_mean, kept, incumbent_before)
               VALUES (%s, 0, NULL, 1.0, true, NULL), (%s, 1, '{"ops": []}', 1.2, false, 1.0)""",
            (attempt_id, attempt_id),
        )
    result = steps.competition_skills_step(SLUGS[1], attempt_id, resources["skill_store"])
    assert result.metadata["skills"] == 0
    assert result.metadata["note"].value.startswith("nothing kept → no skills")
    # The table still lists the competition's skills from earlier attempts.
    earlier = _metadata(_latest(audited["instance"], "competition_skills", SLUGS[1]))["ids"]
    assert set(earlier.split()) <= set(result.metadata["ids"].value.split())


def test_nightly_consolidation_evaluates_the_lineage_check_on_the_new_inventory(
    audited: dict[str, Any], store: SkillStore
) -> None:
    instance: DagsterInstance = audited["instance"]
    defs: Definitions = audited["defs"]
    before = {s.id: (s.version, s.dagster_run_id) for s in store.list(status=None)}
    result = defs.resolve_job_def("consolidate_skills").execute_in_process(instance=instance)
    assert result.success
    # Re-promoting an unchanged pattern is no new version: it keeps the run that wrote it;
    # a version consolidation does write records the consolidation run.
    for skill in store.list(status=None):
        version, run = before.get(skill.id, (None, None))
        expected = run if skill.version == version else result.run_id
        assert skill.dagster_run_id == expected, skill.id
    inventory = _latest(instance, "skill_inventory")
    assert inventory.run_id == result.run_id
    # What the UI reads for the check's status: the latest execution, on this materialization.
    execution = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [LINEAGE_CHECK]
    )[LINEAGE_CHECK]
    assert execution.run_id == result.run_id
    assert execution.status.value == "SUCCEEDED"
    evaluation = execution.event.dagster_event.event_specific_data
    assert evaluation.target_materialization_data.storage_id == inventory.storage_id
    assert evaluation.metadata["skills_checked"].value == len(_metadata(inventory)["ids"].split())


def test_launchpad_scaffold_shows_iterations_loading_and_seed(tmp_path: Path) -> None:
    from dagster._core.snap import JobSnap
    from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

    defs = build_definitions([DOMAIN])
    for job_name in ("solve_competition", "__ASSET_JOB", "campaign"):
        snap = JobSnap.from_job_def(defs.resolve_job_def(job_name))
        schema = snap.config_schema_snapshot
        root = schema.get_config_snap(snap.mode_def_snaps[0].root_config_key)
        # The function behind the launchpad's default config (GraphQL rootDefaultYaml).
        scaffold = default_values_yaml_from_type_snap(schema, root)
        for line in ("iterations: 0", "loading: tiered", "seed: 0", "policy: heuristic"):
            assert line in scaffold, f"{job_name}:\n{scaffold}"

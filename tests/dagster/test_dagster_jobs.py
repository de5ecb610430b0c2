"""Jobs, the nightly schedule, resources and the workspace file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DefaultScheduleStatus, FilesystemIOManager

from haste_dagster.config import PROJECT_ROOT
from haste_dagster.defs.definitions import build_definitions
from haste_dagster.defs.instance import dagster_instance
from haste_dagster.defs.jobs import consolidate_schedule
from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME
from haste_dagster.defs.resources import LLMResource

SLUGS = ("tiny_alpha", "tiny_beta")


def test_campaign_job_solves_every_competition_then_promotes_and_reports(
    tiny_env: dict[str, Path], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    instance = dagster_instance(db_url, tiny_env["dagster_home"])
    defs = build_definitions()
    result = defs.resolve_job_def("campaign").execute_in_process(
        instance=instance, run_config={"ops": {"solve_one": {"config": {"iterations": 1}}}}
    )
    assert result.success
    # The campaign adds the partitions it needs, so it works without the sensor having run.
    assert set(instance.get_dynamic_partitions(COMPETITION_PARTITIONS_NAME)) == set(SLUGS)
    materializations = [
        event.step_materialization_data.materialization
        for event in result.get_asset_materialization_events()
    ]
    recorded = {(m.asset_key.to_user_string(), m.partition) for m in materializations}
    for slug in SLUGS:
        for asset in ("competition_data", "attempt", "submission", "competition_skills"):
            assert (asset, slug) in recorded
    assert ("domain_skills", "tabular_regression") in recorded
    assert {
        ("global_skills", None),
        ("skill_inventory", None),
        ("transfer_report", None),
    } <= recorded
    # the protocol's figures: first pass, warm re-run and the retry without skills
    (report,) = [m for m in materializations if m.asset_key.to_user_string() == "transfer_report"]
    summary = report.metadata["campaign"].value
    assert summary["cold_pass"]["attempts"] == len(SLUGS)
    assert summary["rerun_warm"]["attempts"] == summary["rerun_control"]["attempts"]
    assert summary["rerun_warm"]["attempts"] == len(SLUGS) - summary["cold_pass"]["medals"]
    checks = {(e.check_name, e.partition, e.passed) for e in result.get_asset_check_evaluations()}
    assert {("grade_reproducible", slug, True) for slug in SLUGS} <= checks
    # The same asset history the per-partition jobs write: readable per partition.
    attempt = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("attempt"), asset_partitions=["tiny_beta"]), limit=1
    ).records[0]
    assert attempt.run_id == result.run_id
    instance.dispose()


def test_campaign_job_fixes_every_round_two_attempts_skills_before_any_of_them_runs(
    tiny_env: dict[str, Path], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_competitions import write_tiny_regression

    from haste_dagster import db
    from haste_dagster.agents.factory import open_skill_store
    from haste_dagster.competitions.profile import profile_data
    from haste_dagster.competitions.registry import load_competition

    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    defs = tiny_env["defs"].parent / "three_defs"
    for seed, slug in enumerate(("tiny_a", "tiny_b", "tiny_c"), start=1):
        write_tiny_regression(defs, slug, seed=seed, rows=300, iterations=6)
    monkeypatch.setenv("HASTE_COMPETITION_DEFS", str(defs))
    instance = dagster_instance(db_url, tiny_env["dagster_home"])
    result = build_definitions().resolve_job_def("campaign").execute_in_process(
        instance=instance, run_config={"ops": {"rerun_phase": {"config": {"rerun": False}}}}
    )
    assert result.success
    with db.connection(db_url) as conn:
        round2 = conn.execute(
            """SELECT id, slug, skills_loaded, dagster_run_id FROM attempts
               WHERE label LIKE %s ORDER BY slug""", (f"campaign:{result.run_id}:round2:%",)
        ).fetchall()
        assert [a["slug"] for a in round2] == ["tiny_b", "tiny_c"]  # run one after the other
        assert all(a["dagster_run_id"] == result.run_id for a in round2)
        learnt_in_round2 = {
            r["id"] for r in conn.execute(
                "SELECT id FROM skills WHERE source_attempt = ANY(%s)",
                ([a["id"] for a in round2],),
            ).fetchall()
        }
        for attempt in round2:
            loaded = {entry["id"] for entry in attempt["skills_loaded"]}
            assert not loaded & learnt_in_round2, attempt["slug"]
        # What the store offers the later attempt now, it did not offer when round 2 began:
        # the phase rule, not luck, kept it out.
        later = load_competition("tiny_c")
        now = open_skill_store(conn).scoped_skills(
            "tiny_c", later.definition.domain, profile_data(later).as_dict(), "tiered"
        )
    assert {s.id for s in now} & learnt_in_round2
    instance.dispose()


def test_a_failed_round_one_promotion_fails_the_campaign_run_and_names_the_competition(
    tiny_env: dict[str, Path], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from haste_dagster.agents import orchestrator
    from haste_dagster.errors import HasteError

    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    promote, calls = orchestrator.promote, []

    def first_promotion_fails(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 1:  # round 1's: the only one before round 2 starts
            raise HasteError("injected: the store went away")
        return promote(*args, **kwargs)

    monkeypatch.setattr(orchestrator, "promote", first_promotion_fails)
    instance = dagster_instance(db_url, tiny_env["dagster_home"])
    # Outputs pickled between ops, as every executor but the in-process one does: an op's
    # input is then its own copy, and marking it reaches no later op.
    result = build_definitions().resolve_job_def("campaign").execute_in_process(
        instance=instance, raise_on_error=False,
        resources={"io_manager": FilesystemIOManager(base_dir=str(tiny_env["dagster_home"]))},
        run_config={"ops": {"solve_one": {"config": {"iterations": 1}},
                            "rerun_phase": {"config": {"rerun": False}}}},
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "promote_and_report"
    data = failure.event_specific_data
    assert "1 of 2 competition attempts failed" in data.error.message
    failed = data.user_failure_data.metadata["failed"].value
    assert set(failed) == {"tiny_alpha"} and "injected" in failed["tiny_alpha"]
    assert len(calls) >= 2  # round 2 and the report still ran after the failure
    instance.dispose()


def test_nightly_consolidation_schedule_is_on_by_default_at_3am(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HASTE_CONSOLIDATE_CRON", raising=False)
    schedule = consolidate_schedule()
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "consolidate_skills"


def test_consolidation_cron_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASTE_CONSOLIDATE_CRON", "30 1 * * 0")
    assert consolidate_schedule().cron_schedule == "30 1 * * 0"
    monkeypatch.setenv("HASTE_CONSOLIDATE_CRON", "every night")
    with pytest.raises(ValueError, match="HASTE_CONSOLIDATE_CRON"):
        consolidate_schedule()


def test_llm_resource_describes_the_endpoint_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://user:hunter2@llm.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("HASTE_LLM_MODEL", "some-model")
    described = LLMResource().describe()
    assert described["model"] == "some-model"
    text = repr(described) + repr(LLMResource().model_dump())
    assert "hunter2" not in text and "sk-very-secret" not in text


LOOPBACK = "http://127.0.0.1:9/v1"  # never called: the test only builds the policy


def test_llm_resource_builds_its_policies_with_the_one_factory_and_its_own_env_vars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from haste_dagster.agents.heuristic import HeuristicPolicy
    from haste_dagster.agents.llm_policy import LLMPolicy
    from haste_dagster.errors import ConfigError

    env = {"HASTE_LLM_MODEL": "default", "MY_MODEL": "resource-model", "MY_BASE_URL": LOOPBACK}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    resource = LLMResource(model_env="MY_MODEL", base_url_env="MY_BASE_URL")
    policy = resource.policy("llm", None, campaign_id="c1")  # type: ignore[arg-type]
    assert isinstance(policy, LLMPolicy)
    assert policy.client.config.model == "resource-model"  # the resource's variable wins
    assert policy.client.config.base_url == LOOPBACK
    assert isinstance(resource.policy("heuristic", None), HeuristicPolicy)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown policy 'nope'"):  # make_policy's own error
        resource.policy("nope", None)  # type: ignore[arg-type]


def test_workspace_yaml_passes_dagster_definitions_validate(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr

"""The distributed attempt job: its graph, an in-process run, and op outputs in Postgres."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Failure,
    build_input_context,
    build_output_context,
)
from dist_helpers import SLUG, run_config

from haste_dagster import db
from haste_dagster.defs.distributed import (
    PostgresJsonIOManager,
    build_distributed_attempt_job,
    job_shape_from_env,
)
from haste_dagster.defs.executors import ExecutorConfigError, TrainingRouting
from haste_dagster.defs.lineage import latest_attempt_id
from haste_dagster.defs.resources import DatabaseResource


def test_the_graph_fans_out_each_round_and_tags_only_training_steps() -> None:
    distributed = build_distributed_attempt_job(
        rounds=3, candidates=4, routing=TrainingRouting(celery_queue="gpu")
    )
    names = {node.name for node in distributed.graph.nodes}
    expected = {"start_attempt", "train_final_model"}
    for r in (1, 2, 3):
        expected |= {f"propose_candidates_{r}", f"evaluate_candidate_{r}", f"select_round_{r}"}
    assert names == expected
    for name in names:
        tags = distributed.graph.node_named(name).tags
        training = name in ("start_attempt", "train_final_model") or name.startswith("evaluate")
        assert (tags.get("dagster-celery/queue") == "gpu") is training, name
        assert (tags.get("haste/workload") == "train") is training, name
    # An executor named here wins over the Definitions' one (HASTE_DAGSTER_EXECUTOR).
    pinned = build_distributed_attempt_job(rounds=1, candidates=1, executor="in_process")
    assert pinned.executor_def.name == "in_process"


def test_the_job_shape_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASTE_DISTRIBUTED_ROUNDS", "2")
    monkeypatch.setenv("HASTE_DISTRIBUTED_CANDIDATES", "6")
    assert job_shape_from_env() == (2, 6)
    monkeypatch.setenv("HASTE_DISTRIBUTED_CANDIDATES", "0")
    with pytest.raises(ExecutorConfigError, match="HASTE_DISTRIBUTED_CANDIDATES"):
        job_shape_from_env()


def test_an_in_process_run_records_rounds_and_grades_the_final_model(
    dist_env: dict[str, Any], instance: DagsterInstance
) -> None:
    distributed = build_distributed_attempt_job(rounds=2, candidates=2)
    result = distributed.execute_in_process(instance=instance, run_config=run_config(seed=2))
    assert result.success
    final = result.output_for_node("train_final_model")
    assert final["device"] == "cpu"  # no GPU in the test environment: detected, not assumed
    with db.connection(dist_env["db_url"]) as conn:
        iterations = conn.execute(
            "SELECT idx, kept, cv_mean FROM iterations WHERE attempt_id = %s ORDER BY idx",
            (final["attempt_id"],),
        ).fetchall()
        attempt = conn.execute(
            "SELECT status, budget_iterations, test_score, medal, dagster_run_id "
            "FROM attempts WHERE id = %s",
            (final["attempt_id"],),
        ).fetchone()
        stored = conn.execute(
            "SELECT count(*) AS n FROM dagster_io.op_outputs WHERE run_id = %s",
            (result.run_id,),
        ).fetchone()
    assert [r["idx"] for r in iterations] == list(range(len(iterations)))
    assert 1 < len(iterations) <= 5
    for round_rows in (iterations[1:3], iterations[3:5]):
        assert sum(r["kept"] for r in round_rows) <= 1  # at most one kept per round
    assert attempt["status"] == "finished" and attempt["budget_iterations"] == 4
    assert attempt["test_score"] == pytest.approx(final["test_score"])
    assert attempt["medal"] == final["medal"]
    assert attempt["dagster_run_id"] == result.run_id
    assert stored["n"] >= 8  # every op output went through the Postgres IO manager

    devices = {
        event.step_key: event.event_specific_data.metadata["device"].value
        for event in result.all_events
        if event.event_type_value == "STEP_OUTPUT"
        and event.step_key.startswith(("evaluate_candidate", "train_final_model"))
    }
    assert devices and set(devices.values()) == {"cpu"}

    recorded = {
        (e.asset_key.to_user_string(), e.step_materialization_data.materialization.partition)
        for e in result.get_asset_materialization_events()
    }
    assert {("competition_data", SLUG), ("attempt", SLUG), ("submission", SLUG)} <= recorded
    checks = {(c.check_name, c.passed) for c in result.get_asset_check_evaluations()}
    assert ("grade_reproducible", True) in checks
    assert ("no_test_rows_in_train", True) in checks
    # Downstream assets find the attempt as they do after `solve_competition`.
    assert latest_attempt_id(instance, SLUG) == final["attempt_id"]
    assert instance.get_latest_materialization_event(AssetKey("submission")) is not None


def test_op_outputs_round_trip_through_postgres_and_must_be_json(
    dist_env: dict[str, Any],
) -> None:
    manager = PostgresJsonIOManager(database=DatabaseResource())
    value = {"attempt_id": 7, "spec": {"model": {"family": "ridge"}}, "score": 0.25}
    out = build_output_context(step_key="evaluate_candidate_1", name="result", run_id="r1",
                               mapping_key="i3")
    manager.handle_output(out, value)
    manager.handle_output(out, value)  # a retried step overwrites, never duplicates
    loaded = manager.load_input(build_input_context(upstream_output=out))
    assert loaded == value
    with pytest.raises(Failure, match="not plain JSON"):
        manager.handle_output(
            build_output_context(step_key="s", name="result", run_id="r1"), {"x": {1, 2}}
        )
    with pytest.raises(Failure, match="no stored output"):
        manager.load_input(
            build_input_context(
                upstream_output=build_output_context(step_key="s", name="result", run_id="r2")
            )
        )
    with psycopg.connect(dist_env["db_url"]) as conn:
        assert conn.execute("SELECT count(*) FROM dagster_io.op_outputs").fetchone()[0] == 1

"""Dagster's run/event-log/schedule storage on the HASTE PostgreSQL (DESIGN.md, Storage)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
    materialize,
)

from haste_dagster.defs.instance import (
    DAGSTER_PG_URL_ENV,
    dagster_postgres_url,
    prepare_dagster_home,
)


def test_storage_url_uses_psycopg2_and_the_dagster_schema() -> None:
    url = "postgresql://haste:pw@db.example:5432/haste?sslmode=require&options=-cstatement_timeout%3D5000"
    out = dagster_postgres_url(url)
    assert out.startswith("postgresql+psycopg2://haste:pw@db.example:5432/haste?")
    assert "sslmode=require" in out
    # an existing `options` is kept and the search_path appended to it
    assert "options=-cstatement_timeout%3D5000%20-csearch_path%3Ddagster" in out


def test_dagster_yaml_names_the_url_through_an_env_var_only(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DAGSTER_PG_URL_ENV, "")  # restored after the test
    home = prepare_dagster_home(db_url, tmp_path / "dagster")
    text = (home / "dagster.yaml").read_text()
    assert f"env: {DAGSTER_PG_URL_ENV}" in text
    assert "postgresql" not in text and "host=" not in text
    assert os.environ[DAGSTER_PG_URL_ENV].startswith("postgresql+psycopg2://")


def test_dagster_postgres_storage_works_through_the_psycopg2_url(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DAGSTER_PG_URL_ENV, "")
    home = prepare_dagster_home(db_url, tmp_path / "dagster")
    instance = DagsterInstance.from_config(str(home))
    assert type(instance.run_storage).__module__.startswith("dagster_postgres")
    assert type(instance.event_log_storage).__module__.startswith("dagster_postgres")

    parts = DynamicPartitionsDefinition(name="things")
    instance.add_dynamic_partitions("things", ["a"])

    @asset(partitions_def=parts)
    def thing() -> MaterializeResult:
        return MaterializeResult(metadata={"n": 1})

    # Storing events goes through dagster-postgres's NOTIFY: the psycopg 3 driver fails here.
    result = materialize([thing], instance=instance, partition_key="a")
    assert result.success

    # A second instance on the same storage sees the run and the materialization.
    again = DagsterInstance.from_config(str(home))
    assert again.get_run_by_id(result.run_id) is not None
    event = again.get_latest_materialization_event(AssetKey("thing"))
    assert event is not None and event.asset_materialization.partition == "a"
    # ... and the tables are in the `dagster` schema, away from HASTE's own.
    with psycopg.connect(db_url) as conn:
        schemas = {
            r[0]
            for r in conn.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'event_logs'"
            )
        }
    assert schemas == {"dagster"}
    instance.dispose()
    again.dispose()

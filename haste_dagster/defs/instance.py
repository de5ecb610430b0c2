"""The Dagster instance: run, event-log and schedule storage on the HASTE PostgreSQL.

Dagster's tables live in their own schema (``dagster``) of the HASTE database, so they
share the server (embedded by default) without mixing with HASTE's migrated tables.
``dagster.yaml`` names the storage URL only through an environment variable, so a URL
with a password is never written to disk in clear.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from haste_dagster import db
from haste_dagster.config import home_dir, redact

DAGSTER_PG_URL_ENV = "HASTE_DAGSTER_PG_URL"
DAGSTER_SCHEMA = "dagster"
MAX_CONCURRENT_RUNS_ENV = "HASTE_DAGSTER_MAX_RUNS"

_DAGSTER_YAML = """\
# Written by haste (haste_dagster/defs/instance.py) on every `haste ui`; edits are overwritten.
# The storage URL is read from ${env} so a password never lands in this file.
storage:
  postgres:
    postgres_url:
      env: {env}
run_queue:
  max_concurrent_runs: {max_runs}
telemetry:
  enabled: false
nux:
  enabled: false
"""


def default_dagster_home() -> Path:
    return home_dir() / "dagster"


def dagster_postgres_url(database_url: str, schema: str = DAGSTER_SCHEMA) -> str:
    """The URL Dagster's storage should use: psycopg2 driver, ``search_path`` = ``schema``.

    psycopg2 (not psycopg 3) because dagster-postgres's NOTIFY breaks under psycopg 3 with
    SQLAlchemy 2.1 (see db.dagster_storage_url).
    """
    parts = urlsplit(db.dagster_storage_url(database_url))
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = [value for key, value in query if key == "options"]
    rest = [(key, value) for key, value in query if key != "options"]
    merged = " ".join([*options, f"-csearch_path={schema}"])
    return urlunsplit(
        parts._replace(query=urlencode([*rest, ("options", merged)], quote_via=quote))
    )


def ensure_dagster_schema(database_url: str, schema: str = DAGSTER_SCHEMA) -> None:
    try:
        with psycopg.connect(
            db.psycopg_url(database_url), autocommit=True, connect_timeout=10
        ) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    except psycopg.Error as exc:
        raise db.DatabaseError(
            f"cannot create schema {schema!r} for Dagster in {redact(database_url)}: "
            f"{redact(str(exc))}"
        ) from exc


def prepare_dagster_home(database_url: str | None = None, home: Path | None = None) -> Path:
    """Write ``dagster.yaml`` and export the storage URL; returns the folder for DAGSTER_HOME.

    Starts the embedded PostgreSQL when no ``database_url`` is given and none is configured.
    Sets ``HASTE_DAGSTER_PG_URL`` in this process's environment, so child processes
    (webserver, daemon, run workers) inherit it.
    """
    url = database_url or db.database_url()
    ensure_dagster_schema(url)
    os.environ[DAGSTER_PG_URL_ENV] = dagster_postgres_url(url)
    target = (home or default_dagster_home()).resolve()
    target.mkdir(parents=True, exist_ok=True)
    max_runs = int(os.environ.get(MAX_CONCURRENT_RUNS_ENV, "1"))  # attempts are CPU-bound
    (target / "dagster.yaml").write_text(
        _DAGSTER_YAML.format(env=DAGSTER_PG_URL_ENV, max_runs=max_runs)
    )
    return target


def dagster_instance(
    database_url: str | None = None, home: Path | None = None
):  # -> DagsterInstance
    """A DagsterInstance on the HASTE PostgreSQL (prepares DAGSTER_HOME first)."""
    from dagster import DagsterInstance

    target = prepare_dagster_home(database_url, home)
    return DagsterInstance.from_config(str(target))

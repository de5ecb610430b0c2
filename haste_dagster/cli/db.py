"""`haste db ...`: the embedded PostgreSQL and schema."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from haste_dagster import db
from haste_dagster.config import redact

app = typer.Typer(
    help="Database: start/stop the embedded server, migrate, show status.", no_args_is_help=True
)
console = Console()


def _fail(exc: Exception) -> NoReturn:
    # the message is already secret-free (db.DatabaseError); escape: it may quote anything
    Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(code=2) from exc


@app.command()
def start() -> None:
    """Start the embedded PostgreSQL (no-op when HASTE_DATABASE_URL is set) and migrate."""
    try:
        with db.connection() as conn:
            version = db.schema_version(conn)
    except db.DatabaseError as exc:
        _fail(exc)
    console.print(f"database ready, schema version {version}")


@app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL."""
    if not db.using_embedded():
        console.print("HASTE_DATABASE_URL is set; nothing embedded to stop")
        return
    console.print("stopped" if db.stop_embedded() else "not running")


@app.command()
def status() -> None:
    """Show which database is used and its schema version."""
    try:
        url = db.database_url()
        with db.connection(url) as conn:
            version = db.schema_version(conn)
    except db.DatabaseError as exc:
        _fail(exc)
    kind = "embedded" if db.using_embedded() else "external"
    console.print(f"{kind} database {redact(url)}, schema version {version}")

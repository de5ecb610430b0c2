"""`haste ui`: the Dagster webserver and daemon on the HASTE database."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from haste_dagster import db
from haste_dagster.config import PROJECT_ROOT, home_dir, redact

console = Console(stderr=True)
DEFINITIONS_MODULE = "haste_dagster.defs.definitions"


def dagster_dev_command(host: str, port: int, workspace: Path | None = None) -> list[str]:
    """`dagster dev` (webserver + daemon, so schedules and sensors tick) for this project."""
    workspace = workspace or PROJECT_ROOT / "workspace.yaml"
    # An installed (non-checkout) package has no workspace.yaml: load the module directly.
    target = ["-w", str(workspace)] if workspace.exists() else ["-m", DEFINITIONS_MODULE]
    return [sys.executable, "-m", "dagster", "dev", *target, "-h", host, "-p", str(port)]


def prepare_environment() -> dict[str, str]:
    """Start the database if needed, migrate it, write DAGSTER_HOME; the env for `dagster dev`."""
    from haste_dagster.defs.instance import prepare_dagster_home

    url = db.database_url()
    with db.connection(url):
        pass  # migrates the HASTE schema before any run needs it
    dagster_home = prepare_dagster_home(url)
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home)
    env["HASTE_HOME"] = str(home_dir())  # absolute, so every child resolves the same folder
    console.print(f"database {redact(url)}; DAGSTER_HOME {dagster_home}")
    return env


def register(app: typer.Typer) -> None:
    @app.command()
    def ui(
        host: str = typer.Option(
            "127.0.0.1", help="Interface to bind; keep it local unless proxied."
        ),
        port: int = typer.Option(3000, help="Port of the Dagster webserver."),
        defs: Path | None = typer.Option(
            None, help="folder of competition YAMLs (default: HASTE_COMPETITION_DEFS)"
        ),
    ) -> None:
        """Start the Dagster UI (webserver + daemon) with its storage on the HASTE PostgreSQL."""
        try:
            env = prepare_environment()
            if defs is not None:  # the sensor and every step read competitions from here
                env["HASTE_COMPETITION_DEFS"] = str(defs.resolve())
        except db.DatabaseError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from exc
        command = dagster_dev_command(host, port)
        console.print(f"Dagster UI on http://{host}:{port}")
        sys.stdout.flush()
        sys.stderr.flush()
        # exec: signals (Ctrl-C, SIGTERM) reach `dagster dev` directly, which stops its children.
        os.execve(command[0], command, env)

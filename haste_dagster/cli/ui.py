"""`haste ui`: the Dagster webserver on the HASTE database."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass

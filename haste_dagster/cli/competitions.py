"""`haste competitions ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="competitions commands", no_args_is_help=True)

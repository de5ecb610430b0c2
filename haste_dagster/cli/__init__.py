"""The ``haste`` command line: one module per command group, assembled here."""

from __future__ import annotations

import logging

import typer

from haste_dagster.cli import bench, competitions, db, grade, llm, skills, solve, ui

app = typer.Typer(
    name="haste",
    help="HASTE on Dagster: ML-engineering agents that keep what they learn as skills.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)
app.add_typer(competitions.app, name="competitions")
app.add_typer(skills.app, name="skills")
app.add_typer(bench.app, name="bench")
app.add_typer(db.app, name="db")
app.add_typer(llm.app, name="llm")
solve.register(app)  # solve, campaign
grade.register(app)  # grade
app.command("consolidate")(skills.consolidate_command)
ui.register(app)  # ui


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()

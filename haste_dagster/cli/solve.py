"""`haste solve`, `haste campaign`, `haste consolidate`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from haste_dagster import db
from haste_dagster.agents.competition_agent import AttemptConfig
from haste_dagster.config import redact
from haste_dagster.errors import HasteError

console = Console(stderr=True)

MEDAL_STYLE = {
    "gold": "bold yellow",
    "silver": "bold white",
    "bronze": "bold dark_orange",
    "none": "dim",
}


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _iteration_callback(progress: Progress, task_id: Any):
    def report(idx: int, budget: int, row: Any) -> None:
        mark = "kept" if row.kept else ("error" if row.error else "reverted")
        score = "—" if row.cv_mean is None else f"{row.cv_mean:.5g}"
        progress.update(task_id, completed=idx, total=budget, status=f"it {idx}: cv {score} {mark}")

    return report


def _write_json(path: Path | None, payload: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(payload, indent=2, default=str))
        console.print(f"wrote {path}")


def _database_failed(exc: psycopg.Error, then: str) -> db.DatabaseError:
    """A clear, secret-free message for a database failure outside the attempt loop."""
    return db.DatabaseError(
        f"database failure ({type(exc).__name__}): {redact(str(exc)).strip()}. "
        f"Everything recorded before it is kept; when the database is back, {then}"
    )


def _fail(exc: Exception) -> None:
    # escape: messages quote data (column names, values) that may look like rich markup
    console.print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(code=2) from exc


def solve_command(
    slug: str = typer.Argument(..., help="competition slug (a YAML in competition_defs/)"),
    policy: str = typer.Option("heuristic", help="heuristic | llm"),
    loading: str = typer.Option("tiered", help="skill loading mode: tiered | flat | none"),
    iterations: int | None = typer.Option(
        None, help="refinement iterations (default: the competition budget)"
    ),
    seed: int = typer.Option(0, help="random seed (folds and search)"),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="continue the last unfinished or ungraded attempt with the same policy, loading "
        "and seed",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="write the result as JSON here"),
    defs: Path | None = typer.Option(None, help="folder of competition YAMLs"),
) -> None:
    """Solve one competition: refine a spec, grade it on the hidden test, extract skills."""
    from haste_dagster.agents.orchestrator import solve

    if loading not in ("tiered", "flat", "none"):
        _fail(ValueError(f"--loading must be tiered, flat or none, not {loading!r}"))
    config = AttemptConfig(policy=policy, loading=loading, iterations=iterations, seed=seed)  # type: ignore[arg-type]
    try:
        with db.connection() as conn, _progress() as progress:
            task = progress.add_task(slug, total=iterations or 1, status="starting")
            result = solve(
                conn,
                slug,
                config,
                defs_dir=defs,
                resume=resume,
                progress=_iteration_callback(progress, task),
            )
    except HasteError as exc:
        _fail(exc)
    except psycopg.Error as exc:  # e.g. the server stopped while grading or writing skills
        _fail(_database_failed(exc, "rerun with --resume to finish the attempt"))
    payload = result.as_json()
    _write_json(json_out, payload)
    medal = result.grade.medal
    console.print(
        f"[bold]{slug}[/bold]: test {result.grade.score:.5g} "
        f"(rank {result.grade.rank}/{result.grade.n_teams}) "
        f"[{MEDAL_STYLE.get(medal, '')}]{medal}[/] · cv {result.attempt.best_cv:.5g} · "
        f"kept {result.attempt.kept_rate:.0%} · attempt {result.attempt.attempt_id}"
        + (" (resumed)" if result.resumed else "")
    )


def campaign_command(
    policy: str = typer.Option("heuristic", help="heuristic | llm"),
    loading: str = typer.Option("tiered", help="tiered | flat | none"),
    iterations: int | None = typer.Option(
        None, help="iterations per competition (default: each budget)"
    ),
    seed: int = typer.Option(0),
    only: list[str] = typer.Option([], "--only", help="solve only these slugs (repeatable)"),
    json_out: Path | None = typer.Option(None, "--json", help="write all results as JSON here"),
    defs: Path | None = typer.Option(None, help="folder of competition YAMLs"),
) -> None:
    """Solve every bundled competition in order, promoting skills after each; print a table."""
    from haste_dagster.agents.orchestrator import campaign
    from haste_dagster.competitions.registry import load_definitions
    from haste_dagster.config import competition_defs_dir

    definitions, errors = load_definitions(defs or competition_defs_dir())
    for error in errors:
        console.print(f"[yellow]skipping broken definition:[/yellow] {escape(str(error))}")
    slugs = [d.slug for d in definitions if not only or d.slug in only]
    config = AttemptConfig(policy=policy, loading=loading, iterations=iterations, seed=seed)  # type: ignore[arg-type]
    table = Table(title="HASTE campaign")
    for column in ("competition", "metric", "cv", "test", "rank", "medal", "kept", "skills"):
        table.add_column(column)
    try:
        with db.connection() as conn, _progress() as progress:
            overall = progress.add_task("campaign", total=len(slugs), status="")
            current: dict[str, Any] = {}

            def on_start(slug: str) -> None:
                current["task"] = progress.add_task(slug, total=iterations or 1, status="starting")

            def report(idx: int, budget: int, row: Any) -> None:
                _iteration_callback(progress, current["task"])(idx, budget, row)

            def on_done(entry: Any) -> None:
                progress.advance(overall)
                progress.update(current["task"], status="done" if entry.result else "[red]failed")
                # An attempt that stopped early (stagnation, time) leaves its bar short of the
                # budget; stop its clock so the elapsed column shows its own duration.
                progress.stop_task(current["task"])

            entries = campaign(
                conn,
                slugs,
                config,
                defs_dir=defs,
                on_start=on_start,
                on_done=on_done,
                progress=report,
            )
    except HasteError as exc:
        _fail(exc)
    except psycopg.Error as exc:
        _fail(_database_failed(exc, "rerun the campaign"))
    metric_of = {d.slug: d.metric for d in definitions}
    for entry in entries:
        if entry.result is None:
            table.add_row(
                entry.slug, metric_of.get(entry.slug, ""), "", "", "", "[red]failed", "", ""
            )
            continue
        r, g = entry.result, entry.result.grade
        table.add_row(
            entry.slug,
            metric_of[entry.slug],
            f"{r.attempt.best_cv:.4g}",
            f"{g.score:.4g}",
            f"{g.rank}/{g.n_teams}",
            f"[{MEDAL_STYLE.get(g.medal, '')}]{g.medal}[/]",
            f"{r.attempt.kept_rate:.0%}",
            str(len(r.attempt.skills_loaded)),
        )
    Console().print(table)
    medals = sum(1 for e in entries if e.result and e.result.grade.medal != "none")
    Console().print(f"medals: {medals}/{len(entries)}")
    _write_json(json_out, [e.as_json() for e in entries])
    if any(e.error for e in entries):
        for e in entries:
            if e.error:
                console.print(f"[red]{e.slug}[/red]: {escape(e.error)}")
        sys.exit(1)


def register(app: typer.Typer) -> None:
    app.command("solve")(solve_command)
    app.command("campaign")(campaign_command)

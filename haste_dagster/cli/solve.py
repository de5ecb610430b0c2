"""`haste solve`, `haste campaign`, `haste consolidate`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from haste_dagster import db
from haste_dagster.agents.attempts import AttemptConfig
from haste_dagster.config import redact
from haste_dagster.errors import HasteError, NotFoundError

if TYPE_CHECKING:  # the orchestrator loads when a command runs, keeping `haste --help` fast
    from haste_dagster.agents.orchestrator import SolveResult

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


def _step_line(step: Any, seconds: float) -> str:
    """One finished campaign step, for logs: what ran, how it ended, how long it took."""
    if step.error:
        outcome = f"[red]failed[/red]: {escape(str(step.error))}"
    else:
        score = "" if step.score is None else f"test {step.score:.4g}, "
        outcome = f"done, {score}medal {step.medal or 'ungraded'}"
    return f"{step.phase} {step.arm} {step.slug}: {outcome} ({seconds:.0f} s)"


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


DEFS_HELP = "folder of competition YAMLs (default: HASTE_COMPETITION_DEFS or competition_defs/)"


def _result_line(slug: str, result: SolveResult) -> str:
    g = result.grade
    if g.medal is None:
        graded = "[dim]ungraded (no medals: or leaderboard)[/]"
    else:
        graded = f"(rank {g.rank}/{g.n_teams}) [{MEDAL_STYLE.get(g.medal, '')}]{g.medal}[/]"
    return (
        f"[bold]{slug}[/bold]: test {g.score:.5g} {graded} · cv {result.attempt.best_cv:.5g} · "
        f"kept {result.attempt.kept_rate:.0%} · attempt {result.attempt.attempt_id}"
        + (" (resumed)" if result.resumed else "")
    )


def solve_command(
    slug: str = typer.Argument(..., help="competition slug (a YAML in the --defs folder)"),
    policy: str = typer.Option("heuristic", help="heuristic | llm"),
    loading: str = typer.Option("tiered", help="skill loading mode: tiered | flat | none"),
    iterations: int | None = typer.Option(
        None, min=1, help="refinement iterations (default: the competition budget)"
    ),
    seed: int = typer.Option(0, help="random seed (folds and search)"),
    pipeline: str = typer.Option(
        "straight",
        help="straight (default spec refined in one line) | staged (prototype screen, "
        "winner and runner-up branches, ensemble); a resumed attempt keeps its own",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="continue the last unfinished or ungraded attempt with the same policy, loading "
        "and seed",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="write the result as JSON here"),
    submission: Path | None = typer.Option(
        None, "--submission", help="write the hidden-test predictions here as a submission CSV"
    ),
    defs: Path | None = typer.Option(None, help=DEFS_HELP),
) -> None:
    """Solve one competition: refine a spec, grade it on the hidden test, extract skills."""
    from haste_dagster.agents.orchestrator import solve

    if loading not in ("tiered", "flat", "none"):
        _fail(ValueError(f"--loading must be tiered, flat or none, not {loading!r}"))
    if pipeline not in ("straight", "staged"):
        _fail(ValueError(f"--pipeline must be straight or staged, not {pipeline!r}"))
    config = AttemptConfig(
        policy=policy, loading=loading, iterations=iterations, seed=seed,  # type: ignore[arg-type]
        pipeline=pipeline,  # type: ignore[arg-type]
    )
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
    if submission is not None:
        try:
            _write_submission(slug, defs, result.attempt.attempt_id, submission)
        except HasteError as exc:
            _fail(exc)
        payload["submission"] = str(submission)
    _write_json(json_out, payload)
    console.print(_result_line(slug, result))


def _write_submission(slug: str, defs: Path | None, attempt_id: int, path: Path) -> None:
    """The attempt's stored hidden-test predictions, in the sample submission's format."""
    from haste_dagster.agents.records import load_submission
    from haste_dagster.agents.submission import predictions_from_bytes
    from haste_dagster.competitions.registry import load_competition
    from haste_dagster.competitions.submission_file import write_submission

    with db.connection() as conn:
        stored = load_submission(conn, attempt_id)
    if stored is None:
        raise NotFoundError(f"attempt {attempt_id} has no stored predictions")
    write_submission(load_competition(slug, defs), predictions_from_bytes(stored[0]), path)
    console.print(f"wrote {path}")


def campaign_command(
    policy: str = typer.Option("heuristic", help="heuristic | llm"),
    loading: str = typer.Option("tiered", help="loading of the warm attempts: tiered | flat"),
    iterations: int | None = typer.Option(
        None, min=1, help="iterations per competition (default: each budget)"
    ),
    seed: int = typer.Option(0),
    pipeline: str = typer.Option("straight", help="straight | staged (see haste solve)"),
    only: list[str] = typer.Option([], "--only", help="solve only these slugs (repeatable)"),
    json_out: Path | None = typer.Option(None, "--json", help="write all results as JSON here"),
    defs: Path | None = typer.Option(None, help=DEFS_HELP),
    campaign_id: str | None = typer.Option(
        None, "--campaign-id", help="resume this campaign (its id is printed at the end)"
    ),
    rerun: bool = typer.Option(True, "--rerun/--no-rerun", help="run the re-run phase"),
    workers: int = typer.Option(
        1, "--workers", min=1,
        help="worker processes: each phase runs as a work queue, its skills fixed when the "
        "phase begins (the same campaign for any number above 1); 1: one after the other, "
        "promotion after each",
    ),
) -> None:
    """The campaign protocol: round 1 one competition per domain cold, round 2 the rest warm,
    promotion and consolidation between rounds, then a re-run of every competition that did
    not medal, warm and without skills (control), with a new seed."""
    from haste_dagster.agents.campaign import campaign_protocol
    from haste_dagster.competitions.registry import load_definitions
    from haste_dagster.config import competition_defs_dir

    definitions, errors = load_definitions(defs or competition_defs_dir())
    for error in errors:
        console.print(f"[yellow]skipping broken definition:[/yellow] {escape(str(error))}")
    slugs = [d.slug for d in definitions if not only or d.slug in only]
    unknown = sorted(set(only) - {d.slug for d in definitions})
    if unknown:
        folder = defs or competition_defs_dir()
        _fail(ValueError(f"--only names no definition in {folder}: {unknown} (see --defs)"))
    if pipeline not in ("straight", "staged"):
        _fail(ValueError(f"--pipeline must be straight or staged, not {pipeline!r}"))
    config = AttemptConfig(
        policy=policy, loading=loading, iterations=iterations, seed=seed,  # type: ignore[arg-type]
        pipeline=pipeline,  # type: ignore[arg-type]
        campaign_id=campaign_id,
    )
    table = Table(title="HASTE campaign")
    for column in ("phase", "arm", "competition", "metric", "test", "medal", "attempt"):
        table.add_column(column)
    try:
        with db.connection() as conn, _progress() as progress:
            overall = progress.add_task("campaign", total=len(slugs), status="")
            tasks: dict[int, Any] = {}  # one bar per step; several run at once with workers

            def on_start(step: Any) -> None:
                # Re-run steps are only known once the first pass is graded: grow the total.
                progress.update(overall, total=max(len(slugs), len(tasks) + 1))
                tasks[id(step)] = progress.add_task(
                    f"{step.phase} {step.arm} {step.slug}", total=iterations or 1,
                    status="starting" if workers == 1 else "running in a worker",
                )

            def report(idx: int, budget: int, row: Any) -> None:  # in-process steps only
                _iteration_callback(progress, tasks[next(reversed(tasks))])(idx, budget, row)

            def on_done(step: Any) -> None:
                task = tasks[id(step)]
                progress.advance(overall)
                progress.update(task, status="[red]failed" if step.error else "done")
                # An attempt that stopped early (stagnation, time) leaves its bar short of the
                # budget; stop its clock so the elapsed column shows its own duration.
                progress.stop_task(task)
                if not console.is_terminal:  # bars are drawn only at the end off a terminal
                    elapsed = next(t.elapsed for t in progress.tasks if t.id == task)
                    console.print(_step_line(step, elapsed or 0.0))

            run = campaign_protocol(
                conn, slugs, config, defs_dir=defs, rerun=rerun, workers=workers,
                database_url=db.database_url() if workers > 1 else None,
                on_start=on_start, on_done=on_done, progress=report,
            )
    except HasteError as exc:
        _fail(exc)
    except psycopg.Error as exc:
        _fail(_database_failed(exc, "rerun the campaign"))
    metric_of = {d.slug: d.metric for d in definitions}
    for step in run.steps:
        style = MEDAL_STYLE.get(step.medal or "", "")
        medal = (
            "[red]failed" if step.error
            else f"[{style}]{step.medal}[/]" if step.medal else "ungraded"
        )
        table.add_row(
            step.phase, step.arm, step.slug, metric_of.get(step.slug, ""),
            "" if step.score is None else f"{step.score:.4g}", medal,
            "" if step.attempt_id is None else str(step.attempt_id)
            + (" (reused)" if step.reused else ""),
        )
    Console().print(table)
    summary = run.summary()
    for key in ("cold_pass", "rerun_warm", "rerun_control"):
        Console().print(f"{key} medals: {summary[key]['medals']}/{summary[key]['attempts']}")
    Console().print(f"inventory: {run.inventory.get('by_tier', {})}; campaign id {run.campaign_id}")
    _write_json(json_out, run.as_json())
    if any(s.error for s in run.steps):
        for s in run.steps:
            if s.error:
                console.print(f"[red]{s.slug}[/red]: {escape(s.error)}")
        sys.exit(1)


def register(app: typer.Typer) -> None:
    app.command("solve")(solve_command)
    app.command("campaign")(campaign_command)

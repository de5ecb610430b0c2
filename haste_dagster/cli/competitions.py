"""`haste competitions ...` commands: list the bundled competitions, show one with its profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from haste_dagster.errors import CompetitionDefError, HasteError

if TYPE_CHECKING:  # the loaders import pandas: only when a command runs
    from haste_dagster.competitions.registry import Competition

app = typer.Typer(
    help="Competitions: list them, show one with its data profile, import from MLE-bench.",
    no_args_is_help=True,
)
DEFS_HELP = "folder of competition YAMLs (default: HASTE_COMPETITION_DEFS or competition_defs/)"

out = Console()


def _summary(competition: Competition) -> dict[str, Any]:
    d = competition.definition
    return {
        "slug": d.slug,
        "title": d.title,
        "domain": d.domain,
        "task": d.task,
        "metric": d.metric,
        "higher_is_better": competition.metric.higher_is_better,
        "rows": competition.n_rows,
        "train_rows": len(competition.train),
        "test_rows": len(competition.test_features),
        "features": len(competition.problem.feature_columns),
        "frozen": competition.frozen,
        "leaderboard": d.leaderboard_path.is_file() or d.medals is not None,
        "warnings": competition.warnings,
    }


def _report(errors: list[CompetitionDefError]) -> None:
    for exc in errors:
        field = exc.field or "-"
        # Plain, unwrapped lines: one per broken file, easy to grep.
        typer.echo(f"error: {exc.path} [field {field}]: {exc.message}", err=True)


@app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="print a JSON array"),
    defs: Path | None = typer.Option(None, help=DEFS_HELP),
) -> None:
    """List competitions; broken definitions are reported on stderr with file and field."""
    from haste_dagster.competitions.definition import load_definitions
    from haste_dagster.competitions.registry import load_competition_path

    definitions, errors = load_definitions(defs)
    # load_definitions has built (and cached) every competition it returns.
    rows = [_summary(load_competition_path(d.path)) for d in definitions if d.path is not None]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table(title=f"{len(rows)} competitions")
        table.add_column("slug", no_wrap=True)
        for column in ("domain", "task", "metric", "rows", "medals"):
            justify = "right" if column == "rows" else "left"
            table.add_column(column, justify=justify, overflow="fold")
        for row in rows:
            table.add_row(
                row["slug"],
                row["domain"],
                row["task"],
                row["metric"],
                f"{row['rows']:,}",
                "yes" if row["leaderboard"] else "no",
            )
        out.print(table)
    _report(errors)
    if errors:
        typer.echo(f"{len(errors)} broken definition(s)", err=True)
    if not rows:
        raise typer.Exit(code=1)


def _detail(slug: str, defs: Path | None) -> dict[str, Any]:
    from haste_dagster.competitions.grading import competition_thresholds
    from haste_dagster.competitions.profile import profile_data
    from haste_dagster.competitions.registry import load_competition

    competition = load_competition(slug, defs)
    detail = {
        **_summary(competition),
        "definition": competition.definition.model_dump(mode="json"),
        "problem": competition.problem.model_dump(mode="json"),
        "profile": profile_data(competition).as_dict(),
        "thresholds": None,
    }
    thresholds = competition_thresholds(competition)[0]
    detail["thresholds"] = thresholds.model_dump(mode="json") if thresholds else None
    return detail


@app.command("show")
def show_command(
    slug: str = typer.Argument(..., help="competition slug"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    defs: Path | None = typer.Option(None, help=DEFS_HELP),
) -> None:
    """Show one competition: definition, column roles and the data profile."""
    try:
        detail = _detail(slug, defs)
    except HasteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    if as_json:
        typer.echo(json.dumps(detail, indent=2, default=str))
        return
    d, problem = detail["definition"], detail["problem"]
    out.print(f"[bold]{d['title']}[/bold] ({d['slug']})")
    if d["description"]:
        out.print(d["description"], markup=False)
    facts = Table(show_header=False, box=None)
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("domain / task", f"{d['domain']} / {d['task']}")
    facts.add_row("source", d["source"] + (f"  (prepare: {d['prepare']})" if d["prepare"] else ""))
    facts.add_row("target / metric", f"{d['target']} / {d['metric']}")
    facts.add_row("rows", f"{detail['train_rows']:,} train + {detail['test_rows']:,} hidden test")
    for role in ("numeric", "categorical", "text", "date"):
        if problem[role]:
            facts.add_row(role, ", ".join(problem[role]))
    if problem["classes"]:
        facts.add_row("classes", ", ".join(map(str, problem["classes"])))
    if problem["horizon"]:
        group = f", per {problem['group_column']}" if problem["group_column"] else ""
        steps = f"last {problem['horizon']} steps of {problem['time_column']}{group}"
        facts.add_row("horizon", steps)
    thresholds = detail["thresholds"]
    for note in detail["warnings"]:
        facts.add_row("warning", escape(note))
    facts.add_row(
        "medals",
        "ungraded: no medals: in the YAML and no leaderboard (medal null)"
        if thresholds is None
        else f"gold {thresholds['gold']:.5g}, silver {thresholds['silver']:.5g}, "
        f"bronze {thresholds['bronze']:.5g} ({thresholds['n_teams']} teams)",
    )
    out.print(facts)
    profile = Table(title="profile (training split)")
    profile.add_column("key")
    profile.add_column("value", justify="right")
    for key, value in detail["profile"].items():
        profile.add_row(key, "—" if value is None else str(value))
    out.print(profile)


@app.command("import-mlebench")
def import_mlebench_command(
    competition_dir: Path = typer.Argument(
        ..., help="<data-dir>/<competition-id> as `mlebench prepare` left it"
    ),
    registry: Path | None = typer.Option(
        None,
        "--registry",
        help="<mle-bench checkout>/mlebench/competitions/<id> (config.yaml, leaderboard.csv)",
    ),
    out: Path | None = typer.Option(None, "--out", help=f"where to write the YAML; {DEFS_HELP}"),
    metric: str | None = typer.Option(
        None, "--metric", help="native metric name (default: from config.yaml's grader.name)"
    ),
) -> None:
    """Write a pre-split definition for an MLE-bench competition (nothing is copied)."""
    from haste_dagster.competitions.mlebench import import_mlebench
    from haste_dagster.config import competition_defs_dir

    folder = out or competition_defs_dir()
    try:
        result = import_mlebench(competition_dir, folder, registry=registry, metric=metric)
    except HasteError as exc:
        typer.echo(f"error ({type(exc).__name__}): {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(f"wrote {result.definition}")
    if result.leaderboard is not None:
        typer.echo(f"wrote {result.leaderboard}")
    for note in result.warnings:
        typer.echo(f"warning: {note}", err=True)
    defs_arg = "" if out is None else f" --defs {folder}"
    typer.echo(
        f"next: haste solve {result.slug}{defs_arg} --submission submission.csv, then "
        f"haste grade {result.slug} submission.csv{defs_arg}"
    )

"""`haste competitions ...` commands: list the bundled competitions, show one with its profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from haste_dagster.errors import CompetitionDefError, HasteError

app = typer.Typer(
    help="Competitions: list them, show one with its data profile.", no_args_is_help=True
)

out = Console()


def _summary(competition: Any) -> dict[str, Any]:
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
    }


def _report(errors: list[CompetitionDefError]) -> None:
    for exc in errors:
        field = exc.field or "-"
        # Plain, unwrapped lines: one per broken file, easy to grep.
        typer.echo(f"error: {exc.path} [field {field}]: {exc.message}", err=True)


@app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="print a JSON array"),
    defs: Path | None = typer.Option(None, help="folder of competition YAMLs"),
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
    try:
        detail["thresholds"] = competition_thresholds(competition)[0].model_dump(mode="json")
    except CompetitionDefError:
        pass  # no leaderboard yet: showing the competition is still useful
    return detail


@app.command("show")
def show_command(
    slug: str = typer.Argument(..., help="competition slug"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    defs: Path | None = typer.Option(None, help="folder of competition YAMLs"),
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
    facts.add_row(
        "medals",
        "no leaderboard yet (scripts/build_leaderboards.py)"
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

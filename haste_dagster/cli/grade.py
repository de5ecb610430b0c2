"""`haste grade SLUG submission.csv`: grade an external submission like `mlebench grade-sample`."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from haste_dagster.errors import HasteError

console = Console(stderr=True)


def grade_report(slug: str, submission: Path, defs: Path | None) -> dict[str, Any]:
    """The fields of MLE-bench's ``CompetitionReport`` (thresholds, medal flags, above median,
    validity), plus this project's medal, rank and bootstrap standard error. Ungraded
    competitions (no medals, no leaderboard) report their score with null thresholds and
    medal flags."""
    from haste_dagster.competitions.grading import SCORE_DECIMALS, grade
    from haste_dagster.competitions.registry import load_competition
    from haste_dagster.competitions.submission_file import read_submission

    competition = load_competition(slug, defs)
    result = grade(competition, read_submission(competition, submission))
    t = result.thresholds
    medal = result.medal

    def flag(name: str) -> bool | None:
        return None if medal is None else medal == name

    return {
        "competition_id": slug,
        "score": round(result.score, SCORE_DECIMALS),
        "gold_threshold": t.gold if t else None,
        "silver_threshold": t.silver if t else None,
        "bronze_threshold": t.bronze if t else None,
        "median_threshold": t.median if t else None,
        "any_medal": None if medal is None else medal != "none",
        "gold_medal": flag("gold"),
        "silver_medal": flag("silver"),
        "bronze_medal": flag("bronze"),
        "above_median": result.above_median,
        "submission_exists": True,
        "valid_submission": True,
        "is_lower_better": not competition.metric.higher_is_better,
        "created_at": datetime.now(UTC).isoformat(),
        "submission_path": str(submission),
        "medal": medal,
        "rank": result.rank,
        "n_teams": result.n_teams,
        "bootstrap_se": result.bootstrap_se if math.isfinite(result.bootstrap_se) else None,
    }


def grade_command(
    slug: str = typer.Argument(..., help="competition slug (a YAML in the --defs folder)"),
    submission: Path = typer.Argument(..., help="submission CSV (id column + predictions)"),
    defs: Path | None = typer.Option(None, help="folder of competition YAMLs"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the report here"),
) -> None:
    """Grade a submission CSV on the hidden test split and print the report as JSON."""
    try:
        report = grade_report(slug, submission, defs)
    except HasteError as exc:
        console.print(f"[red]error ({type(exc).__name__}):[/red] {escape(str(exc))}")
        raise typer.Exit(code=2) from exc
    text = json.dumps(report, indent=4)
    typer.echo(text)
    if json_out is not None:
        json_out.write_text(text + "\n")


def register(app: typer.Typer) -> None:
    app.command("grade")(grade_command)

"""The report steps: the transfer report table and the transfer benchmark."""

from __future__ import annotations

from collections import Counter
from typing import Any

from dagster import (
    MetadataValue,
)

from haste_dagster.defs.config import TransferBenchConfig
from haste_dagster.defs.plots import markdown_image
from haste_dagster.defs.resources import (
    ArtifactsResource,
    DatabaseResource,
)
from haste_dagster.defs.steps.result import (
    Log,
    StepResult,
)

# --- reports --------------------------------------------------------------------------------

_LATEST_ATTEMPTS = """
SELECT DISTINCT ON (a.slug, a.policy, a.loading)
       a.id AS attempt_id, a.slug, c.domain, a.policy, a.loading, a.seed, a.best_cv,
       a.test_score, a.medal, (a.result ->> 'kept_rate')::float AS kept_rate,
       jsonb_array_length(a.skills_loaded) AS skills_loaded,
       (SELECT count(*) FROM iterations i WHERE i.attempt_id = a.id) AS iterations,
       a.label, a.finished_at
FROM attempts a LEFT JOIN competitions c ON c.slug = a.slug
WHERE a.status = 'finished' AND a.parent_id IS NULL  -- a multi-target attempt, not its targets
ORDER BY a.slug, a.policy, a.loading, a.id DESC
"""

REPORT_COLUMNS = (
    "slug",
    "domain",
    "policy",
    "loading",
    "attempt_id",
    "iterations",
    "best_cv",
    "test_score",
    "medal",
    "kept_rate",
    "skills_loaded",
)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join(
        "| " + " | ".join(_cell(r.get(c)) for c in columns) + " |\n" for r in rows
    )


def transfer_report_step(database: DatabaseResource, artifacts: ArtifactsResource) -> StepResult:
    """The latest finished attempt per (competition, policy, loading), with grades.

    The transfer benchmark (cold vs warm, loading modes) can extend the same table.
    """
    import csv

    from haste_dagster.agents.campaign import latest_campaign

    with database.connection() as conn:
        rows = [dict(r) for r in conn.execute(_LATEST_ATTEMPTS).fetchall()]
        campaign = latest_campaign(conn)
    table = markdown_table(rows, REPORT_COLUMNS)
    md_path = artifacts.path("transfer_report.md")
    md_path.write_text("# Latest attempts\n\n" + table)
    csv_path = artifacts.path("transfer_report.csv")
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(REPORT_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    medals = Counter(str(r["medal"]) for r in rows if r.get("medal"))
    by_loading: dict[str, dict[str, Any]] = {}
    for loading in sorted({str(r["loading"]) for r in rows}):
        group = [r for r in rows if r["loading"] == loading]
        rates = [r["kept_rate"] for r in group if r["kept_rate"] is not None]
        by_loading[loading] = {
            "attempts": len(group),
            "medals": sum(1 for r in group if r.get("medal") not in (None, "none")),
            "mean_kept_rate": round(sum(rates) / len(rates), 4) if rates else None,
        }
    return StepResult(
        metadata={
            "attempts": len(rows),
            "competitions": len({r["slug"] for r in rows}),
            "medals": MetadataValue.json(dict(medals)),
            "by_loading": MetadataValue.json(by_loading),
            # the newest campaign's protocol figures: first pass (round 1 cold, round 2
            # warm), warm re-run and the retry without skills
            "campaign": MetadataValue.json(
                {"campaign_id": campaign.campaign_id, **campaign.summary()} if campaign else {}
            ),
            "table": MetadataValue.md(table),
            "report_path": MetadataValue.path(str(md_path)),
            "csv_path": MetadataValue.path(str(csv_path)),
        },
        value=rows,
    )


def transfer_benchmark_step(
    config: TransferBenchConfig,
    database: DatabaseResource,
    artifacts: ArtifactsResource,
    run_id: str,
    log: Log,
) -> StepResult:
    """Run the transfer benchmark in throwaway databases; the report's figures, JSON and
    plots become `transfer_report` metadata next to the latest-attempts table."""
    from pathlib import Path

    from haste_dagster.bench.plots import write_plots
    from haste_dagster.bench.transfer import TransferOptions, run_transfer_benchmark, write_json

    overrides: dict[str, Any] = {
        "competitions": config.competitions,
        "evaluation": config.evaluation,
        "defs_dirs": [Path(d) for d in config.defs_dirs],
        "policy": config.policy,
        "pipeline": config.pipeline,
        "campaign_seed": config.campaign_seed,
        "peers": tuple(config.peers),
        "log": log,
    }
    if config.seeds is not None:
        overrides["seeds"] = config.seeds
    if config.iterations is not None:
        overrides["iterations"] = config.iterations
    options = (
        TransferOptions.quick_preset(**overrides)
        if config.quick
        else TransferOptions(**overrides)
    )
    report = run_transfer_benchmark(database.url(), options)
    json_path = write_json(report, artifacts.path("transfer_bench", run_id, "transfer.json"))
    pngs = write_plots(report, json_path.parent)
    result = transfer_report_step(database, artifacts)
    targets = report.targets()
    result.metadata.update(
        {
            "bench_json_path": MetadataValue.path(str(json_path)),
            "warm_cold_iteration_ratio": report.warm_cold_iteration_ratio(),
            "targets": MetadataValue.json(targets),
            "targets_met": sum(1 for t in targets.values() if t["met"]),
            "intervals": MetadataValue.json(report.uncertainty()),
            "proposals": MetadataValue.json(report.proposals()),
            "ablation_medal_rate": MetadataValue.json(
                {mode: s["medal_rate"] for mode, s in report.ablation().items()}
            ),
            "flaml": MetadataValue.json(report.peer_summary().get("flaml", {})),
            **{
                f"plot_{png.stem}": MetadataValue.md(markdown_image(png, png.stem))
                for png in pngs
            },
        }
    )
    result.value = {"json": str(json_path), "plots": [str(p) for p in pngs]}
    return result

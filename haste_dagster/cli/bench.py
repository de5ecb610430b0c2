"""`haste bench ...` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    help="Benchmarks that print figures: the skill store, transfer, the staged pipeline, "
    "Dagster overhead, CPU.",
    no_args_is_help=True,
)


def _split_names(values: list[str]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@contextmanager
def _bench_errors(console: Console) -> Iterator[None]:
    """Bad input (a HasteError) is printed, and the command exits with status 2."""
    from haste_dagster.errors import HasteError

    try:
        yield
    except HasteError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(code=2) from exc


def _write_figures(console: Console, path: Path | None, figures: dict) -> None:
    """The benchmark's figures as JSON at ``path`` (when given)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


@app.command("transfer")
def transfer_command(
    competitions: list[str] = typer.Option(
        [], "--competitions", help="campaign competitions in order (comma-separated or repeated)"
    ),
    evaluation: list[str] = typer.Option(
        [],
        "--eval",
        help="held-out evaluation competitions (default: the preset's, or the "
        "last listed competition of every domain with two or more)",
    ),
    defs: list[Path] = typer.Option(
        [],
        "--defs",
        help="folder of competition YAMLs, searched before the bundled ones "
        "(repeatable); without --competitions every YAML in it takes part",
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", min=1, help="seeds per evaluation (default 3; --quick 1)"
    ),
    iterations: int | None = typer.Option(
        None,
        "--iterations",
        min=1,
        help="refinement iterations per attempt (default: each budget; --quick 10)",
    ),
    campaign_seed: int = typer.Option(
        0,
        "--campaign-seed",
        min=0,
        help="seed of the campaign's attempts; the evaluation seeds start here too, so a "
        "different value is an independent replicate of the whole benchmark",
    ),
    quick: bool = typer.Option(
        False, "--quick", help="CI smoke preset: small tabular competitions, 1 seed"
    ),
    policy: str = typer.Option("heuristic", help="heuristic | llm"),
    pipeline: str = typer.Option(
        "straight", help="straight | staged: every attempt's pipeline (see haste solve)"
    ),
    modes: str = typer.Option("tiered,flat,none", help="loading modes of the ablation"),
    peers: str = typer.Option("flaml", help="peer systems, comma-separated ('' for none)"),
    json_out: Path | None = typer.Option(None, "--json", help="write the report as JSON here"),
    plots: Path | None = typer.Option(None, "--plots", help="write PNG plots into this folder"),
    keep_databases: bool = typer.Option(
        False, "--keep-databases", help="keep the throwaway benchmark databases for inspection"
    ),
    pool: list[Path] = typer.Option(
        [], "--pool",
        help="run nothing: the --json reports of replicates (repeated; e.g. other "
        "--campaign-seed values), each one's pair figures with intervals and all pooled",
    ),
    replay: Path | None = typer.Option(
        None, "--replay",
        help="run only the evaluation again, with this code, on a copy of the campaign store "
        "of this --json report (run with --keep-databases): a paired A/B of a loading, "
        "policy or search change",
    ),
    recount_priors: bool = typer.Option(
        False, "--recount-priors",
        help="with --replay: first count the domains' search priors again with this code",
    ),
) -> None:
    """Transfer benchmark: cold campaign, warm vs cold, loading ablation, kept rate vs
    inventory size, FLAML at the same measured CPU seconds. Runs in throwaway databases."""
    from rich.console import Console

    from haste_dagster import db
    from haste_dagster.bench.transfer import (
        TransferOptions,
        replay_evaluation,
        run_transfer_benchmark,
        write_json,
    )

    console = Console(stderr=True)
    if pool:
        with _bench_errors(console):
            _pool_transfer_reports(console, pool, json_out)
        return
    if replay is not None:
        with _bench_errors(console):
            report = replay_evaluation(
                db.database_url(), _read_report(replay, "transfer", TRANSFER_REPORT_KEYS),
                source=str(replay), recount_priors=recount_priors,
                log=lambda message: console.print(message, highlight=False, markup=False),
            )
        if json_out is not None:
            console.print(f"wrote {write_json(report, json_out)}")
        _print_transfer_summary(report)
        return
    overrides: dict = {
        "competitions": _split_names(competitions),
        "evaluation": _split_names(evaluation),
        "defs_dirs": list(defs),
        "policy": policy,
        "pipeline": pipeline,
        "campaign_seed": campaign_seed,
        "modes": tuple(_split_names([modes])),
        "peers": tuple(_split_names([peers])),
        "keep_databases": keep_databases,
        "log": lambda message: console.print(message, highlight=False, markup=False),
    }
    if seeds is not None:
        overrides["seeds"] = seeds
    if iterations is not None:
        overrides["iterations"] = iterations
    options = TransferOptions.quick_preset(**overrides) if quick else TransferOptions(**overrides)
    with _bench_errors(console):
        report = run_transfer_benchmark(db.database_url(), options)
    if json_out is not None:
        console.print(f"wrote {write_json(report, json_out)}")
    if plots is not None:
        from haste_dagster.bench.plots import write_plots

        for path in write_plots(report, plots):
            console.print(f"wrote {path}")
    _print_transfer_summary(report)


def _print_transfer_summary(report) -> None:  # noqa: ANN001 - TransferReport, imported lazily
    from rich.console import Console
    from rich.table import Table

    def fmt(value: object, pattern: str = "{:.3g}") -> str:
        return "—" if value is None else pattern.format(value)

    out = Console()
    table = Table(title=f"transfer targets ({report.options.policy} policy)")
    for column in ("target", "wanted", "measured", "met"):
        table.add_column(column)
    for name, target in report.targets().items():
        met = target["met"]
        table.add_row(
            name,
            target["target"],
            fmt(target["measured"]),
            "—" if met is None else ("[green]yes[/]" if met else "[red]no[/]"),
        )
    out.print(table)
    for mode, summary in report.ablation().items():
        out.print(
            f"{mode:<7} medal rate {fmt(summary['medal_rate'], '{:.0%}')} "
            f"({summary['medals']}/{summary['graded']}), completion tokens "
            f"{summary['tokens']['completion']}"
        )
    rerun = report.rerun_phase()
    out.print(
        f"campaign first pass medals {rerun['first_pass']['medals']}/"
        f"{rerun['first_pass']['attempts']}; re-run phase: warm "
        f"{rerun['warm']['medals']}/{rerun['warm']['attempts']} vs retry without skills "
        f"{rerun['control']['medals']}/{rerun['control']['attempts']}"
    )
    kept = report.kept_rates()
    out.print(
        f"kept rate: warm {fmt(kept['warm'], '{:.0%}')} vs cold {fmt(kept['cold'], '{:.0%}')}"
    )
    for line in _proposal_lines(report.proposals()):
        out.print(line, highlight=False)
    intervals = report.uncertainty()
    for label, figures in (("warm vs cold", intervals),
                           ("no-transfer reference, cold vs cold of other seeds",
                            intervals["retry_reference"])):
        ratio, never, share, counts, p, kept_ratio = _interval_cells(figures)
        out.print(
            f"{label}, 95% intervals over {figures['pairs']} pairs: iteration ratio {ratio} "
            f"({never} never reached); test score at least as good {share} (better/tied/"
            f"worse {counts}, sign test p {p}); kept-rate ratio {kept_ratio}"
        )
    inv = report.inventory_domains
    out.print(f"inventory by tier {inv.get('by_tier', {})}; domain skills by kind "
              f"{inv.get('domain_by_kind', {})}")
    if report.options.policy == "llm":
        _print_llm_summary(out, report.llm_summary())


def _pool_transfer_reports(console: Console, paths: list[Path], json_out: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from haste_dagster.bench.transfer import (
        check_replicates,
        outcomes_from_json,
        pooled_figures,
        pooled_proposals,
    )
    from haste_dagster.errors import ConfigError

    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise ConfigError(f"--pool {', '.join(twice)} given twice: each replicate counts once")
    reports = {str(path): _read_report(path, "transfer", TRANSFER_REPORT_KEYS) for path in paths}
    check_replicates(reports)
    replicates = {name: outcomes_from_json(report, name) for name, report in reports.items()}
    cold = [a for report in reports.values() for a in report["attempts"] if a["arm"] == "cold"]
    pooled = pooled_figures(replicates, cold)
    pooled["proposals"] = pooled_proposals(
        [report["proposals"] for report in reports.values() if "proposals" in report]
    )
    _write_figures(console, json_out, pooled)
    table = Table(title="transfer figures, 95% intervals (replicates, then pooled)")
    for column in ("report", "pairs", "ratio", "never", "test >= cold", "b/t/w", "sign p",
                   "kept ratio"):
        table.add_column(column)
    rows = [*((Path(name).stem, f) for name, f in pooled["replicates"].items()),
            ("pooled", pooled["pooled"]), ("retry", pooled["retry_reference"])]
    for name, figures in rows:
        table.add_row(name, str(figures["pairs"]), *_interval_cells(figures))
    out = Console()
    out.print(table)
    out.print("ratio: warm/cold evaluations to cold's final CV; never: warm never reached it; "
              "b/t/w: warm test better/tied/worse; retry: cold attempts of other seeds paired "
              "with each other, the no-transfer reference")
    for line in _proposal_lines(pooled["proposals"]):
        out.print(line, highlight=False)


def _proposal_lines(proposals: dict) -> list[str]:
    """One line per evaluation arm: proposals kept by source, the search's moves by what the
    domain's search prior said of them."""
    def cell(tally: dict) -> str:
        rate = "" if tally["rate"] is None else f" ({tally['rate']:.0%})"
        return f"{tally['kept']}/{tally['tried']}{rate}"

    lines = []
    for arm in sorted(proposals):
        table = proposals[arm]
        prior = table["search_by_prior"]
        kinds = ", ".join(f"{kind} {cell(t)}" for kind, t in table["skill_by_kind"].items())
        lines.append(
            f"{arm} proposals kept: skill {cell(table['skill'])}"
            + (f" ({kinds})" if kinds else "") + f", search {cell(table['search'])}"
            + (f", screen {cell(table['screen'])}" if table["screen"]["tried"] else "")
            + f"; search moves the domain's prior had no count for {cell(prior['no_count'])}, "
            f"never kept {cell(prior['never_kept'])}, kept before {cell(prior['kept_before'])}"
        )
    return lines


def _interval_cells(figures: dict) -> list[str]:
    """One row's cells: each figure as ``measured [low, high]``."""
    def cell(key: str, pattern: str) -> str:
        figure = figures.get(key)
        if not figure or figure["measured"] is None:
            return "—"
        text = pattern.format(figure["measured"])
        return text + (f" [{pattern.format(figure['ci'][0])}, {pattern.format(figure['ci'][1])}]"
                       if figure.get("ci") else "")

    share = figures.get("warm_test_at_least_cold_share") or {}
    ratio = figures.get("warm_cold_iteration_ratio") or {}
    p = share.get("sign_test_p")
    return [
        cell("warm_cold_iteration_ratio", "{:.2f}"),
        str(ratio.get("never_reached", "—")),
        cell("warm_test_at_least_cold_share", "{:.0%}"),
        f"{share['better']}/{share['tied']}/{share['worse']}" if share else "—",
        "—" if p is None else f"{p:.2f}",
        cell("warm_cold_kept_rate_ratio", "{:.2f}"),
    ]


def _print_llm_summary(out, summary: dict) -> None:  # noqa: ANN001 - a rich Console
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.0%}"

    def num(value: float | None) -> str:
        return "—" if value is None else f"{value:.0f}"

    table = Table(title="LLM policy (per arm)")
    for column in ("arm", "calls", "valid replies", "iterations", "valid patches",
                   "prompt tok/it", "completion tok/it", "kept", "medals"):
        table.add_column(column)
    for arm, s in [*summary["by_arm"].items(), ("all", summary["overall"])]:
        table.add_row(
            arm, str(s["calls"]), pct(s["valid_reply_rate"]), str(s["iterations"]),
            pct(s["valid_proposal_rate"]), num(s["tokens_per_iteration"]["prompt"]),
            num(s["tokens_per_iteration"]["completion"]), pct(s["kept_rate"]),
            f"{s['medals']}/{s['graded']}",
        )
    out.print(table)
    ratio = summary["flat_over_tiered_completion"]
    tokens = summary["completion_tokens"]
    out.print(
        f"completion tokens: tiered {tokens['tiered']}, flat {tokens['flat']}, flat/tiered "
        + ("—" if ratio is None else f"{ratio:.2f}x") + " (paper: 1.67x)"
    )


@app.command("pipeline")
def pipeline_command(
    competitions: list[str] = typer.Option(
        [], "--competitions", help="competitions (comma-separated or repeated; default: all)"
    ),
    seeds: int = typer.Option(3, "--seeds", help="seeds per competition"),
    iterations: int | None = typer.Option(
        None, "--iterations", help="iterations per attempt (default: each budget)"
    ),
    policy: str = typer.Option("heuristic", help="heuristic | llm"),
    defs: Path | None = typer.Option(None, "--defs", help="folder of competition YAMLs"),
    json_out: Path | None = typer.Option(None, "--json", help="write the report as JSON here"),
    keep_database: bool = typer.Option(
        False, "--keep-database", help="keep the throwaway benchmark database for inspection"
    ),
    merge: list[Path] = typer.Option(
        [], "--merge",
        help="run nothing: merge the --json reports of runs on disjoint competitions "
        "(repeated) and recompute the verdict",
    ),
) -> None:
    """Straight line vs the staged pipeline (screen, two branches, ensemble) at equal
    evaluation budgets: hidden-test score, percentile, medals, CPU seconds, the verdict."""
    from rich.console import Console

    from haste_dagster import db
    from haste_dagster.bench.pipeline import (
        PipelineOptions,
        merge_reports,
        run_pipeline_benchmark,
        write_json,
    )

    console = Console(stderr=True)
    with _bench_errors(console):
        if merge:
            report = merge_reports(
                {path: _read_report(path, "pipeline", PIPELINE_REPORT_KEYS) for path in merge}
            )
        else:
            options = PipelineOptions(
                competitions=_split_names(competitions), seeds=seeds, iterations=iterations,
                policy=policy, defs_dir=defs, keep_database=keep_database,
                log=lambda message: console.print(message, highlight=False, markup=False),
                json_path=json_out,
            )
            report = run_pipeline_benchmark(db.database_url(), options)
    if json_out is not None:
        console.print(f"wrote {write_json(report, json_out)}")
    _print_pipeline_report(report)


PIPELINE_REPORT_KEYS = frozenset({"complete", "options", "per_competition", "runs", "usage"})
TRANSFER_REPORT_KEYS = frozenset({"options", "warm_vs_cold", "attempts"})


def _read_report(path: Path, kind: str, keys: frozenset[str]) -> dict:
    """A benchmark's JSON report (a ``kind`` report has ``keys``), or a ConfigError naming
    the file."""
    from haste_dagster.errors import ConfigError

    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON report ({exc})") from exc
    if not isinstance(report, dict):
        raise ConfigError(f"{path}: not a {kind} report (not a JSON object)")
    missing = keys - set(report)
    if missing:
        raise ConfigError(f"{path}: not a {kind} report (no {', '.join(sorted(missing))})")
    return report


def _print_pipeline_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(value: object) -> str:
        if value is None:
            return "—"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    table = Table(title="straight vs staged (equal evaluations)")
    for column in ("competition", "straight test", "staged test", "± SE", "pct straight",
                   "pct staged", "medals st/sg", "runner-up won", "ensemble kept",
                   "cpu s st/sg", "≥"):
        table.add_column(column)
    for slug, c in report["per_competition"].items():
        st, sg = c["straight"], c["staged"]
        table.add_row(
            slug, fmt(st["test_score"]), fmt(sg["test_score"]), fmt(c["bootstrap_se"]),
            fmt(st["percentile"]), fmt(sg["percentile"]),
            f"{','.join(st['medals'])} / {','.join(sg['medals'])}",
            str(sg["runner_up_won"]), str(sg["ensemble_kept"]),
            f"{fmt(st['cpu_seconds'])} / {fmt(sg['cpu_seconds'])}",
            "yes" if c["better_or_equal"] else "no",
        )
    Console().print(table)
    v = report["verdict"]
    Console().print(
        f"better or equal within one SE: {v['better_or_equal']}/{v['competitions']} "
        f"(needed {v['needed']}); mean percentile straight "
        f"{fmt(v['mean_percentile']['straight'])} vs staged {fmt(v['mean_percentile']['staged'])}"
        f"; target {'met' if v['met'] else 'missed'}"
        + (" (reduced run)" if v["reduced"] else "")
    )


@app.command("store")
def store_command(
    skills: int = typer.Option(10_000, "--skills", min=1, help="synthetic skills to insert"),
    json_out: Path | None = typer.Option(None, "--json", help="write the figures as JSON here"),
    batch: int = typer.Option(1000, "--batch", min=1, help="skills per batched insert"),
    queries: int = typer.Option(200, "--queries", min=2, help="timed queries of each kind"),
    seed: int = typer.Option(0, "--seed", help="random seed of the synthetic inventory"),
    candidate_share: float = typer.Option(
        0.0, "--candidate-share", min=0.0, max=1.0,
        help="share of domain and competition skills that are rules and recipes (the kinds "
        "a tiered load tries from other competitions and domains)",
    ),
) -> None:
    """Skill-store benchmark: insert rate, p50/p95 of a tiered scoped load and of a top-10
    similarity query (HNSW), on N synthetic skills in a throwaway database. Embeddings are
    random unit vectors: this times the store, not an embedding model."""
    from rich.console import Console

    from haste_dagster.bench.store import run_store_bench

    console = Console(stderr=True)

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) < batch:
            console.print(f"inserted {done}/{total}", highlight=False)

    with _bench_errors(console):
        result = run_store_bench(skills, batch=batch, queries=queries, seed=seed,
                                 candidate_share=candidate_share, progress=progress)
    _write_figures(console, json_out, result)
    insert, scoped, similar = result["insert"], result["scoped_load"], result["similar_top10"]
    typer.echo(f"skills: {result['skills']}  (HNSW index used: {result['hnsw_index_used']})")
    typer.echo(f"insert: {insert['skills_per_second']:.0f} skills/s ({insert['seconds']} s)")
    typer.echo(
        f"scoped load (tiered): p50 {scoped['p50_ms']} ms, p95 {scoped['p95_ms']} ms, "
        f"{scoped['mean_skills_returned']} skills on average "
        f"({scoped['mean_candidates_returned']} cross-evaluation candidates)"
    )
    typer.echo(f"similar (top 10): p50 {similar['p50_ms']} ms, p95 {similar['p95_ms']} ms")


@app.command("overhead")
def overhead_command(
    competition: str = typer.Option("concrete_strength", "--competition", help="slug to solve"),
    iterations: int = typer.Option(20, "--iterations", min=1, help="refinement iterations"),
    seed: int = typer.Option(0, "--seed"),
    runs: int = typer.Option(3, "--runs", min=1, help="runs of each form (interleaved)"),
    forms: str = typer.Option(
        "solve,in_process,multiprocess",
        "--forms",
        help="solve plus in_process, multiprocess, multiprocess_spawn",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="write the figures as JSON here"),
) -> None:
    """Dagster's overhead: the same attempt through `haste solve` and materialized as assets
    with the in-process and multiprocess executors, interleaved; wall/CPU seconds, ratios."""
    from rich.console import Console

    from haste_dagster.bench.overhead import OverheadOptions, run_overhead_bench

    console = Console(stderr=True)
    options = OverheadOptions(
        slug=competition,
        iterations=iterations,
        seed=seed,
        runs=runs,
        forms=tuple(_split_names([forms])),
    )
    with _bench_errors(console):
        result = run_overhead_bench(
            options, log=lambda m: console.print(m, highlight=False, markup=False)
        )
    _write_figures(console, json_out, result)
    for form, s in result["summary"].items():
        ratio = result["ratio_to_solve"].get(form)
        extra = f"  x{ratio['wall']} wall, x{ratio['cpu']} cpu" if ratio else ""
        launch = f", launch {s['launch_median']} s" if "launch_median" in s else ""
        typer.echo(
            f"{form:>12}: wall {s['wall_median']} s, cpu {s['cpu_median']} s "
            f"(median of {s['runs']}){launch}{extra}"
        )


@app.command("cpu")
def cpu_command(
    competitions: list[str] = typer.Option(
        [], "--competitions", help="slugs (comma-separated or repeated; default: all bundled)"
    ),
    iterations: int | None = typer.Option(
        None, "--iterations", min=1, help="refinement iterations (default: each budget)"
    ),
    seed: int = typer.Option(0, "--seed"),
    defs: Path | None = typer.Option(None, "--defs", help="folder of competition YAMLs"),
    json_out: Path | None = typer.Option(None, "--json", help="write the figures as JSON here"),
) -> None:
    """CPU seconds per competition (refinement, final fit, grading) with the fold-feature
    cache off and on, same attempt each time; prints a Markdown table."""
    from rich.console import Console

    from haste_dagster.bench.cpu import markdown_table, run_cpu_bench
    from haste_dagster.competitions.registry import load_definitions
    from haste_dagster.config import competition_defs_dir

    console = Console(stderr=True)
    slugs = _split_names(competitions)
    if not slugs:
        definitions, _errors = load_definitions(defs or competition_defs_dir())
        slugs = [d.slug for d in definitions]
    with _bench_errors(console):
        report = run_cpu_bench(
            slugs,
            iterations=iterations,
            seed=seed,
            defs_dir=defs,
            log=lambda m: console.print(m, highlight=False, markup=False),
        )
    _write_figures(console, json_out, report)
    typer.echo(markdown_table(report))

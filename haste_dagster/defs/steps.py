"""What each asset does, as plain functions over the resources.

The assets (defs/assets/) and the `campaign` op job (defs/jobs.py) both call these, so a
competition solved by either path records the same rows and the same metadata.
Every function returns a :class:`StepResult`: Dagster metadata plus check outcomes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
)

from haste_dagster.defs import audit
from haste_dagster.defs.config import AttemptRunConfig, TransferBenchConfig
from haste_dagster.defs.plots import learning_curve_inline, learning_curve_png, markdown_image
from haste_dagster.defs.resources import (
    ArtifactsResource,
    DatabaseResource,
    LLMResource,
    SkillStoreResource,
)

Log = Callable[[str], None]


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR


@dataclass
class StepResult:
    metadata: dict[str, Any]
    checks: list[CheckOutcome] = field(default_factory=list)
    value: Any = None  # what a job's next op needs (e.g. the attempt id); not stored

    def materialize_result(self) -> MaterializeResult:
        return MaterializeResult(
            metadata=self.metadata,
            check_results=[
                AssetCheckResult(
                    check_name=c.name, passed=c.passed, metadata=c.metadata, severity=c.severity
                )
                for c in self.checks
            ],
        )

    def log_events(
        self, context: OpExecutionContext, asset: str, partition: str | None
    ) -> None:
        """What :meth:`materialize_result` says, logged from an op (the op jobs and the
        distributed job run the steps outside an asset)."""
        key = AssetKey(asset)
        context.log_event(
            AssetMaterialization(asset_key=key, partition=partition, metadata=self.metadata)
        )
        for check in self.checks:
            context.log_event(
                AssetCheckEvaluation(
                    asset_key=key,
                    check_name=check.name,
                    passed=check.passed,
                    metadata=check.metadata,
                    severity=check.severity,
                    partition=partition,
                )
            )


def load_competition(slug: str) -> Any:
    from haste_dagster.competitions import load_competition as load

    return load(slug)


# --- per competition --------------------------------------------------------------------


def _record_competition(conn: Any, competition: Any, profile: dict[str, Any]) -> None:
    """Upsert the competitions row (definition + profile) that reports and queries join on."""
    from haste_dagster.agents.records import record_competition

    record_competition(conn, competition, profile)


def competition_data_step(slug: str, database: DatabaseResource) -> StepResult:
    from haste_dagster.competitions import profile_data

    competition = load_competition(slug)
    d = competition.definition
    profile = profile_data(competition).as_dict()
    with database.connection() as conn:
        _record_competition(conn, competition, profile)
    train_ids = set(competition.train["row_id"].tolist())
    test_ids = set(competition.test_features["row_id"].tolist())
    leaked = sorted(train_ids & test_ids)
    return StepResult(
        metadata={
            "domain": d.domain,
            "task": d.task,
            "metric": d.metric,
            "train_rows": len(train_ids),
            "test_rows": len(test_ids),
            "answers_sha256": competition.answers_sha256,
            "profile": MetadataValue.json(profile),
        },
        checks=[
            CheckOutcome(
                "no_test_rows_in_train",
                passed=not leaked,
                metadata={"leaked_rows": len(leaked), "examples": MetadataValue.json(leaked[:10])},
            )
        ],
        value=d.domain,
    )


def run_is_live(instance: DagsterInstance) -> Callable[[Any], bool]:
    """The liveness check of :func:`haste_dagster.agents.records.resumable_attempt` for
    Dagster: a run still going owns its attempt (resuming it would interleave iterations)."""

    def live(attempt: Any) -> bool:
        if attempt.dagster_run_id:
            run = instance.get_run_by_id(attempt.dagster_run_id)
            return run is not None and run.status not in (
                DagsterRunStatus.FAILURE,
                DagsterRunStatus.CANCELED,
            )
        return attempt.status != "failed"  # started outside Dagster (CLI), maybe still running

    return live


def resume_attempt_id(
    instance: DagsterInstance, conn: Any, slug: str, cfg: AttemptRunConfig
) -> int | None:
    """The attempt a run with ``cfg`` continues (``cfg.resume``), by the one resume rule."""
    from haste_dagster.agents import records

    if not cfg.resume:
        return None
    return records.resumable_attempt(conn, slug, cfg, run_is_live=run_is_live(instance))


def attempt_step(
    slug: str,
    cfg: AttemptRunConfig,
    *,
    skill_store: SkillStoreResource,
    llm: LLMResource,
    artifacts: ArtifactsResource,
    instance: DagsterInstance,
    run_id: str,
    log: Log,
) -> StepResult:
    from haste_dagster.agents.competition_agent import AttemptConfig, run_attempt
    from haste_dagster.competitions.grading import competition_thresholds
    from haste_dagster.competitions.registry import check_solvable

    competition = load_competition(slug)
    # Fail before the budget is spent, as `haste solve` does.
    check_solvable(competition)
    competition_thresholds(competition)

    def progress(idx: int, budget: int, row: Any) -> None:
        mark = "kept" if row.kept else ("error" if row.error else "reverted")
        log(f"{slug} iteration {idx}/{budget}: cv {row.cv_mean} {mark}")

    with skill_store.open() as (conn, store):
        resume_id = resume_attempt_id(instance, conn, slug, cfg)
        if resume_id is not None:
            log(f"resuming attempt {resume_id}")
        result = run_attempt(
            conn,
            competition,
            AttemptConfig(
                policy=cfg.policy,
                loading=cfg.loading,
                iterations=cfg.iterations or None,  # 0: the competition's budget
                seed=cfg.seed,
                label=cfg.label,
                pipeline=cfg.pipeline,
            ),
            store=store,
            policy=llm.policy(cfg.policy, conn, campaign_id=run_id),
            dagster_run_id=run_id,
            resume_attempt_id=resume_id,
            progress=progress,
        )
        outcomes = attempt_outcomes(store, result.attempt_id)

    png = learning_curve_png(
        result.iterations,
        artifacts.path(slug, f"attempt_{result.attempt_id}_learning_curve.png"),
        title=f"{slug} · attempt {result.attempt_id} ({result.policy}, {result.loading})",
        higher_is_better=competition.metric.higher_is_better,
    )
    metadata = attempt_metadata(result)
    metadata.update(outcomes)
    metadata.update(
        {
            **learning_curve_metadata(
                result.iterations, png, slug, competition.metric.higher_is_better
            ),
            "learning_curve_path": MetadataValue.path(str(png)),
            "resumed": resume_id is not None,
        }
    )
    if cfg.policy == "llm":
        metadata["llm"] = MetadataValue.json(llm.describe())  # endpoint and model, never the key
    return StepResult(metadata=metadata, value=result.attempt_id)


def learning_curve_metadata(
    iterations: list[Any], png: Any, slug: str, higher_is_better: bool
) -> dict[str, Any]:
    """`learning_curve`: a small inline SVG (the UI shows short Markdown inline); the full
    PNG opens from `learning_curve_full`."""
    direction = "higher" if higher_is_better else "lower"
    alt = f"learning curve of {slug}: CV score per iteration ({direction} is better)"
    inline = learning_curve_inline(iterations, higher_is_better=higher_is_better, alt=alt)
    full = MetadataValue.md(markdown_image(png, f"learning curve of {slug}"))
    return {
        "learning_curve": MetadataValue.md(inline) if inline else full,
        "learning_curve_full": full,
    }


def attempt_outcomes(store: Any, attempt_id: int) -> dict[str, Any]:
    """`attempt` metadata of what became of each loaded skill (applied, kept, delta)."""
    return audit.attempt_outcomes_metadata(store.attempt_usage(attempt_id))


def attempt_metadata(result: Any) -> dict[str, Any]:
    """What the `attempt` asset records of a finished attempt (an AttemptResult), by
    whichever path ran it: the asset, the campaign step or the distributed job."""
    by_tier = Counter(str(entry.get("tier", "?")) for entry in result.skills_loaded)
    metadata: dict[str, Any] = {
        "attempt_id": result.attempt_id,
        "policy": result.policy,
        "loading": result.loading,
        "seed": result.seed,
        "iterations": len(result.iterations),
        "kept_rate": audit.rounded(result.kept_rate, 4),
        "stopped": result.stopped,
        "skills_loaded": MetadataValue.json([entry["id"] for entry in result.skills_loaded]),
        # Skills are versioned: record exactly which version each loaded id was.
        "skills_loaded_versions": MetadataValue.json(
            {entry["id"]: entry.get("version") for entry in result.skills_loaded}
        ),
        "skills_loaded_by_tier": MetadataValue.json(dict(by_tier)),
        "tokens": int(result.prompt_tokens + result.completion_tokens),
    }
    if result.best_cv is not None:
        metadata["best_cv"] = audit.rounded(result.best_cv)
    if result.extra.get("pipeline") == "staged":  # the specialist's stages
        metadata["pipeline"] = "staged"
        metadata["stages"] = MetadataValue.json(
            {k: result.extra.get(k) for k in ("split", "prototypes", "branches", "best_branch")}
        )
        ensemble = result.extra.get("ensemble")
        metadata["ensemble"] = MetadataValue.json(
            None if ensemble is None else {
                "kept": ensemble["kept"], "cv_mean": ensemble["cv_mean"],
                "combine": ensemble["combine"],
                "members": [
                    {k: m[k] for k in ("branch", "idx", "family", "cv_mean")}
                    for m in ensemble["members"]
                ],
            }
        )
        metadata["submission"] = result.extra.get("submission", "single")
    if "fold_cache" in result.extra:  # hits/misses/bytes of the fold-feature cache
        metadata["fold_cache"] = MetadataValue.json(result.extra["fold_cache"])
    return metadata


def submission_step(
    slug: str, attempt_id: int, database: DatabaseResource, device: str | None = None
) -> StepResult:
    """Fit the best spec on all training data, grade it, check the stored grade reproduces.

    ``device`` None: detected where this step runs (a GPU worker trains on CUDA)."""
    from haste_dagster.agents.submission import make_submission, regrade_stored
    from haste_dagster.solution.compile import detect_device

    competition = load_competition(slug)
    device = device or detect_device()
    with database.connection() as conn:
        grade = make_submission(conn, competition, attempt_id, device=device)
        # Read the predictions back from the database and grade them again.
        fresh, stored = regrade_stored(conn, competition, attempt_id)
    stored_score = float(stored["score"])
    same = abs(float(fresh.score) - stored_score) <= 1e-9 * max(1.0, abs(stored_score))
    same = same and fresh.medal == stored["medal"]
    metadata: dict[str, Any] = {
        "attempt_id": attempt_id,
        "attempt": audit.asset_link("attempt", slug),
        "score": audit.rounded(grade.score),
        "medal": str(grade.medal),
        "device": device,
        "n_teams": int(grade.n_teams),
        "bootstrap_se": audit.rounded(grade.bootstrap_se, 3),
    }
    if grade.thresholds is not None:  # None: an ungraded competition (no medals, no board)
        metadata["thresholds"] = MetadataValue.json(grade.thresholds.model_dump(mode="json"))
    if grade.rank is not None:
        metadata["rank"] = int(grade.rank)
    return StepResult(
        metadata=metadata,
        checks=[
            CheckOutcome(
                "grade_reproducible",
                passed=same,
                metadata={
                    "stored_score": stored_score,
                    "regraded_score": float(fresh.score),
                    "stored_medal": str(stored["medal"]),
                    "regraded_medal": str(fresh.medal),
                },
            )
        ],
        value=grade,
    )


def competition_skills_step(
    slug: str, attempt_id: int, skill_store: SkillStoreResource, run_id: str | None = None
) -> StepResult:
    """Extract the attempt's skills (``run_id``: the Dagster run, recorded on each skill)."""
    from haste_dagster.agents.orchestrator import extract_skills

    competition = load_competition(slug)
    with skill_store.open() as (conn, store):
        skills = extract_skills(conn, competition, attempt_id, store, dagster_run_id=run_id)
        audit_metadata = competition_skills_audit(conn, store, slug, attempt_id, skills)
    return StepResult(
        metadata={
            "attempt_id": attempt_id,
            "domain": competition.definition.domain,
            "skills": len(skills),
            "skill_ids": MetadataValue.json([s.id for s in skills]),
            "titles": MetadataValue.md(_skill_list(skills)),
            **audit_metadata,
        },
        value=[s.id for s in skills],
    )


def competition_skills_audit(
    conn: Any, store: Any, slug: str, attempt_id: int, extracted: list[Any]
) -> dict[str, Any]:
    """Why the attempt gave the skills it gave, and every competition skill of ``slug`` so
    far (not only this materialization's) with its lineage and usage."""
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE idx > 0) AS refinements,
                  count(*) FILTER (WHERE idx > 0 AND kept) AS kept
           FROM iterations WHERE attempt_id = %s""",
        (attempt_id,),
    ).fetchone()
    if extracted:
        note = (
            f"attempt {attempt_id} kept {row['kept']} of {row['refinements']} refinements → "
            f"{len(extracted)} competition skills"
        )
    elif row["kept"] == 0:
        note = (
            f"nothing kept → no skills: attempt {attempt_id} kept none of its "
            f"{row['refinements']} refinements, so there was nothing to extract"
        )
    else:
        note = (
            f"no skills: attempt {attempt_id} kept {row['kept']} refinements, but none "
            "improved the score by a finite positive delta"
        )
    every = store.list(tier="competition", scope_key=slug, status=None)
    return {
        "note": MetadataValue.text(note),
        **audit.skills_table_metadata(every),
    }


def _skill_list(skills: list[Any]) -> str:
    return "\n".join(f"- `{s.id}` {s.title}" for s in skills) or "(none)"


# --- skills across competitions -----------------------------------------------------------


def _promotion_result(result: Any, extra: dict[str, Any], tier_skills: list[Any]) -> StepResult:
    skills = result.skills
    return StepResult(
        metadata={
            **extra,
            "skills": len(skills),
            "changed": MetadataValue.json(list(result.changed)),
            "edges_added": int(result.edges_added),
            "conflicts": MetadataValue.json([list(pair) for pair in result.conflicts]),
            "skill_ids": MetadataValue.json([s.id for s in skills]),
            # Lineage one level down: the skills each promoted skill was abstracted from.
            "parents": MetadataValue.json({s.id: list(s.parent_ids) for s in skills}),
            "titles": MetadataValue.md(_skill_list(skills)),
            # Every skill of the tier and scope, with its whole story (not one level).
            **audit.skills_table_metadata(tier_skills),
        },
        value=[s.id for s in skills],
    )


def domain_skills_step(
    domain: str, skill_store: SkillStoreResource, run_id: str | None = None
) -> StepResult:
    """Promote ``domain``'s recurring competition skills (``run_id`` recorded on them)."""
    from haste_dagster.skills.promotion import promote_domain

    with skill_store.open() as (_conn, store):
        result = promote_domain(store, domain, dagster_run_id=run_id)
        every = store.list(tier="domain", scope_key=domain, status=None)
        return _promotion_result(result, {"domain": domain}, every)


def global_skills_step(skill_store: SkillStoreResource, run_id: str | None = None) -> StepResult:
    from haste_dagster.skills.promotion import promote_global

    with skill_store.open() as (_conn, store):
        result = promote_global(store, dagster_run_id=run_id)
        return _promotion_result(result, {}, store.list(tier="global", status=None))


def skill_inventory_step(
    skill_store: SkillStoreResource, artifacts: ArtifactsResource
) -> StepResult:
    """Export every current skill to skill_assets/ (one reviewable Markdown file each)."""
    from haste_dagster.skills import export_skills

    target = artifacts.skill_assets_dir()
    with skill_store.open() as (_conn, store):
        written = export_skills(store, target)
        skills = store.list(status=None)
    by_tier = Counter(s.tier for s in skills)
    by_status = Counter(s.status for s in skills)
    return StepResult(
        metadata={
            "skills": len(skills),
            "by_tier": MetadataValue.json(dict(by_tier)),
            "by_status": MetadataValue.json(dict(by_status)),
            "files": len(written),
            "directory": MetadataValue.path(str(target)),
            **audit.skills_table_metadata(skills),
        },
        value=[str(p) for p in written],
    )


def skills_validity_step(skill_store: SkillStoreResource) -> CheckOutcome:
    """Every current skill re-validates against the schema (same content hash), and its
    lineage resolves: each parent id and each edge endpoint is a stored skill version."""
    from haste_dagster.errors import SkillError
    from haste_dagster.skills.model import validate_skill

    invalid: dict[str, str] = {}
    unresolved: dict[str, list[str]] = {}
    with skill_store.open() as (_conn, store):
        skills = store.list(status=None)
        for skill in skills:
            data = skill.model_dump(mode="json", exclude={"embedding"})
            try:
                again = validate_skill(data, where=f"skill {skill.id} v{skill.version}")
            except SkillError as exc:
                invalid[str(skill.id)] = str(exc)
                continue
            if again.content_hash != skill.content_hash:
                invalid[str(skill.id)] = "stored content hash differs from the content"
            for parent in skill.parent_ids:
                if not _resolves(store, parent, None):
                    unresolved.setdefault(str(skill.id), []).append(parent)
        for edge in store.edges():
            for side in ("src", "dst"):
                if not _resolves(store, edge[f"{side}_id"], edge[f"{side}_version"]):
                    unresolved.setdefault(f"edge:{edge['kind']}", []).append(
                        f"{edge[f'{side}_id']} v{edge[f'{side}_version']}"
                    )
    return CheckOutcome(
        "skills_valid_with_resolvable_lineage",
        passed=not invalid and not unresolved,
        metadata={
            "skills_checked": len(skills),
            "invalid": MetadataValue.json(invalid),
            "unresolved_lineage": MetadataValue.json(unresolved),
        },
    )


def _resolves(store: Any, skill_id: str, version: int | None) -> bool:
    from haste_dagster.errors import SkillError

    try:
        store.get(skill_id, version)
    except SkillError:
        return False
    return True


def consolidate_step(skill_store: SkillStoreResource, run_id: str | None = None) -> StepResult:
    """Merge near-duplicates, retire poor skills, promote (skills.consolidate)."""
    from haste_dagster.skills import consolidate

    with skill_store.open() as (_conn, store):
        report = consolidate(store, dagster_run_id=run_id)
    return StepResult(
        metadata={
            "merged": MetadataValue.json(report.merged),
            "retired": MetadataValue.json(report.retired),
            "promoted": MetadataValue.json(report.promoted),
            "edges_added": int(report.edges_added),
            "passes": int(report.passes),
        },
        value={
            "merged": len(report.merged),
            "retired": len(report.retired),
            "promoted": len(report.promoted),
        },
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

"""Jobs and schedules.

- `solve_competition`: one competition partition's chain (asset job).
- `promote_domain`: one domain's skill promotion (asset job on the domain partitions).
- `refresh_skills`: global skills, the exported inventory and the transfer report.
- `campaign`: the campaign protocol (``campaign.campaign_protocol``): round 1 (one
  competition per domain, cold) fanned out, promotion and consolidation, round 2 (the rest,
  warm) fanned out, promotion and consolidation, then the re-run phase (every competition
  that did not medal, warm and without skills, with a new seed), promotion and the report.
  Asset jobs cannot span assets with different partitions, so this is an op job; each
  competition step records materializations of the same assets and partitions (through the
  same functions as the assets) so lineage and history stay in one place.
- `consolidate_skills` + nightly schedule (cron from HASTE_CONSOLIDATE_CRON).
- `transfer_benchmark`: `haste bench transfer` as a job; its figures and plots are recorded
  on `transfer_report`.
"""

import os
import re
from collections.abc import Sequence

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    AssetSelection,
    Config,
    DefaultScheduleStatus,
    DynamicOut,
    DynamicOutput,
    Failure,
    JobDefinition,
    OpExecutionContext,
    ScheduleDefinition,
    define_asset_job,
    job,
    op,
)
from pydantic import Field

from haste_dagster.defs import audit, steps
from haste_dagster.defs.config import AttemptRunConfig, RerunConfig, TransferBenchConfig
from haste_dagster.defs.executors import training_tags
from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME
from haste_dagster.defs.resources import (
    ArtifactsResource,
    DatabaseResource,
    LLMResource,
    SkillStoreResource,
)

CONSOLIDATE_CRON_ENV = "HASTE_CONSOLIDATE_CRON"
CONSOLIDATE_TZ_ENV = "HASTE_CONSOLIDATE_TZ"
DEFAULT_CONSOLIDATE_CRON = "0 3 * * *"
# Fitting steps: Celery GPU queue / Kubernetes GPU resources when configured (executors.py).
TRAIN_TAGS = training_tags()
COMPETITION_CHAIN = ("competition_data", "attempt", "submission", "competition_skills")

# Partitions are inferred from the selected assets (competition / domain).
solve_competition = define_asset_job(
    name="solve_competition",
    selection=AssetSelection.assets(*COMPETITION_CHAIN),
    description="Solve one competition: load → attempt → submission → competition skills.",
)


promote_domain = define_asset_job(
    name="promote_domain",
    selection=AssetSelection.assets("domain_skills"),
    description="Promote recurring competition skills of one domain to domain skills.",
)


refresh_skills = define_asset_job(
    name="refresh_skills",
    selection=AssetSelection.assets("global_skills", "skill_inventory", "transfer_report"),
    description="Promote global skills, export the inventory, rebuild the transfer report.",
)


# --- campaign -------------------------------------------------------------------------------


class CampaignConfig(Config):
    slugs: list[str] = Field(default_factory=list, description="Empty: every valid definition.")


def _emit_inventory(
    context: OpExecutionContext, result: steps.StepResult, skill_store: SkillStoreResource
) -> None:
    """Record `skill_inventory` and evaluate its lineage check on that materialization, as
    the asset jobs do: an op job re-materializing the inventory must not leave it stale."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    key = AssetKey("skill_inventory")
    context.log_event(AssetMaterialization(asset_key=key, metadata=result.metadata))
    outcome = steps.skills_validity_step(skill_store)
    latest = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key), limit=1
    ).records
    target = (
        AssetCheckEvaluationTargetMaterializationData(
            storage_id=latest[0].storage_id, run_id=latest[0].run_id, timestamp=latest[0].timestamp
        )
        if latest and latest[0].run_id == context.run_id
        else None
    )
    context.log_event(
        AssetCheckEvaluation(
            asset_key=key,
            check_name=outcome.name,
            passed=outcome.passed,
            metadata=outcome.metadata,
            severity=outcome.severity,
            target_materialization_data=target,
        )
    )


def _mapping_key(slug: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", slug)


def _campaign_slugs(context: OpExecutionContext, config: CampaignConfig) -> list[str]:
    from haste_dagster.competitions import load_definitions

    definitions, errors = load_definitions(check_data=False)
    for error in errors:
        context.log.warning(f"skipping broken competition definition: {error}")
    valid = [d.slug for d in definitions]
    unknown = sorted(set(config.slugs) - set(valid))
    if unknown:
        raise Failure(f"no valid definition for: {', '.join(unknown)}")
    slugs = list(config.slugs) or valid
    existing = set(context.instance.get_dynamic_partitions(COMPETITION_PARTITIONS_NAME))
    missing = [s for s in slugs if s not in existing]
    if missing:
        context.instance.add_dynamic_partitions(COMPETITION_PARTITIONS_NAME, missing)
    return slugs


def _rounds(slugs: list[str]) -> tuple[list[str], list[str]]:
    from haste_dagster.agents.campaign import protocol_rounds
    from haste_dagster.competitions.registry import load_competition

    return protocol_rounds(slugs, {s: load_competition(s).definition.domain for s in slugs})


@op(out=DynamicOut(dict), description="Round 1: one competition per domain, cold; adds "
    "missing partitions.")
def campaign_competitions(context: OpExecutionContext, config: CampaignConfig):  # noqa: ANN201
    round1, _ = _rounds(_campaign_slugs(context, config))
    for slug in round1:
        yield DynamicOutput({"slug": slug, "phase": "round1"}, mapping_key=_mapping_key(slug))


def _solve(
    context: OpExecutionContext,
    step: dict,
    config: AttemptRunConfig,
    skill_store: SkillStoreResource,
    llm: LLMResource,
    artifacts: ArtifactsResource,
    database: DatabaseResource,
) -> dict:
    from haste_dagster.agents.campaign import protocol_label
    from haste_dagster.errors import HasteError

    slug = step["slug"]
    # Round 1 is cold: no skills loaded, whatever the store holds. The label ties the
    # attempt to this campaign run (the transfer report reads the protocol back from it).
    arm = "cold" if step["phase"] == "round1" else "warm"
    update: dict = {"label": protocol_label(context.run_id, step["phase"], arm, slug)}
    if step["phase"] == "round1":
        update["loading"] = "none"
    cfg = config.model_copy(update=update)
    try:
        data = steps.competition_data_step(slug, database)
        data.log_events(context, "competition_data", slug)
        if not all(c.passed for c in data.checks):
            raise HasteError(f"{slug}: hidden-test rows found in the training data")
        attempt = steps.attempt_step(
            slug,
            cfg,
            skill_store=skill_store,
            llm=llm,
            artifacts=artifacts,
            instance=context.instance,
            run_id=context.run.run_id,
            log=context.log.info,
        )
        attempt.log_events(context, "attempt", slug)
        submission = steps.submission_step(slug, attempt.value, database)
        submission.log_events(context, "submission", slug)
        context.log_event(audit.grade_observation(slug, attempt.value, submission.value))
        skills = steps.competition_skills_step(
            slug, attempt.value, skill_store, run_id=context.run.run_id
        )
        skills.log_events(context, "competition_skills", slug)
        with skill_store.open() as (conn, store):
            from haste_dagster.agents.orchestrator import promote

            promote(conn, [data.value], store, dagster_run_id=context.run.run_id)
    except (HasteError, ValueError, KeyError) as exc:
        # One broken competition must not stop the campaign; the last op fails the run.
        context.log.error(f"competition {slug} failed: {type(exc).__name__}: {exc}")
        return {"slug": slug, "domain": None, "phase": step["phase"], "medal": None,
                "error": f"{type(exc).__name__}: {exc}"}
    return {"slug": slug, "domain": data.value, "phase": step["phase"],
            "medal": str(submission.value.medal), "error": None}


@op(tags=TRAIN_TAGS, description="Solve one competition as the per-competition assets do.")
def solve_one(
    context: OpExecutionContext,
    step: dict,
    config: AttemptRunConfig,
    database: DatabaseResource,
    skill_store: SkillStoreResource,
    llm: LLMResource,
    artifacts: ArtifactsResource,
) -> dict:
    return _solve(context, step, config, skill_store, llm, artifacts, database)


@op(out=DynamicOut(dict), description="Between rounds: consolidate (merge, retire, promote); "
    "then round 2, the rest of the competitions, warm.")
def round_two_competitions(  # noqa: ANN201
    context: OpExecutionContext,
    config: CampaignConfig,
    solved: list[dict],
    skill_store: SkillStoreResource,
):
    from haste_dagster.skills import consolidate

    with skill_store.open() as (_conn, store):
        consolidate(store)
    _, round2 = _rounds(_campaign_slugs(context, config))
    for slug in round2:
        yield DynamicOutput({"slug": slug, "phase": "round2"}, mapping_key=_mapping_key(slug))


@op(tags=TRAIN_TAGS, description="The re-run phase: every competition that did not medal, "
    "warm and without skills (control), with a new seed; then consolidation.")
def rerun_phase(
    context: OpExecutionContext,
    first: list[dict],
    second: list[dict],
    config: RerunConfig,
    skill_store: SkillStoreResource,
) -> list[dict]:
    from haste_dagster.agents.attempts import AttemptConfig
    from haste_dagster.agents.campaign import RERUN_SEED_OFFSET, protocol_label
    from haste_dagster.agents.orchestrator import promote, solve
    from haste_dagster.errors import HasteError
    from haste_dagster.skills import consolidate

    solved = [*first, *second]
    if not config.rerun:
        return solved
    seed = config.seed + RERUN_SEED_OFFSET
    warm = config.loading if config.loading != "none" else "tiered"
    reruns: list[dict] = []
    with skill_store.open() as (conn, store):
        consolidate(store)
        for entry in [e for e in solved if e["error"] is None and e["medal"] == "none"]:
            for arm, loading in (("warm", warm), ("control", "none")):
                attempt = AttemptConfig(
                    # iterations 0 (the launchpad default): each competition's own budget
                    policy=config.policy, loading=loading, iterations=config.iterations or None,
                    seed=seed, label=protocol_label(context.run_id, "rerun", arm, entry["slug"]),
                )
                try:
                    result = solve(conn, entry["slug"], attempt, extract=arm == "warm",
                                   dagster_run_id=context.run_id)
                    if arm == "warm":
                        promote(conn, [entry["domain"]], store, dagster_run_id=context.run_id)
                    reruns.append({"slug": entry["slug"], "domain": entry["domain"],
                                   "phase": "rerun", "arm": arm, "medal": result.grade.medal,
                                   "error": None})
                except (HasteError, ValueError, KeyError) as exc:
                    context.log.error(f"re-run {arm} {entry['slug']} failed: {exc}")
                    reruns.append({"slug": entry["slug"], "domain": entry["domain"],
                                   "phase": "rerun", "arm": arm, "medal": None,
                                   "error": f"{type(exc).__name__}: {exc}"})
        consolidate(store)
    return [*solved, *reruns]


def build_campaign(domains: Sequence[str]) -> JobDefinition:
    known_domains = set(domains)

    @op(description="Promote per domain and globally, export the inventory, write the report.")
    def promote_and_report(
        context: OpExecutionContext,
        solved: list[dict],
        database: DatabaseResource,
        skill_store: SkillStoreResource,
        artifacts: ArtifactsResource,
    ) -> None:
        for domain in sorted({s["domain"] for s in solved if s["domain"]}):
            result = steps.domain_skills_step(domain, skill_store, run_id=context.run_id)
            # A domain added after the code loaded has no partition yet: record it unpartitioned
            # in the log only, so the asset's partition set stays valid.
            if domain in known_domains:
                result.log_events(context, "domain_skills", domain)
            else:
                context.log.warning(f"domain {domain!r} is new: reload the code location to see it")
        steps.global_skills_step(skill_store, context.run_id).log_events(
            context, "global_skills", None
        )
        _emit_inventory(context, steps.skill_inventory_step(skill_store, artifacts), skill_store)
        report = steps.transfer_report_step(database, artifacts)
        report.log_events(context, "transfer_report", None)
        failed = [s for s in solved if s["error"]]
        if failed:
            raise Failure(
                f"{len(failed)} of {len(solved)} competition attempts failed",
                metadata={"failed": {s["slug"]: s["error"] for s in failed}},
            )

    @job(
        name="campaign",
        description="The campaign protocol: round 1 (one competition per domain, cold), "
        "consolidation, round 2 (the rest, warm), the re-run phase (warm and without skills), "
        "then promotion, the exported inventory and the transfer report.",
    )
    def campaign() -> None:
        first = campaign_competitions().map(solve_one).collect()
        second = round_two_competitions(first).map(solve_one.alias("solve_round_two")).collect()
        promote_and_report(rerun_phase(first, second))

    return campaign


# --- transfer benchmark ----------------------------------------------------------------------


@op(
    tags=TRAIN_TAGS,
    description="Cold campaign, warm vs cold, loading ablation and FLAML in throwaway "
    "databases; records the figures and plots on transfer_report.",
)
def transfer_benchmark_op(
    context: OpExecutionContext,
    config: TransferBenchConfig,
    database: DatabaseResource,
    artifacts: ArtifactsResource,
) -> None:
    result = steps.transfer_benchmark_step(
        config, database, artifacts, context.run_id, log=context.log.info
    )
    result.log_events(context, "transfer_report", None)


@job(
    name="transfer_benchmark",
    description="The transfer benchmark (`haste bench transfer`); quick preset by default.",
)
def transfer_benchmark() -> None:
    transfer_benchmark_op()


# --- consolidation --------------------------------------------------------------------------


@op(description="Dedupe by embedding similarity, merge, retire poor skills, promote, export.")
def consolidate_op(
    context: OpExecutionContext, skill_store: SkillStoreResource, artifacts: ArtifactsResource
) -> None:
    consolidation = steps.consolidate_step(skill_store, run_id=context.run_id)
    context.log.info(f"consolidation: {consolidation.value}")
    inventory = steps.skill_inventory_step(skill_store, artifacts)
    # The inventory changed: record it, with what the consolidation did.
    inventory.metadata.update({f"consolidation_{k}": v for k, v in consolidation.metadata.items()})
    _emit_inventory(context, inventory, skill_store)


@job(name="consolidate_skills", description="Consolidate the skill inventory (nightly).")
def consolidate_skills() -> None:
    consolidate_op()


def consolidate_schedule() -> ScheduleDefinition:
    cron = os.environ.get(CONSOLIDATE_CRON_ENV, DEFAULT_CONSOLIDATE_CRON)
    try:
        return ScheduleDefinition(
            name="nightly_consolidate_skills",
            job=consolidate_skills,
            cron_schedule=cron,
            execution_timezone=os.environ.get(CONSOLIDATE_TZ_ENV, "UTC"),
            default_status=DefaultScheduleStatus.RUNNING,
            description=f"Consolidate skills on cron {cron!r} (set {CONSOLIDATE_CRON_ENV}).",
        )
    except Exception as exc:  # Dagster's message does not name our variable
        raise ValueError(
            f"{CONSOLIDATE_CRON_ENV}={cron!r} is not a valid cron schedule: {exc}"
        ) from exc

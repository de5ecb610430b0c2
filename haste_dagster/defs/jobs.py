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
    Out,
    Output,
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
    for order, slug in enumerate(round1):
        yield DynamicOutput({"slug": slug, "phase": "round1", "order": order},
                           mapping_key=_mapping_key(slug))


def _promote_phase(
    context: OpExecutionContext, solved: list[dict], skill_store: SkillStoreResource
) -> None:
    """Promotion after a phase, as `haste campaign` does it: the domain of every solved
    step, in step order, whichever step finished first."""
    from haste_dagster.agents.orchestrator import promote
    from haste_dagster.errors import HasteError

    with skill_store.open() as (conn, store):
        for entry in sorted(solved, key=lambda e: e["order"]):
            if entry["error"] is not None or entry.get("arm") == "control":
                continue
            try:
                promote(conn, [entry["domain"]], store, dagster_run_id=context.run_id)
            except (HasteError, ValueError, KeyError) as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                context.log.error(f"promotion after {entry['slug']} failed: {entry['error']}")


def _fix_skills(
    context: OpExecutionContext, slug: str, cfg: AttemptRunConfig,
    skill_store: SkillStoreResource,
) -> int | None:
    """The attempt a later step will run, opened with its skills fixed now; None when that
    fails (the step then fails the same way and records why)."""
    from haste_dagster.errors import HasteError

    try:
        return steps.fix_skills_step(slug, cfg, skill_store=skill_store,
                                     instance=context.instance, run_id=context.run_id)
    except (HasteError, ValueError, KeyError) as exc:
        context.log.error(f"could not fix the skills of {slug}: {type(exc).__name__}: {exc}")
        return None


def _step_config(config: AttemptRunConfig, run_id: str, step: dict) -> AttemptRunConfig:
    """``config`` for one campaign step. Round 1 is cold: no skills loaded, whatever the
    store holds. The label ties the attempt to this campaign run (the transfer report reads
    the protocol back from it)."""
    from haste_dagster.agents.campaign import protocol_label

    cold = step["phase"] == "round1"
    label = protocol_label(run_id, step["phase"], "cold" if cold else "warm", step["slug"])
    return config.model_copy(update={"label": label, **({"loading": "none"} if cold else {})})


def _op_config(context: OpExecutionContext, op_name: str) -> AttemptRunConfig:
    """The attempt settings this run's config gives op ``op_name`` (defaults filled in)."""
    raw = ((context.run_config.get("ops") or {}).get(op_name) or {}).get("config") or {}
    return AttemptRunConfig(**raw)


def _solve(
    context: OpExecutionContext,
    step: dict,
    config: AttemptRunConfig,
    skill_store: SkillStoreResource,
    llm: LLMResource,
    artifacts: ArtifactsResource,
    database: DatabaseResource,
) -> dict:
    from haste_dagster.errors import HasteError

    slug = step["slug"]
    cfg = _step_config(config, context.run_id, step)
    outcome = {"slug": slug, "domain": None, "phase": step["phase"], "order": step["order"],
               "medal": None, "error": None}
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
            attempt_id=step.get("attempt_id"),  # round 2: opened with its skills fixed
        )
        attempt.log_events(context, "attempt", slug)
        submission = steps.submission_step(slug, attempt.value, database)
        submission.log_events(context, "submission", slug)
        context.log_event(audit.grade_observation(slug, attempt.value, submission.value))
        skills = steps.competition_skills_step(
            slug, attempt.value, skill_store, run_id=context.run.run_id
        )
        skills.log_events(context, "competition_skills", slug)
    except (HasteError, ValueError, KeyError) as exc:
        # One broken competition must not stop the campaign; the last op fails the run.
        context.log.error(f"competition {slug} failed: {type(exc).__name__}: {exc}")
        return {**outcome, "error": f"{type(exc).__name__}: {exc}"}
    # Promotion waits for the phase to end (`_promote_phase`).
    return {**outcome, "domain": data.value, "medal": str(submission.value.medal)}


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


ROUND_TWO_SOLVER = "solve_round_two"


@op(out={"steps": DynamicOut(dict), "round_one": Out(list)},
    description="Between rounds: promote round 1, consolidate (merge, retire, promote); "
    "then round 2, the rest of the competitions, warm, each attempt opened with its skills "
    "fixed before any of them runs.")
def round_two_competitions(  # noqa: ANN201
    context: OpExecutionContext,
    config: CampaignConfig,
    solved: list[dict],
    skill_store: SkillStoreResource,
):
    from haste_dagster.skills import consolidate

    _promote_phase(context, solved, skill_store)
    # Round 1's outcomes, with any promotion failure now recorded on them, go on to the last
    # op (an op's input is its own copy: marking `solved` alone would not reach it).
    yield Output(solved, output_name="round_one")
    with skill_store.open() as (_conn, store):
        consolidate(store)
    _, round2 = _rounds(_campaign_slugs(context, config))
    # Every round-2 attempt loads the store as it stands now, with the settings its solve
    # step runs with: which step finishes first changes nothing another one loads.
    solver = _op_config(context, ROUND_TWO_SOLVER)
    planned = [{"slug": slug, "phase": "round2", "order": i} for i, slug in enumerate(round2)]
    for step in planned:
        step["attempt_id"] = _fix_skills(
            context, step["slug"], _step_config(solver, context.run_id, step), skill_store
        )
    for step in planned:
        yield DynamicOutput(step, mapping_key=_mapping_key(step["slug"]), output_name="steps")


@op(tags=TRAIN_TAGS, description="Promote round 2 and consolidate; then the re-run phase: "
    "every competition that did not medal, warm and without skills (control), with a new "
    "seed, every attempt's skills fixed first; then promotion and consolidation.")
def rerun_phase(
    context: OpExecutionContext,
    first: list[dict],
    second: list[dict],
    config: RerunConfig,
    skill_store: SkillStoreResource,
) -> list[dict]:
    from haste_dagster.agents.campaign import RERUN_SEED_OFFSET, protocol_label
    from haste_dagster.agents.orchestrator import solve
    from haste_dagster.errors import HasteError
    from haste_dagster.skills import consolidate

    _promote_phase(context, second, skill_store)
    with skill_store.open() as (_conn, store):
        consolidate(store)
    solved = [*first, *second]
    if not config.rerun:
        return solved
    warm = config.loading if config.loading != "none" else "tiered"
    missed = [e for e in solved if e["error"] is None and e["medal"] == "none"]
    plan = [
        ({"slug": e["slug"], "domain": e["domain"], "phase": "rerun", "arm": arm,
          "order": 2 * i + j},
         config.model_copy(update={
             "loading": loading, "seed": config.seed + RERUN_SEED_OFFSET,
             "label": protocol_label(context.run_id, "rerun", arm, e["slug"])}))
        for i, e in enumerate(missed)
        for j, (arm, loading) in enumerate((("warm", warm), ("control", "none")))
    ]
    # As in round 2: every attempt of the phase loads the store as it stands now.
    fixed = [_fix_skills(context, step["slug"], cfg, skill_store) for step, cfg in plan]
    reruns: list[dict] = []
    with skill_store.open() as (conn, _store):
        for (step, cfg), attempt_id in zip(plan, fixed, strict=True):
            try:
                result = solve(conn, step["slug"], steps.attempt_config(cfg),
                               extract=step["arm"] == "warm", dagster_run_id=context.run_id,
                               resume_attempt_id=attempt_id)
                reruns.append({**step, "medal": result.grade.medal, "error": None})
            except (HasteError, ValueError, KeyError) as exc:
                context.log.error(f"re-run {step['arm']} {step['slug']} failed: {exc}")
                reruns.append({**step, "medal": None, "error": f"{type(exc).__name__}: {exc}"})
    _promote_phase(context, reruns, skill_store)
    with skill_store.open() as (_conn, store):
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
        planned, round_one = round_two_competitions(first)
        second = planned.map(solve_one.alias(ROUND_TWO_SOLVER)).collect()
        promote_and_report(rerun_phase(round_one, second))

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

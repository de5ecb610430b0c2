"""The distributed job's ops: start the attempt, propose, evaluate and select each round,
train the final model (the domain logic is ``agents.rounds``)."""

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from dagster import (
    Config,
    DynamicOut,
    DynamicOutput,
    Failure,
    MetadataValue,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    op,
)
from pydantic import Field

from haste_dagster.defs import audit, steps
from haste_dagster.defs.distributed.io_manager import OUTPUTS_IO
from haste_dagster.defs.executors import TrainingRouting
from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME
from haste_dagster.defs.resources import DatabaseResource, LLMResource, SkillStoreResource

if TYPE_CHECKING:  # the agents load when an op runs, not with the definitions
    from haste_dagster.agents.attempts import AttemptResult

# --- config and helpers ---------------------------------------------------------------------


class DistributedAttemptConfig(Config):
    """Which competition, and how its attempt runs (as `AttemptRunConfig`, but the budget is
    the job's shape: rounds × candidates)."""

    slug: str = Field(description="The competition to solve (a YAML in competition_defs/).")
    policy: Literal["heuristic", "llm"] = "heuristic"
    loading: Literal["tiered", "flat", "none"] = "tiered"
    seed: int = 0
    label: str | None = None
    resume: bool = Field(
        default=True,
        description="Continue the newest unfinished (or ungraded) attempt with the same policy, "
        "loading and seed (e.g. after a failed run) instead of starting over.",
    )


def _device(context: OpExecutionContext) -> str:
    """Where XGBoost trains in this step: CUDA only if it really works here."""
    from haste_dagster.solution.compile import detect_device

    device = detect_device()
    routing = TrainingRouting.from_env()
    if device == "cpu" and (routing.celery_queue or routing.gpus):
        context.log.warning(
            "this training step was routed for a GPU, but XGBoost cannot use CUDA here "
            "(no visible GPU, or the xgboost-cpu wheel): training on the CPU"
        )
    return device


def _ensure_partition(context: OpExecutionContext, slug: str) -> None:
    instance = context.instance
    if not instance.has_dynamic_partition(COMPETITION_PARTITIONS_NAME, slug):
        instance.add_dynamic_partitions(COMPETITION_PARTITIONS_NAME, [slug])


def _iteration_table(iterations: list[dict[str, Any]]) -> str:
    head = "| idx | score | kept | rationale |\n|---|---|---|---|\n"
    return head + "".join(
        f"| {it['idx']} | {it['score'] if it['score'] is not None else '—'} | "
        f"{'yes' if it['kept'] else ('error' if it['error'] else 'no')} | "
        f"{str(it['rationale']).replace('|', '/')[:120]} |\n"
        for it in iterations
    )


# --- ops ------------------------------------------------------------------------------------


def start_op(rounds: int, candidates: int) -> OpDefinition:
    @op(
        name="start_attempt",
        out=Out(dict, io_manager_key=OUTPUTS_IO),
        description="Load the competition, create (or resume) the attempt, load its scoped "
        "skills, build the initial spec and cross-validate it (iteration 0).",
    )
    def start_attempt(
        context: OpExecutionContext,
        config: DistributedAttemptConfig,
        database: DatabaseResource,
        skill_store: SkillStoreResource,
        llm: LLMResource,
    ) -> Output[dict]:
        from haste_dagster.agents import rounds as batch
        from haste_dagster.agents.attempts import AttemptConfig
        from haste_dagster.competitions import profile_data
        from haste_dagster.competitions.registry import check_solvable

        slug = config.slug
        _ensure_partition(context, slug)
        data = steps.competition_data_step(slug, database)
        data.log_events(context, "competition_data", slug)
        if not all(check.passed for check in data.checks):
            raise Failure(f"{slug}: hidden-test rows found in the training data")
        competition = steps.load_competition(slug)
        check_solvable(competition)  # one target per attempt: refused before any compute
        profile = profile_data(competition).as_dict()
        device = _device(context)
        with skill_store.open() as (conn, store):
            resume_id = steps.resume_attempt_id(context.instance, conn, slug, config)
            if resume_id is not None:
                context.log.info(f"resuming attempt {resume_id}")
            attempt, scored_now = batch.start_attempt(
                conn,
                competition,
                AttemptConfig(
                    policy=config.policy,
                    loading=config.loading,
                    iterations=rounds * candidates,
                    seed=config.seed,
                    label=config.label,
                ),
                store=store,
                policy=llm.policy(config.policy, conn, campaign_id=context.run.run_id),
                profile=profile,
                dagster_run_id=context.run.run_id,
                resume_attempt_id=resume_id,
                device=device,
            )
        state = {
            "attempt_id": attempt.id,
            "slug": slug,
            "policy": config.policy,
            "rounds": rounds,
            "candidates": candidates,
            "round": 0,
            "stopped": None,
            "resumed": resume_id is not None,
        }
        return Output(
            state,
            metadata={
                "attempt_id": attempt.id,
                "resumed": resume_id is not None,
                "baseline_cv": attempt.best_cv,
                "baseline_scored_now": scored_now,
                "device": device if scored_now else "—",
            },
        )

    return start_attempt


@op(
    out={
        "state": Out(dict, io_manager_key=OUTPUTS_IO),
        "candidates": DynamicOut(dict, io_manager_key=OUTPUTS_IO),
    },
    description="The policy proposes the round's candidates against the incumbent (none once "
    "the attempt stopped: budget spent, stagnation, or nothing left to try).",
)
def propose_candidates(
    context: OpExecutionContext, state: dict, skill_store: SkillStoreResource, llm: LLMResource
) -> Iterator[Output | DynamicOutput]:
    from haste_dagster.agents import rounds as batch
    from haste_dagster.competitions import profile_data

    if state["stopped"]:
        yield Output(state, "state", metadata={"stopped": state["stopped"], "candidates": 0})
        return
    competition = steps.load_competition(state["slug"])
    profile = profile_data(competition).as_dict()
    with skill_store.open() as (conn, store):
        plan = batch.propose_round(
            conn,
            competition,
            state["attempt_id"],
            state["candidates"],
            store=store,
            policy=llm.policy(state["policy"], conn, campaign_id=context.run.run_id),
            profile=profile,
        )
    yield Output(
        {**state, "stopped": plan.stopped},
        "state",
        metadata={
            "round": state["round"] + 1,
            "candidates": len(plan.candidates),
            "stopped": plan.stopped or "—",
            "proposals": MetadataValue.json(
                [{"idx": c.idx, "rationale": c.rationale} for c in plan.candidates]
            ),
        },
    )
    for candidate in plan.candidates:
        yield DynamicOutput(
            candidate.as_json(), mapping_key=f"i{candidate.idx}", output_name="candidates"
        )


@op(
    out=Out(dict, io_manager_key=OUTPUTS_IO),
    description="Cross-validate one candidate spec on the attempt's folds (GPU if present).",
)
def evaluate_candidate(context: OpExecutionContext, candidate: dict) -> Output[dict]:
    from haste_dagster.agents import rounds as batch

    device = _device(context)
    scored = batch.evaluate_candidate(
        batch.Candidate.from_json(candidate), steps.load_competition(candidate["slug"]), device
    )
    metadata: dict[str, Any] = {
        "attempt_id": scored.attempt_id,
        "idx": scored.idx,
        "device": device,
        "seconds": round(scored.seconds, 3),
    }
    if scored.cv_mean is not None:
        metadata["cv_mean"] = float(scored.cv_mean)
    if scored.error:
        metadata["error"] = scored.error
    return Output(scored.as_json(), metadata=metadata)


@op(
    out=Out(dict, io_manager_key=OUTPUTS_IO),
    description="Apply the keep rule to the round, record its iterations in index order (one "
    "transaction); after the last round, finish the attempt and record the attempt asset.",
)
def select_round(
    context: OpExecutionContext, state: dict, scored: list[dict], skill_store: SkillStoreResource
) -> Output[dict]:
    from haste_dagster.agents import rounds as batch

    competition = steps.load_competition(state["slug"])
    metadata: dict[str, Any] = {"round": state["round"] + 1}
    with skill_store.open() as (conn, store):
        if scored:
            outcome = batch.record_round(
                conn,
                competition,
                state["attempt_id"],
                [batch.Candidate.from_json(c) for c in scored],
                record_usage=store.record_usage,
            )
            metadata.update(
                {
                    "recorded": MetadataValue.json(outcome.recorded),
                    "kept": outcome.kept if outcome.kept is not None else "none",
                    "replayed": outcome.replayed,
                }
            )
            if outcome.best_cv is not None:
                metadata["best_cv"] = float(outcome.best_cv)
        new_state = {**state, "round": state["round"] + 1}
        if new_state["round"] == state["rounds"]:
            result = batch.finish_attempt(
                conn,
                state["attempt_id"],
                stopped=state["stopped"] or "budget",
                extra={"rounds": state["rounds"], "candidates_per_round": state["candidates"]},
            )
            _record_attempt_asset(
                context, state, result, steps.attempt_outcomes(store, state["attempt_id"])
            )
            metadata["finished"] = True
    return Output(new_state, metadata=metadata)


def _record_attempt_asset(
    context: OpExecutionContext, state: dict, result: "AttemptResult", outcomes: dict[str, Any]
) -> None:
    slug = state["slug"]
    metadata = {**steps.attempt_metadata(result), **outcomes}
    metadata.update(
        {
            "rounds": state["rounds"],
            "candidates_per_round": state["candidates"],
            "iteration_table": MetadataValue.md(_iteration_table(result.iterations)),
            "resumed": bool(state.get("resumed")),
        }
    )
    _ensure_partition(context, slug)
    steps.StepResult(metadata=metadata).log_events(context, "attempt", slug)


@op(
    out=Out(dict, io_manager_key=OUTPUTS_IO),
    description="Fit the best spec on all training data (GPU if present), predict the hidden "
    "test split, grade it and check the stored grade reproduces.",
)
def train_final_model(
    context: OpExecutionContext, state: dict, database: DatabaseResource
) -> Output[dict]:
    slug, attempt_id = state["slug"], state["attempt_id"]
    device = _device(context)
    # The same step as the `submission` asset: fit, grade, store, re-grade the stored copy.
    result = steps.submission_step(slug, attempt_id, database, device=device)
    grade = result.value
    _ensure_partition(context, slug)
    result.log_events(context, "submission", slug)
    context.log_event(audit.grade_observation(slug, attempt_id, grade))
    return Output(
        {
            "attempt_id": attempt_id,
            "slug": slug,
            "test_score": float(grade.score),
            "medal": str(grade.medal),
            "device": device,
        },
        metadata={"device": device, "score": float(grade.score), "medal": str(grade.medal)},
    )

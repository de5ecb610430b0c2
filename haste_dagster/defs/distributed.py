"""One attempt as a graph of ops an executor can spread over machines.

    start_attempt                      attempt row, scoped skills, initial spec, baseline CV
    → propose_candidates_1             K patches against the incumbent (DynamicOut)
    → evaluate_candidate_1[i..]        one cross-validation each, mapped     (training op)
    → select_round_1                   keep rule, iterations recorded in index order
    → ... rounds 2..R ...
    → train_final_model                fit on all training data, predict, grade (training op)

The domain logic is `agents.rounds` (no Dagster); this module only wires it. Ops pass small
JSON values (ids, specs as dicts, scores) through `PostgresJsonIOManager`, so a step on a
Celery worker or in a Kubernetes pod reads its inputs from the database every HASTE process
already reaches, not from another machine's disk. The database URL comes from the
environment through the resources, never from op config or outputs.

Training ops carry `executors.training_tags()` (Celery queue, Kubernetes GPU resources) and
train on the device `detect_device()` finds where they run, recorded in their metadata. The
job also records `competition_data`, `attempt` and `submission` materializations of the
competition's partition, so `competition_skills` and the reports work after it as they do
after `solve_competition`.
"""

import json
import os
from collections.abc import Iterator
from typing import Any, Literal

from dagster import (
    Config,
    ConfigurableIOManager,
    DynamicOut,
    DynamicOutput,
    Failure,
    InputContext,
    JobDefinition,
    MetadataValue,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    OutputContext,
    job,
    op,
)
from pydantic import Field

from haste_dagster import db
from haste_dagster.defs import audit, steps
from haste_dagster.defs.executors import TrainingRouting, executor_by_name, training_tags
from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME
from haste_dagster.defs.resources import (
    DatabaseResource,
    EmbedderResource,
    LLMResource,
    SkillStoreResource,
)

JOB_NAME = "distributed_attempt"
ROUNDS_ENV = "HASTE_DISTRIBUTED_ROUNDS"
CANDIDATES_ENV = "HASTE_DISTRIBUTED_CANDIDATES"
DEFAULT_ROUNDS = 5
DEFAULT_CANDIDATES = 4
OUTPUTS_IO = "op_outputs_io_manager"
OUTPUTS_SCHEMA = "dagster_io"


# --- op outputs in PostgreSQL ---------------------------------------------------------------

# Dagster plumbing, like Dagster's own storage in the `dagster` schema: created on first use
# in a schema of its own, outside HASTE's migrated tables. The advisory lock stops parallel
# steps from racing on CREATE TABLE IF NOT EXISTS.
_OUTPUTS_DDL = f"""
SELECT pg_advisory_xact_lock(hashtext('{OUTPUTS_SCHEMA}.op_outputs'));
CREATE SCHEMA IF NOT EXISTS {OUTPUTS_SCHEMA};
CREATE TABLE IF NOT EXISTS {OUTPUTS_SCHEMA}.op_outputs (
    run_id      text NOT NULL,
    step_key    text NOT NULL,
    output_name text NOT NULL,
    mapping_key text NOT NULL DEFAULT '',
    value       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_key, output_name, mapping_key)
);
"""
_READY: set[str] = set()


def _key(identifier: list[str]) -> tuple[str, str, str, str]:
    run_id, step_key, name, *rest = identifier
    return run_id, step_key, name, rest[0] if rest else ""


class PostgresJsonIOManager(ConfigurableIOManager):
    """Op outputs as JSON rows in the HASTE PostgreSQL (table ``dagster_io.op_outputs``).

    The default IO manager pickles outputs under DAGSTER_HOME on the local disk, which a
    step on another machine cannot read. Values must be JSON-serialisable (and small).
    """

    database: DatabaseResource

    def _connect(self) -> Any:
        url = self.database.url()
        conn = db.connect(url, migrate_schema=False)
        if url not in _READY:
            with conn.transaction():
                conn.execute(_OUTPUTS_DDL)
            _READY.add(url)
        return conn

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        try:
            value = json.dumps(obj, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise Failure(
                f"output {context.name!r} of {context.step_key} is not plain JSON ({exc}); "
                "ops of distributed jobs pass ids, specs as dicts and scores"
            ) from exc
        with self._connect() as conn:
            conn.execute(
                f"""INSERT INTO {OUTPUTS_SCHEMA}.op_outputs
                        (run_id, step_key, output_name, mapping_key, value)
                    VALUES (%s, %s, %s, %s, %s::jsonb)
                    ON CONFLICT (run_id, step_key, output_name, mapping_key)
                    DO UPDATE SET value = EXCLUDED.value, created_at = now()""",
                (*_key(list(context.get_identifier())), value),
            )

    def load_input(self, context: InputContext) -> Any:
        assert context.upstream_output is not None
        key = _key(list(context.upstream_output.get_identifier()))
        with self._connect() as conn:
            row = conn.execute(
                f"""SELECT value FROM {OUTPUTS_SCHEMA}.op_outputs
                    WHERE run_id = %s AND step_key = %s AND output_name = %s
                      AND mapping_key = %s""",
                key,
            ).fetchone()
        if row is None:
            raise Failure(f"no stored output {key[2]!r} of step {key[1]} in run {key[0]}")
        return row["value"]


def distributed_resources() -> dict[str, Any]:
    """Every resource the job's ops use, so the job also runs outside `Definitions`."""
    database = DatabaseResource()
    return {
        "database": database,
        "skill_store": SkillStoreResource(database=database, embedder=EmbedderResource()),
        "llm": LLMResource(),
        OUTPUTS_IO: PostgresJsonIOManager(database=database),
    }


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


def _start_op(rounds: int, candidates: int) -> OpDefinition:
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
        from haste_dagster.agents.competition_agent import AttemptConfig
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
    context: OpExecutionContext, state: dict, result: Any, outcomes: dict[str, Any]
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


# --- the job --------------------------------------------------------------------------------


def build_distributed_attempt_job(
    rounds: int = DEFAULT_ROUNDS,
    candidates: int = DEFAULT_CANDIDATES,
    *,
    name: str = JOB_NAME,
    executor: str | None = None,
    routing: TrainingRouting | None = None,
) -> JobDefinition:
    """A job solving one competition in ``rounds`` rounds of ``candidates`` evaluations.

    ``executor`` names one of `executors.EXECUTORS`; None leaves it to `Definitions`
    (``HASTE_DAGSTER_EXECUTOR``). ``routing`` defaults to the environment's. The arguments
    are plain values so `dagster.build_reconstructable_job` can rebuild the job in a worker.
    """
    if rounds < 1 or candidates < 1:
        raise ValueError(f"rounds and candidates must be >= 1 (got {rounds}, {candidates})")
    train = training_tags(routing)
    start = _start_op(rounds, candidates)

    @job(
        name=name,
        description=f"Solve one competition in {rounds} refinement rounds of {candidates} "
        "candidates each, every candidate evaluated in its own step (Celery/Kubernetes "
        "ready), then train the final model.",
        executor_def=executor_by_name(executor) if executor else None,
        resource_defs=distributed_resources(),
        tags={"haste/rounds": str(rounds), "haste/candidates": str(candidates)},
    )
    def distributed_attempt() -> None:
        state = start.tag(train)()
        for r in range(1, rounds + 1):
            state, proposed = propose_candidates.alias(f"propose_candidates_{r}")(state)
            evaluate = evaluate_candidate.alias(f"evaluate_candidate_{r}").tag(train)
            state = select_round.alias(f"select_round_{r}")(state, proposed.map(evaluate).collect())
        train_final_model.tag(train)(state)

    return distributed_attempt


def job_shape_from_env() -> tuple[int, int]:
    """(rounds, candidates) of the registered job: HASTE_DISTRIBUTED_ROUNDS / _CANDIDATES."""
    from haste_dagster.defs.executors import ExecutorConfigError

    shape = []
    for env, default in ((ROUNDS_ENV, DEFAULT_ROUNDS), (CANDIDATES_ENV, DEFAULT_CANDIDATES)):
        raw = os.environ.get(env, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            value = 0
        if value < 1:
            raise ExecutorConfigError(f"{env}={raw!r}: expected a whole number >= 1")
        shape.append(value)
    return shape[0], shape[1]

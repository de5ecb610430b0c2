"""The ``distributed_attempt`` job: R rounds of the ops wired into one graph, and its shape
from the environment."""

import os

from dagster import JobDefinition, job

from haste_dagster.defs.distributed.io_manager import distributed_resources
from haste_dagster.defs.distributed.ops import (
    evaluate_candidate,
    propose_candidates,
    select_round,
    start_op,
    train_final_model,
)
from haste_dagster.defs.executors import TrainingRouting, executor_by_name, training_tags

JOB_NAME = "distributed_attempt"
ROUNDS_ENV = "HASTE_DISTRIBUTED_ROUNDS"
CANDIDATES_ENV = "HASTE_DISTRIBUTED_CANDIDATES"
DEFAULT_ROUNDS = 5
DEFAULT_CANDIDATES = 4


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
    start = start_op(rounds, candidates)

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

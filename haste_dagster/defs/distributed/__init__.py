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

Modules: ``io_manager`` (op outputs in PostgreSQL), ``ops``, ``job``.
"""

from haste_dagster.defs.distributed.io_manager import (
    OUTPUTS_IO,
    OUTPUTS_SCHEMA,
    PostgresJsonIOManager,
    distributed_resources,
)
from haste_dagster.defs.distributed.job import (
    CANDIDATES_ENV,
    DEFAULT_CANDIDATES,
    DEFAULT_ROUNDS,
    JOB_NAME,
    ROUNDS_ENV,
    build_distributed_attempt_job,
    job_shape_from_env,
)
from haste_dagster.defs.distributed.ops import (
    DistributedAttemptConfig,
    evaluate_candidate,
    propose_candidates,
    select_round,
    train_final_model,
)

__all__ = [
    "CANDIDATES_ENV",
    "DEFAULT_CANDIDATES",
    "DEFAULT_ROUNDS",
    "DistributedAttemptConfig",
    "JOB_NAME",
    "OUTPUTS_IO",
    "OUTPUTS_SCHEMA",
    "PostgresJsonIOManager",
    "ROUNDS_ENV",
    "build_distributed_attempt_job",
    "distributed_resources",
    "evaluate_candidate",
    "job_shape_from_env",
    "propose_candidates",
    "select_round",
    "train_final_model",
]

"""Which executor runs a run's steps, and the tags that route training steps to GPU workers.

``HASTE_DAGSTER_EXECUTOR`` (read when the code location loads) picks the executor:

=============== ================================== =============================================
value           executor                           where steps run
=============== ================================== =============================================
multiprocess    ``multiprocess_executor`` (default) child processes of the run worker
in_process      ``in_process_executor``             inside the run worker (debugging)
celery          dagster-celery ``celery_executor``  Celery workers on ``HASTE_CELERY_BROKER_URL``
k8s             dagster-k8s ``k8s_job_executor``    one Kubernetes Job per step
=============== ================================== =============================================

Secrets are never config values (config is stored with every run and shown in the UI): the
Celery broker and backend are given to Dagster as ``{"env": VAR}`` and resolved where the
executor runs, and Kubernetes steps get their environment from Secrets and ConfigMaps
(``envFrom``), never from literal values.

Training steps (cross-validation of candidates, the final fit) carry `training_tags()`:
``haste/workload: train`` always; ``dagster-celery/queue: <HASTE_GPU_QUEUE>`` when GPU routing
is on (otherwise they stay on Celery's default queue ``dagster``); and ``dagster-k8s/config``
with the GPU limit, node selector and tolerations when those are configured. Whether a step
really trains on a GPU is decided where it runs, by `solution.compile.detect_device`.

Workers for the Celery executor run this package's app, so they read the same variables::

    celery -A haste_dagster.defs.executors worker -Q dagster,gpu --prefetch-multiplier=1

Modules: ``settings`` (variables, tag keys, parsing), ``celery``, ``k8s``, ``routing``
(training-step tags); this one picks the executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from haste_dagster.defs.executors.celery import CelerySettings, celery_app, celery_executor_def
from haste_dagster.defs.executors.k8s import K8sSettings, k8s_executor_def, render_k8s_step_job
from haste_dagster.defs.executors.routing import (
    TrainingRouting,
    gpu_queue,
    parse_node_selector,
    parse_tolerations,
    training_tags,
)
from haste_dagster.defs.executors.settings import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    CELERY_DEFAULT_QUEUE,
    CELERY_QUEUE_TAG,
    DEFAULT_EXECUTOR,
    DEFAULT_GPU_QUEUE,
    EXECUTOR_ENV,
    EXECUTORS,
    GPU_QUEUE_ENV,
    GPU_RESOURCE,
    K8S_CONFIG_TAG,
    K8S_ENV_CONFIG_MAPS_ENV,
    K8S_ENV_SECRETS_ENV,
    K8S_GPU_IMAGE_ENV,
    K8S_GPUS_ENV,
    K8S_IMAGE_ENV,
    K8S_IMAGE_PULL_POLICY_ENV,
    K8S_KUBECONFIG_ENV,
    K8S_MAX_CONCURRENT_ENV,
    K8S_NAMESPACE_ENV,
    K8S_NODE_SELECTOR_ENV,
    K8S_SERVICE_ACCOUNT_ENV,
    K8S_TOLERATIONS_ENV,
    K8S_TRAIN_CPU_ENV,
    K8S_TRAIN_MEMORY_ENV,
    TRAIN_TAGS,
    WORKLOAD_TAG,
    ExecutorConfigError,
    env_value,
)


def executor_name(env: Mapping[str, str] | None = None) -> str:
    """The executor ``HASTE_DAGSTER_EXECUTOR`` names (default multiprocess), validated."""
    name = env_value(EXECUTOR_ENV, env).lower() or DEFAULT_EXECUTOR
    if name not in EXECUTORS:
        raise ExecutorConfigError(
            f"{EXECUTOR_ENV}={name!r} is not an executor HASTE knows; choose one of "
            f"{', '.join(EXECUTORS)}"
        )
    return name


# Step workers fork from a server that has imported these once. With Dagster's default
# (spawn) every step re-imports Dagster, scikit-learn and the definitions: about 5 CPU
# seconds per step on 2 cores (measured by `haste bench overhead`, docs/benchmarks.md).
# Each worker also opens the instance (Dagster's Postgres storage: SQLAlchemy, Alembic)
# and the attempt step draws its learning curve (matplotlib): preloaded too, they no
# longer cost every step worker about half a second of imports.
FORKSERVER_PRELOAD = (
    "haste_dagster.defs.definitions",
    "haste_dagster.solution.evaluate",
    "dagster_postgres",
    "matplotlib.pyplot",
)


def forkserver_multiprocess_executor() -> ExecutorDefinition:
    """``multiprocess_executor`` starting step workers with ``forkserver`` (preloaded with
    `FORKSERVER_PRELOAD`) unless a run's config names a ``start_method``; the rest of its
    config (max_concurrent, tag limits, retries) stays settable per run."""

    def with_forkserver(config: dict[str, Any]) -> dict[str, Any]:
        preload = {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}
        return {**config, "start_method": config.get("start_method") or preload}

    return multiprocess_executor.configured(
        with_forkserver, config_schema=multiprocess_executor.config_schema, name="multiprocess"
    )


def executor_by_name(name: str, env: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """The executor definition for ``name`` (one of `EXECUTORS`), configured from ``env``."""
    if name == "multiprocess":
        return forkserver_multiprocess_executor()
    if name == "in_process":
        return in_process_executor
    if name == "celery":
        return celery_executor_def(CelerySettings.from_env(env))
    if name == "k8s":
        return k8s_executor_def(K8sSettings.from_env(env))
    raise ExecutorConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


def executor_from_env(env: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """`multiprocess` (default), `in_process`, `celery` (dagster-celery) or `k8s` (dagster-k8s)."""
    return executor_by_name(executor_name(env), env)


def describe_executor(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What runs the steps, safe to log or attach as metadata (URL passwords hidden)."""
    name = executor_name(env)
    out: dict[str, Any] = {"executor": name}
    if name == "celery":
        out.update(CelerySettings.from_env(env).describe())
    elif name == "k8s":
        settings = K8sSettings.from_env(env)
        out.update({"namespace": settings.namespace, "image": settings.image})
    routing = TrainingRouting.from_env(env)
    out["training_queue"] = routing.celery_queue or CELERY_DEFAULT_QUEUE
    out["training_gpus"] = routing.gpus
    return out


_APP: Any = None


def __getattr__(name: str) -> Any:
    # `celery -A haste_dagster.defs.executors` looks up `app`; it is built on first use so
    # importing this module needs neither dagster-celery nor a broker URL.
    global _APP
    if name == "app":
        if _APP is None:
            _APP = celery_app()
        return _APP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CELERY_BACKEND_ENV",
    "CELERY_BROKER_ENV",
    "CELERY_DEFAULT_QUEUE",
    "CELERY_QUEUE_TAG",
    "CelerySettings",
    "DEFAULT_EXECUTOR",
    "DEFAULT_GPU_QUEUE",
    "EXECUTORS",
    "EXECUTOR_ENV",
    "ExecutorConfigError",
    "GPU_QUEUE_ENV",
    "GPU_RESOURCE",
    "K8S_CONFIG_TAG",
    "K8S_ENV_CONFIG_MAPS_ENV",
    "K8S_ENV_SECRETS_ENV",
    "K8S_GPUS_ENV",
    "K8S_GPU_IMAGE_ENV",
    "K8S_IMAGE_ENV",
    "K8S_IMAGE_PULL_POLICY_ENV",
    "K8S_KUBECONFIG_ENV",
    "K8S_MAX_CONCURRENT_ENV",
    "K8S_NAMESPACE_ENV",
    "K8S_NODE_SELECTOR_ENV",
    "K8S_SERVICE_ACCOUNT_ENV",
    "K8S_TOLERATIONS_ENV",
    "K8S_TRAIN_CPU_ENV",
    "K8S_TRAIN_MEMORY_ENV",
    "K8sSettings",
    "TRAIN_TAGS",
    "TrainingRouting",
    "WORKLOAD_TAG",
    "celery_app",
    "celery_executor_def",
    "describe_executor",
    "executor_by_name",
    "executor_from_env",
    "executor_name",
    "forkserver_multiprocess_executor",
    "gpu_queue",
    "k8s_executor_def",
    "parse_node_selector",
    "parse_tolerations",
    "render_k8s_step_job",
    "training_tags",
]

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

Workers for the Celery executor run this module's app, so they read the same variables::

    celery -A haste_dagster.defs.executors worker -Q dagster,gpu --prefetch-multiplier=1
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from haste_dagster.config import redact
from haste_dagster.errors import ConfigError

EXECUTOR_ENV = "HASTE_DAGSTER_EXECUTOR"
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
DEFAULT_EXECUTOR = "multiprocess"

CELERY_BROKER_ENV = "HASTE_CELERY_BROKER_URL"
CELERY_BACKEND_ENV = "HASTE_CELERY_BACKEND_URL"
CELERY_DEFAULT_QUEUE = "dagster"  # dagster-celery's task_default_queue
GPU_QUEUE_ENV = "HASTE_GPU_QUEUE"
DEFAULT_GPU_QUEUE = "gpu"

K8S_NAMESPACE_ENV = "HASTE_K8S_NAMESPACE"
K8S_IMAGE_ENV = "HASTE_K8S_IMAGE"
K8S_ENV_SECRETS_ENV = "HASTE_K8S_ENV_SECRETS"
K8S_ENV_CONFIG_MAPS_ENV = "HASTE_K8S_ENV_CONFIG_MAPS"
K8S_SERVICE_ACCOUNT_ENV = "HASTE_K8S_SERVICE_ACCOUNT"
K8S_IMAGE_PULL_POLICY_ENV = "HASTE_K8S_IMAGE_PULL_POLICY"
K8S_MAX_CONCURRENT_ENV = "HASTE_K8S_MAX_CONCURRENT"
K8S_KUBECONFIG_ENV = "HASTE_K8S_KUBECONFIG"
K8S_GPUS_ENV = "HASTE_K8S_GPUS"
K8S_NODE_SELECTOR_ENV = "HASTE_K8S_GPU_NODE_SELECTOR"
K8S_TOLERATIONS_ENV = "HASTE_K8S_GPU_TOLERATIONS"
K8S_TRAIN_CPU_ENV = "HASTE_K8S_TRAIN_CPU"
K8S_TRAIN_MEMORY_ENV = "HASTE_K8S_TRAIN_MEMORY"
K8S_GPU_IMAGE_ENV = "HASTE_K8S_GPU_IMAGE"

# The tag keys dagster-celery and dagster-k8s read (both packages are optional extras, so
# the strings live here; tests check them against the libraries' own constants).
CELERY_QUEUE_TAG = "dagster-celery/queue"
K8S_CONFIG_TAG = "dagster-k8s/config"
WORKLOAD_TAG = "haste/workload"
TRAIN_TAGS = {WORKLOAD_TAG: "train"}
GPU_RESOURCE = "nvidia.com/gpu"

_OFF = ("", "0", "false", "no", "off", "none")
_ON = ("1", "true", "yes", "on")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class ExecutorConfigError(ConfigError):
    """An executor or routing variable has a value HASTE cannot use."""


def _env(name: str, env: Mapping[str, str] | None) -> str:
    source = os.environ if env is None else env
    return source.get(name, "").strip()


def _names(name: str, env: Mapping[str, str] | None) -> list[str]:
    return [part.strip() for part in _env(name, env).split(",") if part.strip()]


# --- executor selection ---------------------------------------------------------------------


def executor_name(env: Mapping[str, str] | None = None) -> str:
    """The executor ``HASTE_DAGSTER_EXECUTOR`` names (default multiprocess), validated."""
    name = _env(EXECUTOR_ENV, env).lower() or DEFAULT_EXECUTOR
    if name not in EXECUTORS:
        raise ExecutorConfigError(
            f"{EXECUTOR_ENV}={name!r} is not an executor HASTE knows; choose one of "
            f"{', '.join(EXECUTORS)}"
        )
    return name


# Step workers fork from a server that has imported these once. With Dagster's default
# (spawn) every step re-imports Dagster, scikit-learn and the definitions: about 5 CPU
# seconds per step on 2 cores (measured by `haste bench overhead`, docs/benchmarks.md).
FORKSERVER_PRELOAD = ("haste_dagster.defs.definitions", "haste_dagster.solution.evaluate")


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


# --- Celery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelerySettings:
    """Where Celery's broker and result backend are, as variable names and their values."""

    broker_url: str
    backend_url: str
    backend_env: str | None  # the variable holding the backend URL; None for rpc://

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CelerySettings:
        broker = _env(CELERY_BROKER_ENV, env)
        if not broker:
            raise ExecutorConfigError(
                f"the Celery executor ({EXECUTOR_ENV}=celery) and its workers need "
                f"{CELERY_BROKER_ENV}, the Celery broker URL (e.g. redis://127.0.0.1:6379/0)"
            )
        backend = _env(CELERY_BACKEND_ENV, env)
        if backend:
            return cls(broker, backend, CELERY_BACKEND_ENV)
        if broker.split("://", 1)[0] in ("redis", "rediss"):
            # Redis keeps the results too: one service, one variable.
            return cls(broker, broker, CELERY_BROKER_ENV)
        return cls(broker, "rpc://", None)  # e.g. RabbitMQ: results as replies on the broker

    def executor_config(self) -> dict[str, Any]:
        """The celery_executor config: variable *names* only, resolved where the run executes."""
        return {
            "broker": {"env": CELERY_BROKER_ENV},
            "backend": {"env": self.backend_env} if self.backend_env else self.backend_url,
        }

    def describe(self) -> dict[str, str]:
        return {"broker": redact(self.broker_url), "backend": redact(self.backend_url)}


def celery_executor_def(settings: CelerySettings) -> ExecutorDefinition:
    from dagster_celery import celery_executor

    return celery_executor.configured(settings.executor_config(), name="celery")


def celery_app(env: Mapping[str, str] | None = None) -> Any:
    """The Celery app HASTE's workers run: dagster-celery's step task on the same broker,
    backend and settings the executor uses (`celery -A haste_dagster.defs.executors worker`)."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    settings = CelerySettings.from_env(env)
    executor = CeleryExecutor.for_cli(broker=settings.broker_url, backend=settings.backend_url)
    app = make_app(executor.app_args())
    create_task(app)
    return app


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


# --- Kubernetes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class K8sSettings:
    """The k8s_job_executor's settings. Secrets are referenced by Secret *name* only."""

    namespace: str | None = None  # None: the run launcher's namespace
    image: str | None = None  # None: the image of the code location that launched the run
    env_secrets: tuple[str, ...] = ()
    env_config_maps: tuple[str, ...] = ()
    service_account: str | None = None
    image_pull_policy: str | None = None
    max_concurrent: int | None = None
    kubeconfig: str | None = None  # None: in-cluster config (the run worker is a pod)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> K8sSettings:
        max_concurrent = _env(K8S_MAX_CONCURRENT_ENV, env)
        return cls(
            namespace=_env(K8S_NAMESPACE_ENV, env) or None,
            image=_env(K8S_IMAGE_ENV, env) or None,
            env_secrets=tuple(_names(K8S_ENV_SECRETS_ENV, env)),
            env_config_maps=tuple(_names(K8S_ENV_CONFIG_MAPS_ENV, env)),
            service_account=_env(K8S_SERVICE_ACCOUNT_ENV, env) or None,
            image_pull_policy=_env(K8S_IMAGE_PULL_POLICY_ENV, env) or None,
            max_concurrent=_positive_int(K8S_MAX_CONCURRENT_ENV, max_concurrent)
            if max_concurrent
            else None,
            kubeconfig=_env(K8S_KUBECONFIG_ENV, env) or None,
        )

    def executor_config(self) -> dict[str, Any]:
        """Config for dagster-k8s's ``k8s_job_executor`` (only the fields that are set)."""
        config: dict[str, Any] = {
            "env_secrets": list(self.env_secrets),
            "env_config_maps": list(self.env_config_maps),
        }
        if self.namespace:
            config["job_namespace"] = self.namespace
        if self.image:
            config["job_image"] = self.image
        if self.service_account:
            config["service_account_name"] = self.service_account
        if self.image_pull_policy:
            config["image_pull_policy"] = self.image_pull_policy
        if self.max_concurrent:
            config["max_concurrent"] = self.max_concurrent
        if self.kubeconfig:
            config["load_incluster_config"] = False
            config["kubeconfig_file"] = self.kubeconfig
        return config


def k8s_executor_def(settings: K8sSettings) -> ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(settings.executor_config(), name="k8s")


def render_k8s_step_job(
    step_tags: Mapping[str, str],
    settings: K8sSettings,
    *,
    step_key: str,
    job_name: str = "haste",
    run_id: str = "00000000-0000-0000-0000-000000000000",
    image: str = "haste-dagster:latest",
    dagster_home: str = "/opt/dagster/dagster_home",
    instance_config_map: str = "dagster-instance",
    postgres_password_secret: str = "dagster-postgresql-secret",
) -> dict[str, Any]:
    """The Kubernetes Job the k8s executor would create for one step, as the API's JSON.

    Follows dagster-k8s's ``K8sStepHandler.launch_step``: the executor's container context,
    merged with the step's ``dagster-k8s/config`` tag, through ``construct_dagster_k8s_job``.
    The run-launcher parts (image, DAGSTER_HOME, instance ConfigMap, Postgres password
    Secret) are the arguments, so no cluster is needed: for reviews, dry runs and tests.
    """
    import kubernetes.client
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_k8s_job_name,
        get_user_defined_k8s_config,
    )

    config = settings.executor_config()
    executor_context = K8sContainerContext(
        image_pull_policy=config.get("image_pull_policy"),
        service_account_name=config.get("service_account_name"),
        env_config_maps=config.get("env_config_maps"),
        env_secrets=config.get("env_secrets"),
        namespace=config.get("job_namespace"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config.get("step_k8s_config", {})),
    )
    context = executor_context.merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(dict(step_tags)))
    )
    job_config = DagsterK8sJobConfig(
        job_image=config.get("job_image") or image,
        dagster_home=dagster_home,
        instance_config_map=instance_config_map,
        postgres_password_secret=postgres_password_secret,
    )
    name = f"dagster-step-{get_k8s_job_name(run_id, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=name,
        pod_name=name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": job_name, "dagster/op": step_key, "dagster/run-id": run_id},
        env_vars=[
            {"name": "DAGSTER_RUN_JOB_NAME", "value": job_name},
            {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key},
        ],
    )
    rendered = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    rendered["metadata"]["namespace"] = context.namespace
    return rendered


# --- training-step routing ------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRouting:
    """Where training steps go: a Celery queue and the Kubernetes resources they ask for."""

    celery_queue: str | None = None  # None: Celery's default queue (`dagster`)
    gpus: int = 0  # nvidia.com/gpu limit per training step pod; 0 = none
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=list)
    cpu: str | None = None  # request, e.g. "4"
    memory: str | None = None  # request, e.g. "16Gi"
    image: str | None = None  # e.g. an image with CUDA XGBoost; None: the steps' usual image

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainingRouting:
        gpus = _env(K8S_GPUS_ENV, env)
        return cls(
            celery_queue=gpu_queue(env),
            gpus=_count(K8S_GPUS_ENV, gpus) if gpus else 0,
            node_selector=parse_node_selector(_env(K8S_NODE_SELECTOR_ENV, env)),
            tolerations=parse_tolerations(_env(K8S_TOLERATIONS_ENV, env)),
            cpu=_env(K8S_TRAIN_CPU_ENV, env) or None,
            memory=_env(K8S_TRAIN_MEMORY_ENV, env) or None,
            image=_env(K8S_GPU_IMAGE_ENV, env) or None,
        )

    def k8s_config(self) -> dict[str, Any]:
        """The ``dagster-k8s/config`` tag's value ({} when nothing is configured)."""
        container: dict[str, Any] = {}
        limits: dict[str, str] = {}
        requests: dict[str, str] = {}
        if self.gpus:
            # Extended resources are set as limits; Kubernetes copies them into requests.
            limits[GPU_RESOURCE] = str(self.gpus)
        if self.cpu:
            requests["cpu"] = self.cpu
        if self.memory:
            requests["memory"] = self.memory
        if self.image:
            container["image"] = self.image
        if limits or requests:
            container["resources"] = {
                key: value for key, value in (("limits", limits), ("requests", requests)) if value
            }
        pod: dict[str, Any] = {}
        if self.node_selector:
            pod["node_selector"] = dict(self.node_selector)
        if self.tolerations:
            pod["tolerations"] = [dict(t) for t in self.tolerations]
        config: dict[str, Any] = {}
        if container:
            config["container_config"] = container
        if pod:
            config["pod_spec_config"] = pod
        return config

    def tags(self) -> dict[str, str]:
        tags = dict(TRAIN_TAGS)
        if self.celery_queue:
            tags[CELERY_QUEUE_TAG] = self.celery_queue
        k8s = self.k8s_config()
        if k8s:
            tags[K8S_CONFIG_TAG] = json.dumps(k8s, sort_keys=True)
        return tags


def training_tags(routing: TrainingRouting | None = None) -> dict[str, str]:
    """Tags for steps that fit models (default: routing from the environment)."""
    return (routing if routing is not None else TrainingRouting.from_env()).tags()


def gpu_queue(env: Mapping[str, str] | None = None) -> str | None:
    """The Celery queue for training steps: ``HASTE_GPU_QUEUE`` = a queue name, or 1/true/on
    for `gpu`; unset/0/false/off = no routing (Celery's default queue ``dagster``)."""
    raw = _env(GPU_QUEUE_ENV, env)
    if raw.lower() in _OFF:
        return None
    if raw.lower() in _ON:
        return DEFAULT_GPU_QUEUE
    if not all(ch.isalnum() or ch in "-_." for ch in raw):
        raise ExecutorConfigError(
            f"{GPU_QUEUE_ENV}={raw!r}: a Celery queue name uses letters, digits, '-', '_' or "
            "'.' (or set 1/true for 'gpu', 0/false for no GPU routing)"
        )
    return raw


def parse_node_selector(text: str) -> dict[str, str]:
    """``key=value[,key=value...]`` (or a JSON object) → node selector."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExecutorConfigError(f"{K8S_NODE_SELECTOR_ENV}: invalid JSON: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ExecutorConfigError(
                f"{K8S_NODE_SELECTOR_ENV}: a JSON node selector maps label keys to strings"
            )
        return {str(k): v for k, v in data.items()}
    selector: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ExecutorConfigError(
                f"{K8S_NODE_SELECTOR_ENV}: {part!r} is not key=value "
                "(e.g. nvidia.com/gpu.present=true,pool=gpu)"
            )
        selector[key.strip()] = value.strip()
    return selector


def parse_tolerations(text: str) -> list[dict[str, str]]:
    """Tolerations in kubectl's taint syntax, comma-separated, or a JSON list.

    ``key=value:Effect`` (operator Equal), ``key:Effect`` or ``key`` (operator Exists); the
    effect may be left out to tolerate every effect of the taint.
    """
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExecutorConfigError(f"{K8S_TOLERATIONS_ENV}: invalid JSON: {exc}") from exc
        if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
            raise ExecutorConfigError(f"{K8S_TOLERATIONS_ENV}: JSON tolerations are a list of "
                                      "objects")
        return [{str(k): v for k, v in t.items()} for t in data]
    out: list[dict[str, str]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        head, colon, effect = part.partition(":")
        key, eq, value = head.partition("=")
        if not key.strip() or (colon and effect not in _TAINT_EFFECTS):
            raise ExecutorConfigError(
                f"{K8S_TOLERATIONS_ENV}: {part!r} is not key[=value][:effect] with effect one of "
                f"{', '.join(_TAINT_EFFECTS)} (e.g. nvidia.com/gpu=present:NoSchedule)"
            )
        toleration = {"key": key.strip(), "operator": "Equal" if eq else "Exists"}
        if eq:
            toleration["value"] = value.strip()
        if colon:
            toleration["effect"] = effect
        out.append(toleration)
    return out


def _count(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ExecutorConfigError(f"{name}={raw!r}: expected a whole number >= 0")
    return value


def _positive_int(name: str, raw: str) -> int:
    value = _count(name, raw)
    if value == 0:
        raise ExecutorConfigError(f"{name}={raw!r}: expected a whole number >= 1")
    return value

"""The variables that pick and configure the executors, the tag keys they read, and the
helpers that parse those variables (one error type for every bad value)."""

from __future__ import annotations

import os
from collections.abc import Mapping

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



class ExecutorConfigError(ConfigError):
    """An executor or routing variable has a value HASTE cannot use."""


def env_value(name: str, env: Mapping[str, str] | None) -> str:
    source = os.environ if env is None else env
    return source.get(name, "").strip()


def env_names(name: str, env: Mapping[str, str] | None) -> list[str]:
    return [part.strip() for part in env_value(name, env).split(",") if part.strip()]


def parse_count(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ExecutorConfigError(f"{name}={raw!r}: expected a whole number >= 0")
    return value


def parse_positive_int(name: str, raw: str) -> int:
    value = parse_count(name, raw)
    if value == 0:
        raise ExecutorConfigError(f"{name}={raw!r}: expected a whole number >= 1")
    return value

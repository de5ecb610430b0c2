"""Routing of training steps: the tags that send them to a GPU Celery queue or give their
Kubernetes Job a GPU, node selector and tolerations."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from haste_dagster.defs.executors.settings import (
    CELERY_QUEUE_TAG,
    DEFAULT_GPU_QUEUE,
    GPU_QUEUE_ENV,
    GPU_RESOURCE,
    K8S_CONFIG_TAG,
    K8S_GPU_IMAGE_ENV,
    K8S_GPUS_ENV,
    K8S_NODE_SELECTOR_ENV,
    K8S_TOLERATIONS_ENV,
    K8S_TRAIN_CPU_ENV,
    K8S_TRAIN_MEMORY_ENV,
    TRAIN_TAGS,
    ExecutorConfigError,
    env_value,
    parse_count,
)

_OFF = ("", "0", "false", "no", "off", "none")
_ON = ("1", "true", "yes", "on")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

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
        gpus = env_value(K8S_GPUS_ENV, env)
        return cls(
            celery_queue=gpu_queue(env),
            gpus=parse_count(K8S_GPUS_ENV, gpus) if gpus else 0,
            node_selector=parse_node_selector(env_value(K8S_NODE_SELECTOR_ENV, env)),
            tolerations=parse_tolerations(env_value(K8S_TOLERATIONS_ENV, env)),
            cpu=env_value(K8S_TRAIN_CPU_ENV, env) or None,
            memory=env_value(K8S_TRAIN_MEMORY_ENV, env) or None,
            image=env_value(K8S_GPU_IMAGE_ENV, env) or None,
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
    raw = env_value(GPU_QUEUE_ENV, env)
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

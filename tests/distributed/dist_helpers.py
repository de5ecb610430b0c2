"""Helpers shared by the distributed tests: a tiny competition and the job's run config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiny_competitions import write_tiny_regression

SLUG = "tiny_distributed"
# Routing and executor variables a developer's shell may hold; tests set what they need.
ROUTING_ENV = (
    "HASTE_DAGSTER_EXECUTOR",
    "HASTE_GPU_QUEUE",
    "HASTE_CELERY_BROKER_URL",
    "HASTE_CELERY_BACKEND_URL",
    "HASTE_K8S_GPUS",
    "HASTE_K8S_GPU_NODE_SELECTOR",
    "HASTE_K8S_GPU_TOLERATIONS",
    "HASTE_K8S_TRAIN_CPU",
    "HASTE_K8S_TRAIN_MEMORY",
    "HASTE_K8S_GPU_IMAGE",
    "HASTE_DISTRIBUTED_ROUNDS",
    "HASTE_DISTRIBUTED_CANDIDATES",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
)


def write_competition(folder: Path, slug: str = SLUG, rows: int = 240) -> Path:
    """3-fold CV of the default spec on it takes well under a second."""
    return write_tiny_regression(folder, slug, seed=5, rows=rows, iterations=4)


def run_config(slug: str = SLUG, seed: int = 0, label: str | None = None) -> dict[str, Any]:
    return {"ops": {"start_attempt": {"config": {"slug": slug, "seed": seed, "label": label}}}}

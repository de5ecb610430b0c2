"""Helpers shared by the distributed tests: a tiny competition and the job's run config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

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
    """A regression CSV + YAML: 3-fold CV of the default spec takes well under a second."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    y = 3 * x1 - 2 * x2**2 + (colour == "red") * 1.5 + rng.normal(scale=0.3, size=rows)
    pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "y": y}).to_csv(
        folder / f"{slug}.csv", index=False
    )
    definition = {
        "slug": slug,
        "title": "Tiny synthetic regression for distributed runs",
        "domain": "tabular_regression",
        "task": "regression",
        "source": f"csv:{slug}.csv",
        "target": "y",
        "metric": "rmse",
        "split": {"test_fraction": 0.25, "seed": 0},
        "budget": {"iterations": 4, "seconds": 600},
        "medals": {"gold": 0.45, "silver": 0.6, "bronze": 0.9},
    }
    path = folder / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


def run_config(slug: str = SLUG, seed: int = 0, label: str | None = None) -> dict[str, Any]:
    return {"ops": {"start_attempt": {"config": {"slug": slug, "seed": seed, "label": label}}}}

"""Tiny hand-made competitions written into a temporary definitions folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from haste_dagster.competitions.registry import clear_cache

WriteDef = Callable[..., Path]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    # Temporary folders are reused by name across tests; start each from an empty cache.
    clear_cache()


def tiny_binary_frame(rows: int = 40) -> pd.DataFrame:
    """`rows` rows, 60 % class 'a' / 40 % 'b'; x separates the classes perfectly."""
    n_a = rows * 3 // 5
    label = ["a"] * n_a + ["b"] * (rows - n_a)
    return pd.DataFrame(
        {
            "id": range(1000, 1000 + rows),
            "x": [i if lab == "a" else 100 + i for i, lab in enumerate(label)],
            "colour": [["red", "green", "blue"][i % 3] for i in range(rows)],
            "y": label,
        }
    )


def base_definition(slug: str, **overrides: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "slug": slug,
        "title": f"Tiny {slug}",
        "domain": "tabular_classification",
        "task": "binary",
        "source": f"csv:{slug}.csv",
        "target": "y",
        "drop": ["id"],
        "metric": "roc_auc",
        "split": {"test_fraction": 0.25, "seed": 3, "stratify": True},
        "budget": {"iterations": 2, "seconds": 10},
        "medals": {"gold": 0.95, "silver": 0.9, "bronze": 0.8},
    }
    definition.update(overrides)
    return definition


@pytest.fixture
def write_def(tmp_path: Path) -> WriteDef:
    """write_def(slug, frame=None, **fields) → YAML path in tmp_path (csv beside it)."""

    def write(slug: str, frame: pd.DataFrame | None = None, **fields: Any) -> Path:
        data = tiny_binary_frame() if frame is None else frame
        data.to_csv(tmp_path / f"{slug}.csv", index=False)
        path = tmp_path / f"{slug}.yaml"
        path.write_text(yaml.safe_dump(base_definition(slug, **fields), sort_keys=False))
        return path

    return write

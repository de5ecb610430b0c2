"""A tiny CSV competition with explicit medal thresholds, fast enough for loop tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml


def write_tiny_competition(folder: Path, slug: str = "tiny_regression", rows: int = 400) -> Path:
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    y = 3 * x1 - 2 * x2**2 + (colour == "red") * 1.5 + rng.normal(scale=0.3, size=rows)
    pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "y": y}).to_csv(
        folder / f"{slug}.csv", index=False
    )
    definition = {
        "slug": slug,
        "title": "Tiny synthetic regression",
        "domain": "tabular_regression",
        "task": "regression",
        "source": f"csv:{slug}.csv",
        "target": "y",
        "metric": "rmse",
        "split": {"test_fraction": 0.25, "seed": 0},
        "budget": {"iterations": 6, "seconds": 600},
        "medals": {"gold": 0.45, "silver": 0.6, "bronze": 0.9},
    }
    path = folder / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


@pytest.fixture
def tiny_defs(tmp_path: Path) -> Path:
    folder = tmp_path / "defs"
    folder.mkdir()
    write_tiny_competition(folder)
    return folder

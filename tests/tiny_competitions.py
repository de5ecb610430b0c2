"""The tiny synthetic competition the test layers solve in about a second.

y = coef·x1 − 2·x2² + 1.5·[colour = red] + noise, written as a CSV with its YAML (explicit
medal thresholds, so no leaderboard is needed). Importable from any test module: pytest puts
this folder on sys.path for `tests/conftest.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def write_tiny_regression(
    folder: Path,
    slug: str,
    seed: int = 1,
    rows: int = 200,
    *,
    coef: float = 3.0,
    iterations: int = 6,
    seconds: int = 600,
    domain: str = "tabular_regression",
) -> Path:
    """Write ``<slug>.csv`` and ``<slug>.yaml`` into ``folder``; returns the YAML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    y = coef * x1 - 2 * x2**2 + (colour == "red") * 1.5 + rng.normal(scale=0.3, size=rows)
    pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "y": y}).to_csv(
        folder / f"{slug}.csv", index=False
    )
    definition = {
        "slug": slug,
        "title": f"Tiny regression {slug}",
        "domain": domain,
        "task": "regression",
        "source": f"csv:{slug}.csv",
        "target": "y",
        "metric": "rmse",
        "split": {"test_fraction": 0.25, "seed": 0},
        "budget": {"iterations": iterations, "seconds": seconds},
        "medals": {"gold": 0.45, "silver": 0.6, "bronze": 0.9},
    }
    path = folder / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path

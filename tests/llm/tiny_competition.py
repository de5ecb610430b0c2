"""A tiny CSV regression competition and patch-reply helpers for the LLM loop tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from fake_openai import Reply, ok

SLUG = "tiny_llm_regression"


def tiny_competition(folder: Path, rows: int = 160) -> None:
    rng = np.random.default_rng(11)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    y = 3 * x1 - 2 * x2 + rng.normal(scale=0.3, size=rows)
    pd.DataFrame({"x1": x1, "x2": x2, "y": y}).to_csv(folder / f"{SLUG}.csv", index=False)
    definition = {
        "slug": SLUG, "title": "Tiny regression for the LLM loop", "domain": "tabular_regression",
        "task": "regression", "source": f"csv:{SLUG}.csv", "target": "y", "metric": "rmse",
        "split": {"test_fraction": 0.25, "seed": 0}, "budget": {"iterations": 3, "seconds": 600},
        "medals": {"gold": 0.45, "silver": 0.6, "bronze": 0.9},
    }
    (folder / f"{SLUG}.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))


def set_op(path: str, value: object) -> dict:
    return {"ops": [{"op": "set", "path": path, "value": value}]}


def patch_reply(patch: dict, **kw: object) -> Reply:
    return ok({"rationale": "r", "skill_ids": [], "patch": patch}, **kw)

"""Measured traits of a competition's training split; skills condition on these keys."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from haste_dagster.competitions.registry import Competition


class DataProfile(BaseModel):
    slug: str
    task: str
    rows: int
    n_features: int
    n_numeric: int
    n_categorical: int
    n_text: int
    n_date: int
    missing_rate: float  # share of missing feature cells
    max_cardinality: int  # most distinct values of any categorical column (0 if none)
    n_classes: int | None  # classification only
    minority_class_share: float | None  # rows of the rarest class / rows
    target_skew: float | None  # regression and forecast only (sample skewness)
    has_text: bool
    has_date: bool
    is_forecast: bool
    horizon: int | None
    rows_per_feature: float

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON-friendly dict, the vocabulary of skill conditions."""
        return self.model_dump(mode="json")


def profile_data(competition: Competition) -> DataProfile:
    """Profile the training split only: the hidden test must not shape the solution."""
    problem = competition.problem
    train = competition.train
    features = problem.feature_columns
    rows = len(train)
    cells = rows * len(features)
    missing = int(train[features].isna().sum().sum()) if features else 0
    cardinality = [int(train[c].nunique(dropna=True)) for c in problem.categorical]
    target = train[problem.target]

    n_classes = minority = skew = None
    if problem.is_classification:
        counts = target.value_counts()
        n_classes = int(len(problem.classes or counts))
        minority = float(counts.min() / rows) if rows else None
    else:
        value = float(target.astype(float).skew())
        skew = value if np.isfinite(value) else 0.0

    return DataProfile(
        slug=problem.slug,
        task=problem.task,
        rows=rows,
        n_features=len(features),
        n_numeric=len(problem.numeric),
        n_categorical=len(problem.categorical),
        n_text=len(problem.text),
        n_date=len(problem.date),
        missing_rate=round(missing / cells, 6) if cells else 0.0,
        max_cardinality=max(cardinality, default=0),
        n_classes=n_classes,
        minority_class_share=round(minority, 6) if minority is not None else None,
        target_skew=round(skew, 6) if skew is not None else None,
        has_text=bool(problem.text),
        has_date=bool(problem.date),
        is_forecast=problem.task == "forecast",
        horizon=problem.horizon,
        rows_per_feature=round(rows / max(1, len(features)), 3),
    )

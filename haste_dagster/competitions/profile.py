"""Measured traits of a competition's training split; skills condition on these keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from haste_dagster.competitions.registry import Competition

if TYPE_CHECKING:
    import pandas as pd

    from haste_dagster.competitions.problem import Problem


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
    # Mean characters per non-empty text cell (text problems); the strongest seasonal lag of
    # the target in rows of one series (forecast problems), from its autocorrelation.
    text_mean_chars: float | None = None
    seasonal_period: int | None = None

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
        text_mean_chars=_text_mean_chars(train, problem.text),
        seasonal_period=_seasonal_period(train, problem) if problem.task == "forecast" else None,
    )


def _text_mean_chars(train: pd.DataFrame, columns: list[str]) -> float | None:
    lengths = [train[c].dropna().astype(str).str.len() for c in columns]
    lengths = [s for s in lengths if len(s)]
    if not lengths:
        return None
    return round(float(np.mean([float(s.mean()) for s in lengths])), 2)


def _seasonal_period(train: pd.DataFrame, problem: Problem, max_lag: int = 400) -> int | None:
    """The lag (>= 2) of the highest autocorrelation peak of the target over one series
    (the longest, in time order); None when no peak reaches 0.2."""
    frame = train
    if problem.group_column and problem.group_column in train:
        sizes = train.groupby(problem.group_column).size()
        frame = train[train[problem.group_column] == sizes.idxmax()]
    if problem.time_column and problem.time_column in frame:
        frame = frame.sort_values(problem.time_column)
    y = frame[problem.target].astype(float).to_numpy()
    y = y[np.isfinite(y)]
    top = min(max_lag, len(y) // 3)
    if top < 3:
        return None
    y = y - y.mean()
    denom = float(np.dot(y, y))
    if denom <= 0:
        return None
    acf = np.array([float(np.dot(y[:-k], y[k:])) / denom for k in range(1, top + 1)])
    best, best_lag = 0.2, None
    for k in range(2, top):  # acf[k - 1] is the autocorrelation at lag k
        a = acf[k - 1]
        if a > best and a >= acf[k - 2] and a >= acf[k]:
            best, best_lag = a, k
    return best_lag

"""Ensembles of solution specs: cross-validated on the incumbent's folds, fitted for a test.

The specialist's last stage combines the top kept specs of an attempt. Members are fitted
independently; their predictions are combined in the metric's kind:

- a metric that scores only the order (ROC AUC, binary): the **rank average** (each member's
  predictions turned into normalised ranks, then averaged), so members on different
  probability scales weigh the same;
- other probability metrics (log loss, multiclass AUC, whose rows must sum to one) and value
  metrics (RMSE, MAE…): the arithmetic mean, because ranks are not on the scale those metrics
  score;
- label metrics: a majority vote, ties going to the first (best) member.

Members must share the validation settings, so the folds (and the paired keep rule against
the best single member) are the ones every member was scored on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from haste_dagster.competitions.metrics import Metric, get_metric
from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import BudgetExceeded, SpecError
from haste_dagster.solution.evaluate import (
    CVResult,
    check_target,
    feature_frame,
    fit_and_predict,
    make_folds,
    score_fold,
    target_values,
    with_classes,
)
from haste_dagster.solution.space import check_spec_for_problem
from haste_dagster.solution.spec import SolutionSpec

RANK_METRICS = frozenset({"roc_auc"})


def combination(metric: Metric, predictions_ndim: int = 1) -> str:
    """How members' predictions are combined for ``metric``: rank_mean | mean | vote."""
    if metric.prediction == "label":
        return "vote"
    if metric.name in RANK_METRICS and predictions_ndim == 1:
        return "rank_mean"
    return "mean"


def combine(predictions: Sequence[np.ndarray], metric: Metric) -> np.ndarray:
    """One prediction from the members' (best member first)."""
    if not predictions:
        raise SpecError("an ensemble needs at least one member")
    arrays = [np.asarray(p) for p in predictions]
    how = combination(metric, arrays[0].ndim)
    if how == "vote":
        out = arrays[0].copy()
        stacked = np.stack(arrays, axis=1)
        for i, row in enumerate(stacked):
            values, counts = np.unique(row, return_counts=True)
            top = values[counts == counts.max()]
            if len(top) == 1:
                out[i] = top[0]
        return out
    stacked = np.stack([a.astype(float) for a in arrays])
    if how == "rank_mean":
        n = stacked.shape[1]
        return np.mean([rankdata(p) / n for p in stacked], axis=0)
    return stacked.mean(axis=0)


def _check_members(specs: Sequence[SolutionSpec], problem: Problem) -> None:
    if len(specs) < 2:
        raise SpecError(f"an ensemble needs at least two members, got {len(specs)}")
    for spec in specs:
        check_spec_for_problem(spec, problem)
        if spec.validation != specs[0].validation:
            raise SpecError(
                "validation: ensemble members must share the validation settings (folds)"
            )


def _prepare(
    specs: Sequence[SolutionSpec], problem: Problem, train_df: pd.DataFrame
) -> tuple[Problem, Metric, pd.DataFrame, np.ndarray]:
    """Check the members against the problem and its target; (problem with its classes,
    metric, features, target values)."""
    _check_members(specs, problem)
    metric = get_metric(problem.metric)
    for spec in specs:
        check_target(spec, problem, train_df[problem.target])
    problem = with_classes(problem, train_df[problem.target])
    return problem, metric, feature_frame(problem, train_df), target_values(problem, train_df)


def cross_validate_ensemble(
    specs: Sequence[SolutionSpec],
    problem: Problem,
    train_df: pd.DataFrame,
    seed: int = 0,
    *,
    device: str = "cpu",
    n_jobs: int = 1,
    deadline: float | None = None,
) -> CVResult:
    """The combined members' score on the folds of ``specs[0].validation`` (the folds every
    member was scored on), like `solution.evaluate.cross_validate` for one spec."""
    wall, cpu = time.perf_counter(), time.process_time()
    problem, metric, X, y = _prepare(specs, problem, train_df)
    scores = []
    for fold, (train_idx, valid_idx) in enumerate(make_folds(specs[0], problem, train_df, seed)):
        preds = []
        for spec in specs:
            if deadline is not None and time.monotonic() > deadline:
                raise BudgetExceeded(f"the attempt's time budget ran out in fold {fold + 1}")
            preds.append(
                fit_and_predict(
                    spec, problem, X.iloc[train_idx], y[train_idx], X.iloc[valid_idx], metric,
                    seed=seed, device=device, n_jobs=n_jobs, deadline=deadline,
                )
            )
        pred = combine(preds, metric)
        scores.append(score_fold(metric, problem, y[valid_idx], pred, "the ensemble"))
    return CVResult.of(scores, wall, cpu)


def fit_predict_ensemble(
    specs: Sequence[SolutionSpec],
    problem: Problem,
    train_df: pd.DataFrame,
    test_features_df: pd.DataFrame,
    seed: int = 0,
    *,
    device: str = "cpu",
    n_jobs: int = 1,
) -> np.ndarray:
    """Fit every member on all of ``train_df`` and combine their test predictions."""
    problem, metric, X, y = _prepare(specs, problem, train_df)
    X_new = feature_frame(problem, test_features_df)
    preds = [
        fit_and_predict(spec, problem, X, y, X_new, metric, seed=seed, device=device,
                         n_jobs=n_jobs)
        for spec in specs
    ]
    return combine(preds, metric)

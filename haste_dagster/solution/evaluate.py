"""Score a spec by cross-validation with the competition metric, and fit-predict a test set.

Folds depend only on (problem, training rows, validation settings, seed), never on the
model, so every candidate of an attempt is scored on the same folds and per-fold scores
can be compared pairwise. Forecast folds mimic the hidden test: each validation block is
the ``horizon`` rows that follow its training rows in every group.

Anything that goes wrong while fitting a valid spec (a parameter combination a library
rejects, non-finite predictions) raises `SpecError` with the reason, so the refinement loop
records a failed iteration instead of crashing.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from haste_dagster.competitions.metrics import Metric, get_metric
from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import BudgetExceeded, SpecError
from haste_dagster.solution.compile import build_pipeline, parse_time
from haste_dagster.solution.fold_cache import (
    FoldCache,
    FoldFeatures,
    data_fingerprint,
    feature_key,
    fold_fingerprint,
)
from haste_dagster.solution.space import check_spec_for_problem, task_kind
from haste_dagster.solution.spec import SolutionSpec

try:  # XGBoost's own error type, so a rejected parameter becomes a SpecError too
    from xgboost.core import XGBoostError
except ImportError:  # pragma: no cover - xgboost is a dependency
    XGBoostError = RuntimeError  # type: ignore[assignment,misc]

_FIT_ERRORS = (ValueError, TypeError, ArithmeticError, IndexError, KeyError, XGBoostError)


@dataclass(frozen=True)
class CVResult:
    mean: float
    std: float  # sample standard deviation of the fold scores
    fold_scores: list[float]
    seconds: float  # wall-clock
    cpu_seconds: float = 0.0  # this process's CPU time (compare budgets on this)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, scores: list[float], wall: float, cpu: float) -> CVResult:
        """The result of ``scores``, timed from ``wall`` (perf_counter) and ``cpu``
        (process_time) taken when the cross-validation started."""
        arr = np.asarray(scores)
        return cls(
            mean=float(arr.mean()),
            std=float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            fold_scores=scores,
            seconds=time.perf_counter() - wall,
            cpu_seconds=time.process_time() - cpu,
        )


def score_fold(
    metric: Metric, problem: Problem, y_true: np.ndarray, pred: np.ndarray, subject: str
) -> float:
    """The metric on one validation fold; a SpecError (naming ``subject``, the model
    scored) when scoring fails or gives no finite number."""
    try:
        score = metric(y_true, pred, problem.classes)
    except ValueError as exc:
        raise SpecError(f"scoring {problem.metric} failed: {exc}") from exc
    if not np.isfinite(score):
        raise SpecError(f"{problem.metric} of {subject} is not finite ({score})")
    return float(score)


def input_columns(problem: Problem) -> list[str]:
    """The columns the compiled pipeline reads (feature roles + time/group for forecasts)."""
    cols = [*problem.feature_columns]
    for c in (problem.time_column, problem.group_column):
        if c and problem.task == "forecast" and c not in cols:
            cols.append(c)
    return [c for c in dict.fromkeys(cols) if c != problem.target]


def feature_frame(problem: Problem, df: pd.DataFrame) -> pd.DataFrame:
    cols = input_columns(problem)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{problem.slug}: data lacks the columns {missing}")
    return df[cols].reset_index(drop=True)


def with_classes(problem: Problem, y: pd.Series) -> Problem:
    """``problem`` with its class list filled from the data when the definition has none."""
    if task_kind(problem) != "classification" or problem.classes is not None:
        return problem
    return problem.model_copy(update={"classes": sorted(pd.unique(y).tolist())})


def make_folds(
    spec: SolutionSpec, problem: Problem, train_df: pd.DataFrame, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train positions, validation positions) per fold, oldest first for forecasts."""
    n_folds = spec.validation.n_folds
    n = len(train_df)
    if spec.validation.kind == "timeseries":
        return _time_folds(problem, train_df, n_folds)
    if n < 2 * n_folds:
        raise SpecError(f"validation.n_folds: {n_folds} folds need at least {2 * n_folds} rows")
    positions = np.arange(n)
    if spec.validation.kind == "stratified":
        y = train_df[problem.target].astype(str).to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class rarer than n_folds
            return list(
                StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(positions, y)
            )
    return list(KFold(n_folds, shuffle=True, random_state=seed).split(positions))


def _time_folds(
    problem: Problem, df: pd.DataFrame, n_folds: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    assert problem.time_column is not None and problem.horizon is not None
    horizon = problem.horizon
    t = parse_time(df[problem.time_column]).reset_index(drop=True)
    g = (
        df[problem.group_column].astype(str).reset_index(drop=True)
        if problem.group_column
        else pd.Series(0, index=t.index)
    )
    ordered = pd.DataFrame({"g": g, "t": t}).sort_values(["g", "t"], kind="mergesort")
    from_end = ordered.groupby("g", sort=False).cumcount(ascending=False).sort_index().to_numpy()
    folds = []
    for k in range(n_folds, 0, -1):
        valid = np.flatnonzero((from_end >= (k - 1) * horizon) & (from_end < k * horizon))
        train = np.flatnonzero(from_end >= k * horizon)
        if len(train) == 0 or len(valid) == 0:
            raise SpecError(
                f"validation.n_folds: {n_folds} folds of {horizon} rows per series leave no "
                f"training rows (the longest series has {int(from_end.max()) + 1} rows)"
            )
        folds.append((train, valid))
    return folds


def _predict(estimator: Any, X: pd.DataFrame, metric: Metric) -> np.ndarray:
    """Predictions in the metric's kind: P(classes[1]) for binary, (n, k) for multiclass."""
    if metric.prediction == "proba":
        proba = np.asarray(estimator.predict_proba(X), dtype=float)
        return proba[:, 1] if proba.shape[1] == 2 else proba
    pred = np.asarray(estimator.predict(X))
    return pred if metric.prediction == "label" else pred.astype(float)


def check_target(spec: SolutionSpec, problem: Problem, y: pd.Series) -> None:
    if task_kind(problem) == "regression":
        values = pd.to_numeric(y, errors="coerce")
        if values.isna().any():
            raise ValueError(
                f"{problem.slug}: target {problem.target!r} has missing or non-numeric values"
            )
        if spec.target_transform == "log1p" and (values <= -1).any():
            raise SpecError(
                f"target_transform: 'log1p' needs targets > -1, but the minimum is {values.min():g}"
            )


def fit_and_predict(
    spec: SolutionSpec,
    problem: Problem,
    X_fit: pd.DataFrame,
    y_fit: np.ndarray,
    X_new: pd.DataFrame,
    metric: Metric,
    *,
    seed: int,
    device: str,
    n_jobs: int,
    deadline: float | None = None,
    fold_features: tuple[FoldCache, str] | None = None,
) -> np.ndarray:
    estimator = build_pipeline(
        spec,
        problem,
        device=device,
        seed=seed,
        n_jobs=n_jobs,
        deadline=deadline,
        fold_features=fold_features,
    )
    try:
        # OpenMP/BLAS pools (HistGradientBoosting, numpy) would take every core otherwise;
        # the orchestrator runs several evaluations side by side
        with warnings.catch_warnings(), threadpool_limits(limits=n_jobs):
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(X_fit, y_fit)
            pred = _predict(estimator, X_new, metric)
    except (SpecError, BudgetExceeded):
        raise
    except _FIT_ERRORS as exc:
        raise SpecError(f"fitting {spec.model.family} failed: {type(exc).__name__}: {exc}") from exc
    if metric.prediction != "label" and not np.all(np.isfinite(pred)):
        raise SpecError(f"{spec.model.family} produced non-finite predictions")
    return pred


def target_values(problem: Problem, df: pd.DataFrame) -> np.ndarray:
    y = df[problem.target].reset_index(drop=True)
    return y.to_numpy() if task_kind(problem) == "classification" else y.to_numpy(dtype=float)


def cross_validate(
    spec: SolutionSpec,
    problem: Problem,
    train_df: pd.DataFrame,
    seed: int = 0,
    *,
    device: str = "cpu",
    n_jobs: int = 1,
    deadline: float | None = None,
    only_fold: int | None = None,
    fold_cache: FoldCache | None = None,
) -> CVResult:
    """Score ``spec`` with the competition metric on ``spec.validation`` folds of ``train_df``.

    ``deadline`` (a `time.monotonic` value): raise `BudgetExceeded` once it has passed,
    checked before every fold and between XGBoost's boosting rounds. ``only_fold``: score
    just that fold (Python indexing, -1 = the last, the most recent for forecasts), the
    prototype screen's cheap one-fold estimate. ``fold_cache``: reuse the fold feature
    matrices of an earlier candidate with the same feature pipeline (`solution.fold_cache`;
    the scores are the same as without it)."""
    wall, cpu = time.perf_counter(), time.process_time()
    check_spec_for_problem(spec, problem)
    metric = get_metric(problem.metric)
    check_target(spec, problem, train_df[problem.target])
    problem = with_classes(problem, train_df[problem.target])
    X, y = feature_frame(problem, train_df), target_values(problem, train_df)
    scores = []
    base_key = (
        feature_key(spec, problem, seed) + data_fingerprint(X, y) if fold_cache is not None else ""
    )
    folds = make_folds(spec, problem, train_df, seed)
    if only_fold is not None:
        folds = [folds[only_fold]]
    for fold, (train_idx, valid_idx) in enumerate(folds):
        if deadline is not None and time.monotonic() > deadline:
            raise BudgetExceeded(f"the attempt's time budget ran out before fold {fold + 1}")
        fold_features = (
            (fold_cache, base_key + fold_fingerprint(train_idx, valid_idx))
            if fold_cache is not None
            else None
        )
        pred = fit_and_predict(
            spec,
            problem,
            X.iloc[train_idx],
            y[train_idx],
            X.iloc[valid_idx],
            metric,
            seed=seed,
            device=device,
            n_jobs=n_jobs,
            deadline=deadline,
            fold_features=fold_features,
        )
        scores.append(score_fold(metric, problem, y[valid_idx], pred, spec.model.family))
    return CVResult.of(scores, wall, cpu)


class FeatureProbe(BaseEstimator):
    """Stands in for the model so a fold's pipeline runs only its features step (whose
    matrices the fold cache keeps); its predictions are placeholders, never scored."""

    def fit(self, X: Any, y: Any) -> FeatureProbe:
        self.n_classes_ = max(1, len(np.unique(np.asarray(y))))
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.zeros(X.shape[0])

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.full((X.shape[0], self.n_classes_), 1.0 / self.n_classes_)


def _fold_features(
    spec: SolutionSpec,
    problem: Problem,
    X: pd.DataFrame,
    y: np.ndarray,
    fold: tuple[np.ndarray, np.ndarray],
    key: str,
    seed: int,
    cache: FoldCache,
) -> FoldFeatures | None:
    """``spec``'s feature matrices for ``fold``, from the cache or by running its features
    step through the probe (which leaves them in the cache); None when they are too large
    to keep."""
    entry = cache.peek(key)
    if entry is not None:
        return entry
    train_idx, valid_idx = fold
    estimator = build_pipeline(
        spec, problem, seed=seed, fold_features=(cache, key), model=FeatureProbe()
    )
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")
        estimator.fit(X.iloc[train_idx], y[train_idx])
        estimator.predict(X.iloc[valid_idx])
    return cache.peek(key)


def same_model_input(
    a: SolutionSpec,
    b: SolutionSpec,
    problem: Problem,
    train_df: pd.DataFrame,
    seed: int,
    cache: FoldCache | None,
    deadline: float | None = None,
) -> bool:
    """Whether cross-validating ``a`` would fit the same model on the same matrices as ``b``
    on every fold, so its scores would be ``b``'s to the last bit: the two specs differ only
    in feature steps, and those produce identical training and validation matrices here (a
    missing-value indicator on data without missing values, a skew threshold while the skew
    step is off), or they are the same spec. Answers False whenever it cannot tell: no
    cache, a matrix too large to keep, a features step that fails (cross-validation will
    report why), the deadline.

    The matrices it builds stay in ``cache``, so cross-validating ``a`` afterwards fits no
    feature step twice; it stops at the first fold that differs."""
    if a.key() == b.key():
        return True
    if cache is None or cache.max_bytes == 0:
        return False
    if (a.model, a.target_transform, a.validation) != (b.model, b.target_transform, b.validation):
        return False
    try:
        check_spec_for_problem(a, problem)
        problem = with_classes(problem, train_df[problem.target])
        X, y = feature_frame(problem, train_df), target_values(problem, train_df)
        data = data_fingerprint(X, y)
        keys = [feature_key(spec, problem, seed) + data for spec in (a, b)]
        for fold in make_folds(a, problem, train_df, seed):
            if deadline is not None and time.monotonic() > deadline:
                return False
            where = fold_fingerprint(*fold)
            pair = [
                _fold_features(spec, problem, X, y, fold, key + where, seed, cache)
                for spec, key in zip((a, b), keys, strict=True)
            ]
            if pair[0] is None or pair[1] is None or not pair[0].same_as(pair[1]):
                return False
    except Exception:  # noqa: BLE001 - cross-validating the candidate reports the error
        return False
    return True


def fit_predict(
    spec: SolutionSpec,
    problem: Problem,
    train_df: pd.DataFrame,
    test_features_df: pd.DataFrame,
    seed: int = 0,
    *,
    device: str = "cpu",
    n_jobs: int = 1,
) -> np.ndarray:
    """Fit on all of ``train_df``; predict ``test_features_df`` in the metric's kind.

    Binary "proba" metrics get P(classes[1]) as (n,); multiclass (n, k) in ``problem.classes``
    order; "label" metrics get labels; regression/forecast values. Forecast test rows take
    their lag features from the training history.
    """
    check_spec_for_problem(spec, problem)
    metric = get_metric(problem.metric)
    check_target(spec, problem, train_df[problem.target])
    problem = with_classes(problem, train_df[problem.target])
    return fit_and_predict(
        spec,
        problem,
        feature_frame(problem, train_df),
        target_values(problem, train_df),
        feature_frame(problem, test_features_df),
        metric,
        seed=seed,
        device=device,
        n_jobs=n_jobs,
    )

"""Peer systems run on the same competitions, budgets and grading as our attempts.

FLAML (``pip install 'haste-dagster[bench]'``) is optional: it is imported only when a peer
run is asked for, and :class:`PeerUnavailable` says how to install it when it is missing.

What FLAML sees: the training split's feature columns (the hidden test answers never), the
competition metric as its optimisation objective (a custom FLAML metric wrapping ours), and
a time budget equal to the CPU seconds our attempt measurably used. FLAML's budget is
wall-clock and it overshoots (it finishes the trial it is in, then refits the best model on
all rows), so its own CPU seconds are measured and reported beside the budget.

Input preparation, kept minimal and the same for every competition: class labels become
codes ``0..k-1`` in the competition's class order; date columns become calendar numbers
(year, month, day, weekday, day of year, hour, days elapsed); categorical columns become
pandas categories. With text columns the matrix is sparse: median-imputed numbers, one-hot
categories and a word/bigram TF-IDF per text column. Forecast competitions are given to
FLAML as plain regression on those columns (FLAML's own forecasting tasks need a regular
single time index, which panels and covariate sets here do not all have).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from haste_dagster.bench.measure import Stopwatch, Usage
from haste_dagster.competitions.registry import Competition
from haste_dagster.errors import HasteError
from haste_dagster.solution.compile import parse_time

INSTALL_HINT = "install it with `pip install 'haste-dagster[bench]'` (or `pip install flaml`)"
MIN_TIME_BUDGET = 1.0  # FLAML needs some time to fit even one model


QUIET_LOGGERS = ("flaml", "flaml.automl.logger", "flaml.tune", "flaml.tune.searcher.blendsearch")


@contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Raise these loggers to WARNING for the duration (FLAML logs every trial at INFO)."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


class PeerUnavailable(HasteError):
    """A peer system is not installed."""


def flaml_status() -> tuple[bool, str | None]:
    """(available, why not) for FLAML."""
    try:
        import flaml  # noqa: F401
        from flaml import AutoML  # noqa: F401
    except ImportError as exc:
        return False, f"FLAML is not installed ({exc}); {INSTALL_HINT}"
    return True, None


@dataclass
class PeerRun:
    peer: str
    slug: str
    seed: int
    budget_cpu_seconds: float  # the measured CPU seconds it is matched to
    time_budget: float  # what it was asked for (FLAML's wall-clock time_budget)
    usage: Usage  # what it measurably used (fit + predict)
    predictions: Any = None
    best_estimator: str | None = None
    best_config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _date_parts(values: pd.Series, origin: Any) -> dict[str, np.ndarray]:
    t = parse_time(values)
    if pd.api.types.is_numeric_dtype(t):
        return {"value": t.to_numpy(dtype=float)}
    dt = t.dt
    elapsed = (t - origin).dt.total_seconds().to_numpy(dtype=float) / 86400.0
    return {
        "year": dt.year.to_numpy(dtype=float),
        "month": dt.month.to_numpy(dtype=float),
        "day": dt.day.to_numpy(dtype=float),
        "dayofweek": dt.day_of_week.to_numpy(dtype=float),
        "dayofyear": dt.day_of_year.to_numpy(dtype=float),
        "hour": dt.hour.to_numpy(dtype=float),
        "elapsed": elapsed,
    }


def _dense_columns(
    competition: Competition, train: pd.DataFrame, test: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Numeric, categorical and date-derived columns; returns the categorical names too."""
    problem = competition.problem
    out_train: dict[str, Any] = {}
    out_test: dict[str, Any] = {}
    for name in problem.numeric:
        out_train[name] = pd.to_numeric(train[name], errors="coerce").astype(float).to_numpy()
        out_test[name] = pd.to_numeric(test[name], errors="coerce").astype(float).to_numpy()
    for name in problem.categorical:
        a = train[name].astype(object).where(train[name].notna(), "__missing__").astype(str)
        b = test[name].astype(object).where(test[name].notna(), "__missing__").astype(str)
        dtype = pd.CategoricalDtype(sorted(set(a) | set(b)))
        out_train[name] = pd.Categorical(a, dtype=dtype)
        out_test[name] = pd.Categorical(b, dtype=dtype)
    for name in problem.date:
        parsed = parse_time(train[name])
        origin = parsed.min() if not pd.api.types.is_numeric_dtype(parsed) else 0.0
        for part, values in _date_parts(train[name], origin).items():
            out_train[f"{name}__{part}"] = values
        for part, values in _date_parts(test[name], origin).items():
            out_test[f"{name}__{part}"] = values
    frame_train = pd.DataFrame(out_train, index=range(len(train)))
    frame_test = pd.DataFrame(out_test, index=range(len(test)))
    return frame_train, frame_test, list(problem.categorical)


def flaml_inputs(competition: Competition) -> tuple[Any, np.ndarray, Any]:
    """(X_train, y_train, X_test) as FLAML gets them; y as class codes for classification."""
    problem = competition.problem
    train, test = competition.train, competition.test_features
    dense_train, dense_test, categorical = _dense_columns(competition, train, test)
    y = train[problem.target]
    if problem.classes is not None:
        codes = pd.Categorical(y, categories=problem.classes).codes
        if (codes < 0).any():
            raise HasteError(f"{problem.slug}: a training label is not among the classes")
        target = codes.astype(np.int64)
    else:
        target = y.to_numpy(dtype=float)
    if not problem.text:
        return dense_train, target, dense_test

    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import OneHotEncoder

    numeric = [c for c in dense_train.columns if c not in categorical]
    blocks_train, blocks_test = [], []
    if numeric:
        medians = dense_train[numeric].median().fillna(0.0)
        blocks_train.append(sparse.csr_matrix(dense_train[numeric].fillna(medians).to_numpy(float)))
        blocks_test.append(sparse.csr_matrix(dense_test[numeric].fillna(medians).to_numpy(float)))
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore")
        blocks_train.append(encoder.fit_transform(dense_train[categorical].astype(str)))
        blocks_test.append(encoder.transform(dense_test[categorical].astype(str)))
    for name in problem.text:
        vectorizer = TfidfVectorizer(
            max_features=20000, ngram_range=(1, 2), sublinear_tf=True, min_df=2
        )
        blocks_train.append(vectorizer.fit_transform(train[name].fillna("").astype(str)))
        blocks_test.append(vectorizer.transform(test[name].fillna("").astype(str)))
    x_train = sparse.hstack(blocks_train, format="csr", dtype=np.float64)
    x_test = sparse.hstack(blocks_test, format="csr", dtype=np.float64)
    return x_train, target, x_test


def _predict(estimator: Any, x: Any, kind: str, n_classes: int) -> np.ndarray:
    if kind == "proba":
        proba = np.asarray(estimator.predict_proba(x), dtype=float)
        return proba[:, 1] if n_classes == 2 and proba.ndim == 2 else proba
    return np.asarray(estimator.predict(x))


def _estimators(classification: bool, sparse_input: bool) -> list[str]:
    names = ["xgboost", "xgb_limitdepth", "rf", "extra_tree"]
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        pass
    else:
        names.insert(0, "lgbm")
    if classification:
        names.append("lrl1")
    if sparse_input and not classification:
        names.append("sgd")  # a linear learner for sparse regression
    return names


def run_flaml(competition: Competition, budget_cpu_seconds: float, seed: int = 0) -> PeerRun:
    """FLAML AutoML on ``competition`` asked for ``budget_cpu_seconds``; predictions for grading.

    Raises :class:`PeerUnavailable` when FLAML is missing; a failure inside FLAML is returned
    in ``PeerRun.error`` (the benchmark reports it and goes on).
    """
    available, why = flaml_status()
    if not available:
        raise PeerUnavailable(why or "FLAML is not installed")
    from flaml import AutoML

    problem = competition.problem
    metric = competition.metric
    classes = problem.classes
    n_classes = len(classes) if classes is not None else 0
    codes = list(range(n_classes)) if classes is not None else None
    time_budget = max(MIN_TIME_BUDGET, float(budget_cpu_seconds))
    run = PeerRun(
        peer="flaml",
        slug=competition.slug,
        seed=seed,
        budget_cpu_seconds=float(budget_cpu_seconds),
        time_budget=time_budget,
        usage=Usage(),
    )

    def objective(x_val, y_val, estimator, *_args: Any, **_kwargs: Any) -> tuple[float, dict]:
        score = metric(
            np.asarray(y_val), _predict(estimator, x_val, metric.prediction, n_classes), codes
        )
        return (-score if metric.higher_is_better else score), {"score": score}

    with Stopwatch() as watch:
        try:
            x_train, y_train, x_test = flaml_inputs(competition)
            automl = AutoML()
            sparse_input = not isinstance(x_train, pd.DataFrame)
            with warnings.catch_warnings(), _quiet(QUIET_LOGGERS):
                warnings.simplefilter("ignore")
                automl.fit(
                    x_train,
                    y_train,
                    task="classification" if classes is not None else "regression",
                    metric=objective,
                    time_budget=time_budget,
                    estimator_list=_estimators(classes is not None, sparse_input),
                    n_jobs=1,
                    seed=seed,
                    verbose=0,
                    log_file_name="",
                )
                predicted = _predict(automl, x_test, metric.prediction, n_classes)
        except Exception as exc:  # noqa: BLE001 - a peer failure is reported, not fatal
            run.error = f"{type(exc).__name__}: {exc}"
        else:
            if metric.prediction == "label" and classes is not None:
                predicted = np.asarray(classes, dtype=object)[np.asarray(predicted, dtype=np.int64)]
            run.predictions = predicted
            run.best_estimator = automl.best_estimator
            run.best_config = dict(automl.best_config or {})
    run.usage = watch.usage
    return run

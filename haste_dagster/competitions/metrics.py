"""Competition metrics: name → function, direction, and the kind of prediction scored.

Kinds: ``proba`` (class probabilities), ``label`` (one class per row), ``value`` (one number
per row), and the multi-target kinds ``multilabel`` ((n, k) probabilities, one column per
0/1 target) and ``values`` ((n, k) numbers, one column per target). A multi-target metric
that averages a single-column metric over the targets names it in ``per_column``: that is
the one place the solver (:mod:`haste_dagster.agents.multitarget`) learns which metric each
target's sub-problem is refined on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn import metrics as skm

from haste_dagster.errors import NotFoundError

PredictionKind = Literal["proba", "label", "value", "multilabel", "values"]
MULTI_TARGET_KINDS = ("multilabel", "values")


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    prediction: PredictionKind
    # fn(y_true, y_pred, classes) -> float; for "proba", y_pred is (n,) for binary
    # (probability of classes[1]) or (n, k) for multiclass, columns in `classes` order.
    fn: Callable[[np.ndarray, np.ndarray, list | None], float]
    # Multi-target only: the single-column metric this one is the mean of, over the targets.
    per_column: str | None = None

    def __call__(self, y_true, y_pred, classes: list | None = None) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(y_pred), classes))

    @property
    def multi_target(self) -> bool:
        """True when the metric scores several target columns at once."""
        return self.prediction in MULTI_TARGET_KINDS

    def better(self, a: float, b: float) -> bool:
        """True when score ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b


def _roc_auc(y, p, classes):
    if p.ndim == 1:
        positive = classes[1] if classes is not None else 1
        return skm.roc_auc_score(y == positive, p)
    return skm.roc_auc_score(y, p, multi_class="ovr", labels=classes)


def _log_loss(y, p, classes):
    return skm.log_loss(y, p, labels=classes)


def _rmsle(y, p, classes):
    return float(np.sqrt(np.mean((np.log1p(np.clip(p, 0, None)) - np.log1p(y)) ** 2)))


def _qwk(y, p, classes):
    # Labels arrive as codes of the sorted classes, so code distance is the ordinal distance.
    return skm.cohen_kappa_score(y, p, weights="quadratic")


def _mean_columnwise_roc_auc(y, p, classes):
    """Mean over target columns of each column's ROC AUC (Kaggle's multi-label metric)."""
    return float(np.mean([skm.roc_auc_score(y[:, j], p[:, j]) for j in range(y.shape[1])]))


def _mean_columnwise_rmsle(y, p, classes):
    """Mean over target columns of each column's RMSLE (negative values are refused, as
    scikit-learn's ``root_mean_squared_log_error`` does)."""
    return float(
        np.mean([skm.root_mean_squared_log_error(y[:, j], p[:, j]) for j in range(y.shape[1])])
    )


def _mape(y, p, classes):
    return float(np.mean(np.abs((y - p) / y)) * 100.0)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("accuracy", True, "label", lambda y, p, c: skm.accuracy_score(y, p)),
        Metric(
            "balanced_accuracy", True, "label", lambda y, p, c: skm.balanced_accuracy_score(y, p)
        ),
        Metric("f1", True, "label", lambda y, p, c: skm.f1_score(y, p, pos_label=c[1] if c else 1)),
        Metric("f1_macro", True, "label", lambda y, p, c: skm.f1_score(y, p, average="macro")),
        Metric("roc_auc", True, "proba", _roc_auc),
        Metric("log_loss", False, "proba", _log_loss),
        Metric(
            "rmse", False, "value", lambda y, p, c: float(np.sqrt(skm.mean_squared_error(y, p)))
        ),
        Metric("mae", False, "value", lambda y, p, c: skm.mean_absolute_error(y, p)),
        Metric("rmsle", False, "value", _rmsle),
        Metric("mape", False, "value", _mape),
        Metric("r2", True, "value", lambda y, p, c: skm.r2_score(y, p)),
        Metric("qwk", True, "label", _qwk),
        Metric(
            "mean_columnwise_roc_auc", True, "multilabel", _mean_columnwise_roc_auc, "roc_auc"
        ),
        Metric("mean_columnwise_rmsle", False, "values", _mean_columnwise_rmsle, "rmsle"),
    ]
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(sorted(METRICS))
        raise NotFoundError(f"unknown metric {name!r}; known metrics: {known}") from None

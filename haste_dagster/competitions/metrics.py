"""Competition metrics: name → function, direction, and the kind of prediction scored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn import metrics as skm

from haste_dagster.errors import NotFoundError

PredictionKind = Literal["proba", "label", "value"]


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    prediction: PredictionKind
    # fn(y_true, y_pred, classes) -> float; for "proba", y_pred is (n,) for binary
    # (probability of classes[1]) or (n, k) for multiclass, columns in `classes` order.
    fn: Callable[[np.ndarray, np.ndarray, list | None], float]

    def __call__(self, y_true, y_pred, classes: list | None = None) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(y_pred), classes))

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
    ]
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(sorted(METRICS))
        raise NotFoundError(f"unknown metric {name!r}; known metrics: {known}") from None

"""The custom estimators and transformers a compiled pipeline is built from (module-level
classes, so fitted pipelines pickle and clone), and the forecast target features
(see ``solution.compile`` for how they are used)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin, clone
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from haste_dagster.solution.space import effective_lag

MISSING = "__missing__"
_PERIODS = {
    "quarter": 4,
    "month": 12,
    "weekofyear": 53,
    "day": 31,
    "dayofweek": 7,
    "dayofyear": 366,
    "hour": 24,
    "minute": 60,
}



# ---------------------------------------------------------------------------------------
# Transformers
# ---------------------------------------------------------------------------------------


def to_float(X: Any) -> np.ndarray:
    """Numeric columns as float64 with NaN (pandas nullable dtypes and stray strings too)."""
    frame = pd.DataFrame(X)
    return frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def to_float32(X: Any) -> Any:
    """Dense or sparse matrix as float32."""
    return X.astype(np.float32)


def text_1d(X: Any) -> np.ndarray:
    """One text column as a 1-D array of str (missing → empty document)."""
    series = X.iloc[:, 0] if isinstance(X, pd.DataFrame) else pd.Series(np.ravel(X))
    return series.astype(object).where(series.notna(), "").astype(str).to_numpy()


class SkewLog1p(TransformerMixin, BaseEstimator):
    """Signed log1p of the columns whose |skewness| on the training data exceeds ``threshold``."""

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = threshold

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values pass through (imputed later)
        return tags

    def fit(self, X: np.ndarray, y: Any = None) -> SkewLog1p:
        X = validate_data(self, X, dtype=float, ensure_all_finite="allow-nan")
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
            skew = np.nanmean(((X - mean) / np.where(std > 0, std, 1.0)) ** 3, axis=0)
        self.mask_ = np.nan_to_num(np.abs(skew)) > self.threshold
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(
            self, X, dtype=float, ensure_all_finite="allow-nan", copy=True, reset=False
        )
        X[:, self.mask_] = np.sign(X[:, self.mask_]) * np.log1p(np.abs(X[:, self.mask_]))
        return X


class CategoryCleaner(TransformerMixin, BaseEstimator):
    """Categories as strings; missing becomes its own category or the training mode."""

    def __init__(self, impute: str = "constant") -> None:
        self.impute = impute

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing is a category of its own
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.transformer_tags.preserves_dtype = []  # always strings, for the encoder after it
        return tags

    @staticmethod
    def _clean(X: Any) -> np.ndarray:
        frame = pd.DataFrame(X).astype(object)
        # copy: pandas 3 (copy-on-write) hands out read-only views
        return frame.where(frame.notna(), MISSING).astype(str).to_numpy(dtype=object, copy=True)

    def fit(self, X: Any, y: Any = None) -> CategoryCleaner:
        # Labels of any type, kept as given: only the column count is validated here.
        validate_data(self, X, skip_check_array=True)
        values = self._clean(X)
        self.modes_ = []
        for j in range(values.shape[1]):
            col = values[:, j][values[:, j] != MISSING]
            uniq, counts = np.unique(col, return_counts=True)
            self.modes_.append(str(uniq[np.argmax(counts)]) if len(uniq) else MISSING)
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        validate_data(self, X, skip_check_array=True, reset=False)
        values = self._clean(X)
        if self.impute == "most_frequent":
            for j, mode in enumerate(self.modes_):
                values[values[:, j] == MISSING, j] = mode
        return values


def parse_time(series: pd.Series) -> pd.Series:
    """Timestamps (naive) from datetimes or strings; numeric columns are kept as numbers."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return pd.to_numeric(series, errors="coerce").astype(float)
    parsed = pd.to_datetime(series, errors="coerce", utc=False, format="mixed")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed


class DateParts(TransformerMixin, BaseEstimator):
    """Calendar parts of date columns (sin/cos pairs when ``cyclical``), plus ``elapsed`` days.

    A numeric time column (e.g. a year fraction) has no calendar: it contributes only
    ``elapsed`` (its value minus the training minimum).
    """

    def __init__(self, parts: tuple[str, ...] = ("year", "month"), cyclical: bool = False) -> None:
        self.parts = parts
        self.cyclical = cyclical

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing date gives missing parts
        tags.input_tags.string = True  # dates as text are parsed
        return tags

    def fit(self, X: Any, y: Any = None) -> DateParts:
        validate_data(self, X, skip_check_array=True)  # dates stay dates: count columns only
        frame = pd.DataFrame(X)
        self.origins_ = []
        for name in frame.columns:
            t = parse_time(frame[name])
            self.origins_.append(t.min())
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        validate_data(self, X, skip_check_array=True, reset=False)
        frame = pd.DataFrame(X)
        out: list[np.ndarray] = []
        for j, name in enumerate(frame.columns):
            t = parse_time(frame[name])
            origin = self.origins_[j]
            if not pd.api.types.is_datetime64_any_dtype(t):
                out.append((t - origin).to_numpy(dtype=float, na_value=np.nan))
                continue
            for part in self.parts:
                if part == "elapsed":
                    delta = (t - origin) / pd.Timedelta(days=1)
                    out.append(delta.to_numpy(dtype=float, na_value=np.nan))
                    continue
                values = _date_part(t, part)
                if self.cyclical and part in _PERIODS:
                    angle = 2 * np.pi * values / _PERIODS[part]
                    out += [np.sin(angle), np.cos(angle)]
                else:
                    out.append(values)
        if not out:
            return np.zeros((len(frame), 0))
        return np.column_stack(out)


# Spec part names → pandas accessor names (pandas 3 deprecates the unsnaked ones).
_ACCESSORS = {"dayofweek": "day_of_week", "dayofyear": "day_of_year"}


def _date_part(t: pd.Series, part: str) -> np.ndarray:
    dt = t.dt
    if part == "weekofyear":
        values = dt.isocalendar().week
    elif part == "is_weekend":
        values = dt.day_of_week >= 5
    else:
        values = getattr(dt, _ACCESSORS.get(part, part))
    return pd.Series(values).astype("Float64").to_numpy(dtype=float, na_value=np.nan)


class EncodedClassifier(ClassifierMixin, BaseEstimator):
    """Fits ``estimator`` on label indices; predicts labels and probabilities in ``classes`` order.

    Classes absent from a training fold get probability 0 (the inner model only sees the
    classes present, re-indexed 0..m-1 as XGBoost requires).
    """

    def __init__(self, estimator: Any, classes: list | None = None) -> None:
        self.estimator = estimator
        self.classes = classes

    def fit(self, X: Any, y: Any) -> EncodedClassifier:
        validate_data(self, X, skip_check_array=True)  # the inner model checks the values
        if y is None:
            raise ValueError("EncodedClassifier requires y to be passed, but the target y is None")
        y = column_or_1d(y, warn=True)
        classes = list(self.classes) if self.classes is not None else sorted(pd.unique(y).tolist())
        lookup = {c: i for i, c in enumerate(classes)}
        try:
            idx = np.fromiter((lookup[v] for v in y.tolist()), dtype=int, count=len(y))
        except KeyError as exc:
            raise ValueError(f"label {exc.args[0]!r} is not one of the classes {classes}") from None
        present = np.unique(idx)
        if len(present) < 2:
            raise ValueError("the training data holds one class only")
        self.classes_ = np.asarray(classes)
        self.present_ = present
        self.estimator_ = clone(self.estimator).fit(X, np.searchsorted(present, idx))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        inner = self.estimator_.predict_proba(X)
        out = np.zeros((inner.shape[0], len(self.classes_)))
        out[:, self.present_] = inner
        return out

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        if hasattr(self.estimator_, "predict_proba"):
            codes = self.present_[np.argmax(self.estimator_.predict_proba(X), axis=1)]
        else:
            codes = self.present_[np.asarray(self.estimator_.predict(X), dtype=int)]
        return self.classes_[codes]


# ---------------------------------------------------------------------------------------
# Forecast target features
# ---------------------------------------------------------------------------------------

TARGET_COL = "__target__"


def forecast_feature_names(lags: list[int], rolling: list[int], horizon: int) -> list[str]:
    """Column names of the target features, in a fixed order (lags deduplicated)."""
    effective = sorted({effective_lag(lag, horizon) for lag in lags})
    return [f"lag_{lag}" for lag in effective] + [f"rollmean_{w}" for w in sorted(set(rolling))]


def forecast_target_features(
    frame: pd.DataFrame,
    *,
    time_column: str,
    group_column: str | None,
    horizon: int,
    lags: list[int],
    rolling: list[int],
) -> pd.DataFrame:
    """Lag/rolling features of ``frame[TARGET_COL]`` for every row of ``frame``.

    Rows are ordered by time within their group (stable for ties); a feature of a row only
    reads target values at least ``horizon`` rows earlier in the same group. Unknown targets
    (NaN) stay unknown: they are never filled from later rows.
    """
    names = forecast_feature_names(lags, rolling, horizon)
    if not names:
        return pd.DataFrame(index=frame.index)
    key = parse_time(frame[time_column])
    groups = frame[group_column].astype(str) if group_column else pd.Series(0, index=frame.index)
    order = pd.DataFrame({"g": groups, "t": key}).sort_values(["g", "t"], kind="mergesort").index
    y = pd.to_numeric(frame.loc[order, TARGET_COL], errors="coerce").astype(float)
    g = groups.loc[order]
    by_group = y.groupby(g, sort=False)
    out: dict[str, pd.Series] = {}
    for lag in sorted({effective_lag(lag, horizon) for lag in lags}):
        out[f"lag_{lag}"] = by_group.shift(lag)
    if rolling:
        base = by_group.shift(horizon)  # the newest value a test row may see
        base_by_group = base.groupby(g, sort=False)
        for w in sorted(set(rolling)):
            out[f"rollmean_{w}"] = base_by_group.transform(
                lambda s, w=w: s.rolling(w, min_periods=1).mean()
            )
    return pd.DataFrame(out).loc[frame.index, names]


class ForecastRegressor(RegressorMixin, BaseEstimator):
    """Adds target lag/rolling features computed from the stored training history.

    ``fit`` stores (time, group, target) of its training rows; ``predict`` appends the new
    rows with unknown targets, so their features can only come from the training history.
    """

    def __init__(
        self,
        estimator: Any,
        time_column: str,
        group_column: str | None,
        horizon: int,
        lags: list[int],
        rolling: list[int],
    ) -> None:
        self.estimator = estimator
        self.time_column = time_column
        self.group_column = group_column
        self.horizon = horizon
        self.lags = lags
        self.rolling = rolling

    def _keys(self, X: pd.DataFrame) -> pd.DataFrame:
        cols = [self.time_column] + ([self.group_column] if self.group_column else [])
        return X[cols].reset_index(drop=True).copy()

    def _features(self, frame: pd.DataFrame) -> pd.DataFrame:
        return forecast_target_features(
            frame,
            time_column=self.time_column,
            group_column=self.group_column,
            horizon=self.horizon,
            lags=list(self.lags),
            rolling=list(self.rolling),
        )

    def _with(self, X: pd.DataFrame, feats: pd.DataFrame) -> pd.DataFrame:
        base = X.reset_index(drop=True)
        feats = feats.reset_index(drop=True)
        return pd.concat([base.drop(columns=list(feats.columns), errors="ignore"), feats], axis=1)

    def fit(self, X: pd.DataFrame, y: Any) -> ForecastRegressor:
        validate_data(self, X, skip_check_array=True)
        history = self._keys(X)
        history[TARGET_COL] = np.asarray(y, dtype=float)
        self.history_ = history
        self.estimator_ = clone(self.estimator).fit(self._with(X, self._features(history)), y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self)
        new = self._keys(X)
        new[TARGET_COL] = np.nan
        both = pd.concat([self.history_, new], ignore_index=True)
        feats = self._features(both).iloc[len(self.history_) :]
        return self.estimator_.predict(self._with(X, feats))

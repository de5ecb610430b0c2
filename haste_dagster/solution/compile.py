"""Compile a SolutionSpec for a Problem into a scikit-learn estimator.

    build_pipeline(spec, problem) →
        classification: EncodedClassifier(Pipeline(features, model))  labels ↔ problem.classes
        regression:     Pipeline(features, model), in TransformedTargetRegressor for log1p
        forecast:       ForecastRegressor(regression estimator) adding target lags/rolling means

`features` is a ColumnTransformer over the problem's column roles. Every transformer here
is a module-level class, so fitted pipelines pickle and clone.

Forecasting. Lag and rolling features of the target are computed by `ForecastRegressor`
from the training history it stores at fit time, never from the rows it predicts: a lag L
is used as the smallest multiple of L that is >= horizon (`space.effective_lag`), and a
rolling mean of W rows ends one horizon back, so every feature of a row is at least
``horizon`` rows old within its group. The hidden test is the last ``horizon`` rows of each
group, so each of its rows has its features from training data only.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)
from sklearn.svm import LinearSVC, LinearSVR
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from haste_dagster.competitions.metrics import get_metric
from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import BudgetExceeded, SpecError
from haste_dagster.solution.fold_cache import CachedFeatures, FoldCache
from haste_dagster.solution.space import check_spec_for_problem, effective_lag, task_kind
from haste_dagster.solution.spec import SolutionSpec

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


# ---------------------------------------------------------------------------------------
# Pipeline assembly
# ---------------------------------------------------------------------------------------


def _scaler(kind: str) -> Any:
    return {"standard": StandardScaler(), "robust": RobustScaler()}.get(kind, "passthrough")


def _numeric_pipe(spec: SolutionSpec) -> Pipeline:
    step = spec.numeric
    strategy = step.impute if step.impute != "constant" else "constant"
    steps: list[tuple[str, Any]] = [
        ("to_float", FunctionTransformer(to_float)),
        (
            "impute",
            SimpleImputer(
                strategy=strategy,
                fill_value=0.0,
                keep_empty_features=True,
                add_indicator=step.missing_indicator,
            ),
        ),
    ]
    if step.log1p_skewed:
        steps.append(("log1p", SkewLog1p(step.skew_threshold)))
    steps.append(("scale", _scaler(step.scale)))
    return Pipeline(steps)


def _categorical_pipe(spec: SolutionSpec, kind: str, dense: bool, seed: int) -> Pipeline:
    step = spec.categorical
    if step.encoding == "onehot":
        encoder: Any = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            max_categories=step.max_categories,
            sparse_output=not dense,
        )
    elif step.encoding == "ordinal":
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=-1,
            max_categories=step.max_categories,
        )
    else:  # target encoding, cross-fitted on folds seeded like everything else
        splitter = (
            StratifiedKFold(5, shuffle=True, random_state=seed)
            if kind == "classification"
            else KFold(5, shuffle=True, random_state=seed)
        )
        # Explicit for regression: sklearn infers "multiclass" from an integer target (e.g.
        # prices in whole dollars) and would emit one column per distinct value.
        target_type = "auto" if kind == "classification" else "continuous"
        encoder = TargetEncoder(cv=splitter, target_type=target_type)
    return Pipeline([("clean", CategoryCleaner(step.impute)), ("encode", encoder)])


def _text_pipe(spec: SolutionSpec) -> Pipeline:
    step = spec.text
    ngram = (1, step.ngram_max) if step.analyzer == "word" else (2, step.char_ngram_max)
    tfidf = TfidfVectorizer(
        max_features=step.max_features,
        ngram_range=ngram,
        min_df=step.min_df,
        sublinear_tf=step.sublinear_tf,
        analyzer=step.analyzer,
        dtype=np.float32,
    )
    return Pipeline([("to_text", FunctionTransformer(text_1d)), ("tfidf", tfidf)])


def _date_pipe(parts: list[str], cyclical: bool, scale: str) -> Pipeline:
    return Pipeline(
        [
            ("parts", DateParts(tuple(parts), cyclical)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", _scaler(scale)),
        ]
    )


def feature_columns(spec: SolutionSpec, problem: Problem) -> dict[str, list[str]]:
    """Columns per role as the compiler uses them (forecast: lag columns join numeric)."""
    reserved = {problem.target}
    if problem.task == "forecast":
        reserved |= {c for c in (problem.time_column, problem.group_column) if c}
    numeric = [c for c in problem.numeric if c not in reserved]
    categorical = [c for c in problem.categorical if c not in reserved]
    date = [c for c in problem.date if c not in reserved]
    if problem.task == "forecast":
        assert problem.horizon is not None
        numeric += forecast_feature_names(
            spec.forecast.lags, spec.forecast.rolling, problem.horizon
        )
        if problem.group_column:
            categorical.append(problem.group_column)  # the series identity
    return {
        "numeric": numeric,
        "categorical": categorical,
        "text": [c for c in problem.text if c not in reserved],
        "date": date,
        "time": [problem.time_column] if problem.task == "forecast" and problem.time_column else [],
    }


def _features(spec: SolutionSpec, problem: Problem, kind: str, seed: int) -> ColumnTransformer:
    cols = feature_columns(spec, problem)
    dense = not cols["text"]
    transformers: list[tuple[str, Any, Any]] = []
    if cols["numeric"]:
        transformers.append(("numeric", _numeric_pipe(spec), cols["numeric"]))
    if cols["categorical"]:
        transformers.append(
            ("categorical", _categorical_pipe(spec, kind, dense, seed), cols["categorical"])
        )
    for i, column in enumerate(cols["text"]):
        transformers.append((f"text_{i}", _text_pipe(spec), column))
    if cols["date"] and spec.date.parts:
        transformers.append(
            (
                "date",
                _date_pipe(spec.date.parts, spec.date.cyclical, spec.numeric.scale),
                cols["date"],
            )
        )
    if cols["time"]:
        parts = list(spec.forecast.calendar)
        if spec.forecast.trend and "elapsed" not in parts:
            parts.append("elapsed")
        if parts:
            transformers.append(
                (
                    "time",
                    _date_pipe(parts, spec.forecast.cyclical, spec.numeric.scale),
                    cols["time"],
                )
            )
    if not transformers:
        raise SpecError(f"spec: no feature columns to use for problem {problem.slug!r}")
    return ColumnTransformer(
        transformers,
        remainder="drop",
        sparse_threshold=0.0 if dense else 1.0,
        verbose_feature_names_out=False,
    )


@functools.cache
def _stop_at_deadline() -> type:
    """The XGBoost callback class (built on first use: importing XGBoost costs a second)."""
    from xgboost.callback import TrainingCallback

    class StopAtDeadline(TrainingCallback):
        """Stop a fit that runs past ``deadline`` (a `time.monotonic` value): boosting
        rounds are where one evaluation can take many minutes (hundreds of rounds on a
        wide TF-IDF matrix), so the attempt's time budget is enforced between rounds."""

        def __init__(self, deadline: float) -> None:
            super().__init__()
            self.deadline = deadline

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            if time.monotonic() > self.deadline:
                raise BudgetExceeded(
                    f"the attempt's time budget ran out during boosting round {epoch + 1}"
                )
            return False

    return StopAtDeadline


def make_model(
    family: str,
    params: dict[str, Any],
    kind: str,
    *,
    seed: int = 0,
    device: str = "cpu",
    n_jobs: int = 1,
    needs_proba: bool = False,
    deadline: float | None = None,
) -> Any:
    """The scikit-learn/XGBoost estimator of one model family with the spec's parameters.

    ``deadline`` (a `time.monotonic` value) stops an XGBoost fit that runs past it with
    `BudgetExceeded`."""
    p = dict(params)
    classify = kind == "classification"
    if "class_weight" in p:
        weight = p.pop("class_weight")
        if classify:
            p["class_weight"] = None if weight == "none" else weight
    if family == "xgboost":
        import xgboost

        cls = xgboost.XGBClassifier if classify else xgboost.XGBRegressor
        callbacks = [_stop_at_deadline()(deadline)] if deadline is not None else None
        return cls(
            **p,
            tree_method="hist",
            device=device,
            n_jobs=n_jobs,
            random_state=seed,
            verbosity=0,
            callbacks=callbacks,
        )
    if family == "logistic_regression":
        solver = "saga" if p["l1_ratio"] > 0 else "lbfgs"  # lbfgs cannot do L1
        return LogisticRegression(**p, solver=solver, random_state=seed)
    if family == "ridge":
        return Ridge(**p, random_state=seed)
    if family == "linear_svm":
        if not classify:
            return LinearSVR(
                C=p["C"],
                loss="squared_epsilon_insensitive",
                dual="auto",
                max_iter=5000,
                random_state=seed,
            )
        svc = LinearSVC(**p, dual="auto", max_iter=5000, random_state=seed)
        # LinearSVC has no probabilities: calibrate when the metric scores them
        return CalibratedClassifierCV(svc, method="sigmoid", cv=3) if needs_proba else svc
    if family in ("random_forest", "extra_trees"):
        table = {
            ("random_forest", True): RandomForestClassifier,
            ("random_forest", False): RandomForestRegressor,
            ("extra_trees", True): ExtraTreesClassifier,
            ("extra_trees", False): ExtraTreesRegressor,
        }
        return table[(family, classify)](**p, n_jobs=n_jobs, random_state=seed)
    if family == "hist_gradient_boosting":
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        # no early stopping: its random validation split would make scores depend on n
        return cls(**p, early_stopping=False, random_state=seed)
    raise SpecError(f"model.family: unknown model family {family!r}")


def build_pipeline(
    spec: SolutionSpec,
    problem: Problem,
    *,
    device: str = "cpu",
    seed: int = 0,
    n_jobs: int = 1,
    deadline: float | None = None,
    fold_features: tuple[FoldCache, str] | None = None,
) -> Any:
    """An unfitted estimator for ``spec`` on ``problem`` (fit(X, y) / predict / predict_proba).

    ``device="cuda"`` only switches XGBoost to the GPU; pass `detect_device()` to use one
    when it is really there. ``n_jobs`` stays 1 by default: the orchestrator parallelises.
    ``fold_features`` (cache, key): the features step of one cross-validation fold is served
    from the cache (`fold_cache.CachedFeatures`).
    """
    check_spec_for_problem(spec, problem)
    kind = task_kind(problem)
    needs_proba = get_metric(problem.metric).prediction == "proba"
    model = make_model(
        spec.model.family,
        spec.model.params,
        kind,
        seed=seed,
        device=device,
        n_jobs=n_jobs,
        needs_proba=needs_proba,
        deadline=deadline,
    )
    features: Any = _features(spec, problem, kind, seed)
    if fold_features is not None:
        features = CachedFeatures(features, *fold_features)
    steps: list[tuple[str, Any]] = [("features", features)]
    if problem.text and spec.model.family in ("logistic_regression", "linear_svm", "ridge"):
        # TF-IDF matrices are wide: float32 halves the memory traffic of every solver pass
        steps.append(("float32", FunctionTransformer(to_float32, accept_sparse=True)))
    pipe: Any = Pipeline([*steps, ("model", model)])
    if kind == "classification":
        return EncodedClassifier(pipe, problem.classes)
    if spec.target_transform == "log1p":
        pipe = TransformedTargetRegressor(
            regressor=pipe, func=np.log1p, inverse_func=_expm1_clipped, check_inverse=False
        )
    if problem.task == "forecast":
        assert problem.time_column is not None and problem.horizon is not None
        return ForecastRegressor(
            pipe,
            problem.time_column,
            problem.group_column,
            problem.horizon,
            list(spec.forecast.lags),
            list(spec.forecast.rolling),
        )
    return pipe


def _expm1_clipped(z: np.ndarray) -> np.ndarray:
    # exp overflows to inf above ~709; a wild model should score badly, not crash the metric
    return np.expm1(np.clip(z, -50.0, 700.0))


@lru_cache(maxsize=1)
def detect_device() -> str:
    """ "cuda" only if this XGBoost build can really train on a CUDA GPU here, else "cpu"."""
    try:
        import xgboost

        if not xgboost.build_info().get("USE_CUDA"):
            return "cpu"  # e.g. the xgboost-cpu wheel
        rng = np.random.default_rng(0)
        data = xgboost.DMatrix(rng.normal(size=(64, 3)), label=rng.normal(size=64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No visible GPU is found" falls back silently
            booster = xgboost.train({"device": "cuda", "tree_method": "hist"}, data, 2)
        config = json.loads(booster.save_config())
        used = str(config["learner"]["generic_param"].get("device", "cpu"))
        return "cuda" if used.startswith("cuda") else "cpu"
    except Exception:  # any failure means the GPU is not usable for us
        return "cpu"

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

from haste_dagster.competitions.metrics import get_metric
from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import BudgetExceeded, SpecError
from haste_dagster.solution.estimators import (  # noqa: F401 (re-exported)
    MISSING,
    TARGET_COL,
    CategoryCleaner,
    DateParts,
    EncodedClassifier,
    ForecastRegressor,
    SkewLog1p,
    forecast_feature_names,
    forecast_target_features,
    parse_time,
    text_1d,
    to_float,
    to_float32,
)
from haste_dagster.solution.fold_cache import CachedFeatures, FoldCache
from haste_dagster.solution.space import check_spec_for_problem, task_kind
from haste_dagster.solution.spec import SolutionSpec

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
    model: Any | None = None,
) -> Any:
    """An unfitted estimator for ``spec`` on ``problem`` (fit(X, y) / predict / predict_proba).

    ``device="cuda"`` only switches XGBoost to the GPU; pass `detect_device()` to use one
    when it is really there. ``n_jobs`` stays 1 by default: the orchestrator parallelises.
    ``fold_features`` (cache, key): the features step of one cross-validation fold is served
    from the cache (`fold_cache.CachedFeatures`). ``model``: an estimator that stands in for
    the spec's model (`evaluate.FeatureProbe`, which only runs the features step).
    """
    check_spec_for_problem(spec, problem)
    kind = task_kind(problem)
    needs_proba = get_metric(problem.metric).prediction == "proba"
    if model is None:
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

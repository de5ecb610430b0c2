"""The search space's tables: the feature steps' fields, the target transform and the model
families with their parameters (see ``solution.space``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from haste_dagster.solution.params import Param

TaskKind = Literal["classification", "regression"]

# Date parts a DateParts transformer can extract. "elapsed" is days since the earliest
# training timestamp (a trend a linear model can extrapolate).
DATE_PARTS: tuple[str, ...] = (
    "year",
    "quarter",
    "month",
    "weekofyear",
    "day",
    "dayofweek",
    "dayofyear",
    "hour",
    "minute",
    "is_weekend",
    "is_month_start",
    "is_month_end",
    "elapsed",
)


# ---------------------------------------------------------------------------------------
# Feature steps
# ---------------------------------------------------------------------------------------

STEPS: dict[str, dict[str, Param]] = {
    "numeric": {
        "impute": Param(
            "choice",
            "median",
            choices=("mean", "median", "constant"),
            doc="missing values: column mean, median, or 0",
        ),
        "scale": Param(
            "choice",
            "none",
            choices=("none", "standard", "robust"),
            importance=1.5,
            doc="matters for linear models, not for trees",
        ),
        "log1p_skewed": Param(
            "bool", False, doc="signed log1p of columns whose |skew| > threshold"
        ),
        "skew_threshold": Param("float", 1.0, 0.5, 5.0, importance=0.5),
        "missing_indicator": Param(
            "bool",
            False,
            importance=0.5,
            doc="add a 0/1 column per numeric column with missing values",
        ),
    },
    "categorical": {
        "encoding": Param(
            "choice", "onehot", choices=("onehot", "ordinal", "target"), importance=1.5
        ),
        "max_categories": Param(
            "int", 25, 2, 200, log=True, doc="one-hot/ordinal: rarer categories share one bucket"
        ),
        "impute": Param(
            "choice",
            "constant",
            choices=("constant", "most_frequent"),
            importance=0.5,
            doc="constant: missing is its own category",
        ),
    },
    "text": {
        "max_features": Param("int", 50000, 100, 200000, log=True, importance=1.5),
        "ngram_max": Param("int", 2, 1, 3, importance=1.5, doc="word n-grams (1, ngram_max)"),
        "min_df": Param("int", 2, 1, 20, log=True),
        "sublinear_tf": Param("bool", True),
        "analyzer": Param("choice", "word", choices=("word", "char_wb"), importance=1.5),
        "char_ngram_max": Param(
            "int",
            5,
            3,
            6,
            importance=0.5,
            doc="char_wb analyzer: character n-grams (2, char_ngram_max)",
        ),
    },
    "date": {
        "parts": Param("choice_list", ["year", "month", "day", "dayofweek"], choices=DATE_PARTS),
        "cyclical": Param(
            "bool", False, importance=0.5, doc="encode periodic parts as sin/cos pairs"
        ),
    },
    "forecast": {
        "calendar": Param(
            "choice_list",
            ["month", "day", "dayofweek", "dayofyear", "hour"],
            choices=DATE_PARTS,
            importance=1.5,
            doc="parts of the time column",
        ),
        "cyclical": Param("bool", False, importance=0.5),
        "trend": Param("bool", True, doc="days since the start of the series"),
        "lags": Param(
            "int_list",
            [],
            1,
            100000,
            max_len=12,
            importance=2.0,
            doc="target lags in rows (per group). A lag L is used as the smallest "
            "multiple of L that is >= the horizon, so it keeps its seasonal phase "
            "and is known for every hidden test row",
        ),
        "rolling": Param(
            "int_list",
            [],
            2,
            100000,
            max_len=6,
            importance=1.5,
            doc="rolling means of the target over W rows ending one horizon back",
        ),
    },
    "validation": {
        "kind": Param(
            "choice",
            "kfold",
            choices=("kfold", "stratified", "timeseries"),
            doc="fixed per task by default; changing it changes the folds",
        ),
        "n_folds": Param("int", 3, 2, 10),
    },
}
TARGET_TRANSFORM = Param(
    "choice",
    "none",
    choices=("none", "log1p"),
    importance=1.5,
    doc="regression: fit on log1p(y), predict expm1",
)

# Steps whose fields are plain scalars and lists that the search may touch.
SEARCH_STEPS = ("numeric", "categorical", "text", "date", "forecast")


# ---------------------------------------------------------------------------------------
# Model families
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    tasks: frozenset[str]
    params: dict[str, Param]
    sparse_ok: bool = True  # can take a TF-IDF sparse matrix (text problems)
    doc: str = ""
    defaults_by_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def defaults(self, task: TaskKind | None = None) -> dict[str, Any]:
        out = {k: p.default for k, p in self.params.items()}
        if task is not None:
            out.update(self.defaults_by_task.get(task, {}))
        return out


_CLASS_WEIGHT = Param(
    "choice", "none", choices=("none", "balanced"), classification_only=True, importance=0.7
)
_BOTH = frozenset({"classification", "regression"})


def _bagged_trees(*, max_features: float) -> dict[str, Param]:
    """The parameters random forests and extra trees share (only the default of
    ``max_features`` differs)."""
    return {
        "n_estimators": Param("int", 200, 20, 1000, log=True),
        "max_depth": Param("int", None, 2, 40, nullable=True, importance=1.5),
        "min_samples_leaf": Param("int", 1, 1, 100, log=True, importance=1.5),
        "max_features": Param("float", max_features, 0.05, 1.0, importance=1.5),
        "class_weight": Param(
            "choice",
            "none",
            choices=("none", "balanced", "balanced_subsample"),
            classification_only=True,
            importance=0.7,
        ),
    }


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "xgboost",
            _BOTH,
            {
                "n_estimators": Param("int", 400, 20, 3000, log=True, importance=2.0),
                "learning_rate": Param("float", 0.05, 0.005, 0.5, log=True, importance=2.0),
                "max_depth": Param("int", 6, 1, 12, importance=2.0),
                "min_child_weight": Param("float", 1.0, 0.01, 50.0, log=True, importance=1.5),
                "subsample": Param("float", 0.8, 0.4, 1.0),
                "colsample_bytree": Param("float", 0.8, 0.2, 1.0),
                "reg_lambda": Param("float", 1.0, 0.001, 100.0, log=True, zero_ok=True),
                "reg_alpha": Param(
                    "float", 0.0, 0.0001, 10.0, log=True, zero_ok=True, importance=0.7
                ),
                "gamma": Param("float", 0.0, 0.001, 10.0, log=True, zero_ok=True, importance=0.7),
            },
            doc="gradient-boosted trees (XGBoost, hist); the tabular default",
        ),
        Family(
            "logistic_regression",
            frozenset({"classification"}),
            {
                "C": Param(
                    "float",
                    1.0,
                    1e-4,
                    1e4,
                    log=True,
                    importance=3.0,
                    doc="inverse regularisation strength",
                ),
                "l1_ratio": Param(
                    "float",
                    0.0,
                    0.0,
                    1.0,
                    importance=0.5,
                    doc="0 = L2 (lbfgs); > 0 mixes in L1 (saga: slower, refused with text columns)",
                ),
                "class_weight": _CLASS_WEIGHT,
                "max_iter": Param("int", 1000, 50, 5000, log=True, importance=0.3),
            },
            doc="linear classifier; with TF-IDF the text default",
        ),
        Family(
            "ridge",
            frozenset({"regression"}),
            {"alpha": Param("float", 1.0, 1e-4, 1e4, log=True, importance=3.0)},
            doc="L2-regularised linear regression",
        ),
        Family(
            "linear_svm",
            _BOTH,
            {
                "C": Param("float", 0.5, 1e-4, 1e3, log=True, importance=3.0),
                "class_weight": _CLASS_WEIGHT,
            },
            doc="LinearSVC (sigmoid-calibrated when probabilities are scored) / LinearSVR",
        ),
        Family(
            "random_forest",
            _BOTH,
            _bagged_trees(max_features=0.5),
            sparse_ok=False,
            doc="bagged deep trees",
        ),
        Family(
            "extra_trees",
            _BOTH,
            _bagged_trees(max_features=0.7),
            sparse_ok=False,
            doc="extremely randomised trees",
        ),
        Family(
            "hist_gradient_boosting",
            _BOTH,
            {
                "learning_rate": Param("float", 0.1, 0.01, 0.5, log=True, importance=2.0),
                "max_iter": Param("int", 300, 20, 2000, log=True, importance=1.5),
                "max_leaf_nodes": Param("int", 31, 4, 256, log=True, importance=1.5),
                "min_samples_leaf": Param("int", 20, 1, 200, log=True, importance=1.5),
                "l2_regularization": Param("float", 0.0, 1e-4, 10.0, log=True, zero_ok=True),
                "max_depth": Param("int", None, 2, 20, nullable=True),
                "max_features": Param("float", 1.0, 0.1, 1.0, importance=0.7),
                "class_weight": _CLASS_WEIGHT,
            },
            sparse_ok=False,
            doc="scikit-learn's histogram gradient boosting (dense input only)",
        ),
    ]
}

# Sane starting points by task (what default_spec uses, and what a family switch starts from).
FAMILIES["logistic_regression"].defaults_by_task["classification"] = {"C": 4.0}

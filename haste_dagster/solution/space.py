"""The search space of solution specs: the single source of truth for what a spec may hold.

Every tunable value (a feature-step field, a model parameter, the target transform, the
validation scheme) is described once here by a `Param`: its type, range, log-scale flag and
default. `solution.spec` validates against it, `random_spec` samples from it and the
heuristic policy mutates within it, so the three can never disagree.

Which model families fit which tasks, and which feature steps matter for a problem, is
also decided here (`check_spec_for_problem`, `relevant_steps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from haste_dagster.competitions.metrics import get_metric
from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import SpecError

if TYPE_CHECKING:  # spec imports this module; import it lazily at runtime
    from haste_dagster.solution.spec import SolutionSpec

ParamKind = Literal["int", "float", "bool", "choice", "int_list", "choice_list"]
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


@dataclass(frozen=True)
class Param:
    """One tunable value. Ranges are inclusive; ``log`` means search in log space."""

    kind: ParamKind
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False  # None is a legal value (e.g. max_depth=None: unlimited)
    zero_ok: bool = False  # 0 is legal below a log-scale range (a regulariser switched off)
    max_len: int = 12  # list kinds
    classification_only: bool = False  # meaningless for regressors (class_weight)
    importance: float = 1.0  # prior weight for the search: how often changing it pays off
    doc: str = ""

    # ---- validation -------------------------------------------------------------------
    def allowed(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("choice", "choice_list"):
            opts = ", ".join(repr(c) for c in self.choices)
            return f"one of {opts}" if self.kind == "choice" else f"a list of {opts}"
        kind = "integer" if self.kind in ("int", "int_list") else "number"
        text = f"{kind} in [{_fmt(self.low)}, {_fmt(self.high)}]"
        if self.kind == "int_list":
            text = f"a list of at most {self.max_len} {text.replace('integer', 'integers')}"
        if self.zero_ok:
            text += " or 0"
        if self.nullable:
            text += " or null"
        return text

    def check(self, path: str, value: Any) -> Any:
        """The normalised value, or SpecError naming ``path``, the value and what is allowed."""

        def bad(why: str = "invalid value") -> SpecError:
            return SpecError(f"{path}: {why} {value!r}; allowed: {self.allowed()}")

        if value is None:
            if self.nullable:
                return None
            raise bad("null is not allowed, got")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise bad("expected a boolean, got")
        if self.kind == "choice":
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                if value in self.choices:
                    return value
            raise bad("unknown choice")
        if self.kind == "choice_list":
            if not isinstance(value, list | tuple):
                raise bad("expected a list, got")
            unknown = [v for v in value if v not in self.choices]
            if unknown:
                raise bad(f"unknown choice(s) {unknown!r} in")
            # canonical order (that of ``choices``) so equal sets give equal specs
            return [c for c in self.choices if c in value]
        if self.kind == "int_list":
            if not isinstance(value, list | tuple):
                raise bad("expected a list, got")
            items = sorted({self.check_item(path, v) for v in value})
            if len(items) > self.max_len:
                raise bad(f"more than {self.max_len} items in")
            return items
        return self._number(path, value, bad, integer=self.kind == "int")

    def check_item(self, path: str, value: Any) -> int:
        """One item of an int_list, checked against the range."""

        def bad(why: str = "invalid value") -> SpecError:
            return SpecError(f"{path}: {why} {value!r} (list item); allowed: {self.allowed()}")

        return int(self._number(path, value, bad, integer=True))

    def _number(self, path: str, value: Any, bad: Any, *, integer: bool) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("expected a number, got")
        if isinstance(value, float) and not math.isfinite(value):
            raise bad("not a finite number:")
        if integer:
            if isinstance(value, float) and not value.is_integer():
                raise bad("expected an integer, got")
            value = int(value)
        else:
            value = float(value)
        if self.zero_ok and value == 0:
            return value
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            raise bad("out of range:")
        return value

    # ---- sampling and mutation (numeric kinds work in a normalised [0, 1] coordinate) --
    def _to_unit(self, value: float) -> float:
        assert self.low is not None and self.high is not None
        if self.log:
            return (math.log(value) - math.log(self.low)) / (
                math.log(self.high) - math.log(self.low)
            )
        return (value - self.low) / (self.high - self.low)

    def _from_unit(self, u: float) -> Any:
        assert self.low is not None and self.high is not None
        u = min(1.0, max(0.0, u))
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        if self.kind == "int":
            return int(min(self.high, max(self.low, round(x))))
        return float(min(self.high, max(self.low, _round_sig(x))))

    def sample(self, rng: np.random.Generator) -> Any:
        if self.nullable and rng.random() < 0.2:
            return None
        if self.zero_ok and rng.random() < 0.25:
            return 0 if self.kind == "int" else 0.0
        if self.kind == "bool":
            return bool(rng.random() < 0.5)
        if self.kind == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.kind == "choice_list":
            picked = [c for c in self.choices if rng.random() < 0.5]
            return picked or [self.choices[int(rng.integers(len(self.choices)))]]
        if self.kind == "int_list":
            return list(self.default)  # list contents are problem-specific: see random_spec
        return self._from_unit(float(rng.random()))

    def mutate(self, value: Any, rng: np.random.Generator, sigma: float) -> Any:
        """A nearby value (a Gaussian step of ``sigma`` in the unit coordinate)."""
        if self.kind == "bool":
            return not value
        if self.kind == "choice":
            others = [c for c in self.choices if c != value]
            return others[int(rng.integers(len(others)))] if others else value
        if self.kind == "choice_list":
            toggle = self.choices[int(rng.integers(len(self.choices)))]
            out = [c for c in value if c != toggle] if toggle in value else [*value, toggle]
            return self.check("", out) if out else list(value)
        if self.kind == "int_list":
            return list(value)  # problem-specific: the policy handles lists
        if value is None:
            return self._from_unit(float(rng.random()))
        if self.nullable and rng.random() < 0.1:
            return None
        if self.zero_ok and value == 0:
            # from "off", jump to a value that does something (the low end is negligible)
            return self._from_unit(0.4 + 0.5 * float(rng.random()))
        if self.zero_ok and rng.random() < 0.1:
            return 0 if self.kind == "int" else 0.0
        u = self._to_unit(value)
        new = self._from_unit(u + float(rng.normal(0.0, sigma)))
        if new == value and self.kind == "int":  # a step too small to change an integer
            assert self.low is not None and self.high is not None
            step = 1 if rng.random() < 0.5 else -1
            new = int(min(self.high, max(self.low, value + step)))
        return new

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.kind,
            "default": self.default,
            "allowed": self.allowed(),
        }
        if self.log:
            out["log_scale"] = True
        if self.doc:
            out["doc"] = self.doc
        return out


def _round_sig(x: float, digits: int = 3) -> float:
    """Round to a few significant digits: readable specs, and near-duplicates collapse."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def _fmt(x: float | None) -> str:
    if x is None:
        return "?"
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e6 else f"{x:g}"


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
            {
                "n_estimators": Param("int", 200, 20, 1000, log=True),
                "max_depth": Param("int", None, 2, 40, nullable=True, importance=1.5),
                "min_samples_leaf": Param("int", 1, 1, 100, log=True, importance=1.5),
                "max_features": Param("float", 0.5, 0.05, 1.0, importance=1.5),
                "class_weight": Param(
                    "choice",
                    "none",
                    choices=("none", "balanced", "balanced_subsample"),
                    classification_only=True,
                    importance=0.7,
                ),
            },
            sparse_ok=False,
            doc="bagged deep trees",
        ),
        Family(
            "extra_trees",
            _BOTH,
            {
                "n_estimators": Param("int", 200, 20, 1000, log=True),
                "max_depth": Param("int", None, 2, 40, nullable=True, importance=1.5),
                "min_samples_leaf": Param("int", 1, 1, 100, log=True, importance=1.5),
                "max_features": Param("float", 0.7, 0.05, 1.0, importance=1.5),
                "class_weight": Param(
                    "choice",
                    "none",
                    choices=("none", "balanced", "balanced_subsample"),
                    classification_only=True,
                    importance=0.7,
                ),
            },
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


# ---------------------------------------------------------------------------------------
# Problem-aware helpers
# ---------------------------------------------------------------------------------------


def task_kind(problem: Problem) -> TaskKind:
    if problem.task == "forecast" or problem.task == "regression":
        return "regression"
    return "classification"


def fitting_families(problem: Problem) -> list[str]:
    """Families that can solve the problem's task with its column types."""
    kind = task_kind(problem)
    return [
        name
        for name, fam in FAMILIES.items()
        if kind in fam.tasks and (fam.sparse_ok or not problem.text)
    ]


def relevant_steps(problem: Problem) -> set[str]:
    """Feature steps that change the pipeline of this problem (others are inert)."""
    steps: set[str] = set()
    if problem.numeric or problem.task == "forecast":
        steps.add("numeric")  # forecast lag columns go through the numeric step
    if problem.categorical or problem.group_column:
        steps.add("categorical")
    if problem.text:
        steps.add("text")
    if [c for c in problem.date if c != problem.time_column]:
        steps.add("date")
    if problem.task == "forecast":
        steps.add("forecast")
    return steps


def default_validation_kind(problem: Problem) -> str:
    if problem.task == "forecast":
        return "timeseries"
    return "stratified" if task_kind(problem) == "classification" else "kfold"


def log_target_suits(problem: Problem) -> bool:
    """Metrics on relative/log error imply positive targets, where log1p(y) is the right scale."""
    return task_kind(problem) == "regression" and problem.metric in ("rmsle", "mape")


def check_spec_for_problem(spec: SolutionSpec, problem: Problem) -> None:
    """Raise SpecError when ``spec`` cannot solve ``problem`` (the spec alone is problem-free)."""
    kind = task_kind(problem)
    family = FAMILIES[spec.model.family]
    if kind not in family.tasks:
        fits = ", ".join(fitting_families(problem))
        raise SpecError(
            f"model.family: {spec.model.family!r} cannot solve a {problem.task} task; "
            f"allowed: {fits}"
        )
    if problem.text and not family.sparse_ok:
        fits = ", ".join(fitting_families(problem))
        raise SpecError(
            f"model.family: {spec.model.family!r} needs dense input and this problem has text "
            f"columns (TF-IDF is sparse); allowed: {fits}"
        )
    if (
        problem.text
        and spec.model.family == "logistic_regression"
        and spec.model.params.get("l1_ratio", 0) > 0
    ):
        # Measured on tweet_source (15.6k rows x 35.8k TF-IDF columns): 4.5 s per saga
        # epoch, so one fold at the default max_iter takes over an hour; lbfgs takes 6 s.
        raise SpecError(
            "model.params.l1_ratio: > 0 needs the saga solver, which takes hours on TF-IDF "
            "features; keep 0 (L2, lbfgs) when the problem has text columns"
        )
    if spec.target_transform != "none" and kind != "regression":
        raise SpecError(f"target_transform: {spec.target_transform!r} only applies to regression")
    vkind = spec.validation.kind
    if problem.task == "forecast":
        if vkind != "timeseries":
            raise SpecError(
                f"validation.kind: {vkind!r} on a forecast problem would validate on the past; "
                "allowed: 'timeseries'"
            )
        if not problem.time_column or not problem.horizon or problem.horizon < 1:
            raise SpecError("forecast problems need a time_column and a horizon >= 1")
    elif vkind == "timeseries":
        raise SpecError(
            "validation.kind: 'timeseries' needs a forecast problem; allowed: 'kfold', 'stratified'"
        )
    elif vkind == "stratified" and kind != "classification":
        raise SpecError(
            "validation.kind: 'stratified' needs a classification task; allowed: 'kfold'"
        )
    metric = get_metric(problem.metric)
    if metric.prediction != "value" and kind != "classification":
        raise SpecError(f"metric {problem.metric!r} scores classes but the task is {problem.task}")


def effective_lag(lag: int, horizon: int) -> int:
    """The smallest multiple of ``lag`` that is >= ``horizon``: keeps the seasonal phase."""
    return lag * math.ceil(horizon / lag)


def lag_candidates(problem: Problem) -> list[int]:
    """Lags worth trying: multiples of the horizon and common seasonal periods."""
    h = problem.horizon or 1
    periods = [1, 7, 12, 24, 48, 52, 168, 336, 364, 365]
    return sorted({h, 2 * h, 3 * h, *(effective_lag(p, h) for p in periods)})


def rolling_candidates(problem: Problem) -> list[int]:
    h = problem.horizon or 1
    return sorted({w for w in (3, 7, 12, 24, 30, h, 2 * h) if w >= 2})


def dimensions(spec: SolutionSpec, problem: Problem) -> list[tuple[str, Param]]:
    """Every (path, Param) a search may change for this spec on this problem."""
    kind = task_kind(problem)
    dims: list[tuple[str, Param]] = [
        (f"model.params.{name}", p)
        for name, p in FAMILIES[spec.model.family].params.items()
        if kind == "classification" or not p.classification_only
    ]
    relevant = relevant_steps(problem)
    for step in SEARCH_STEPS:
        if step in relevant:
            dims += [(f"{step}.{name}", p) for name, p in STEPS[step].items()]
    if kind == "regression" and log_target_suits(problem):
        dims.append(("target_transform", TARGET_TRANSFORM))
    return dims


def describe_space(problem: Problem | None = None) -> dict[str, Any]:
    """The space as JSON (for LLM prompts): steps, families and their parameters.

    With a problem, only the steps its columns use and the families and parameters that fit
    its task. Validation is left out: it is fixed for an attempt, because changing the folds
    would make scores incomparable with the incumbent's.
    """
    if problem is None:
        steps, families = list(SEARCH_STEPS), list(FAMILIES)
        kind: TaskKind | None = None
    else:
        relevant = relevant_steps(problem)
        steps = [s for s in SEARCH_STEPS if s in relevant]
        families, kind = fitting_families(problem), task_kind(problem)
    out: dict[str, Any] = {
        "steps": {s: {k: p.describe() for k, p in STEPS[s].items()} for s in steps},
        "models": {
            name: {
                "doc": FAMILIES[name].doc,
                "params": {
                    k: p.describe()
                    for k, p in FAMILIES[name].params.items()
                    if kind != "regression" or not p.classification_only
                },
            }
            for name in families
        },
        "patch_ops": [
            {
                "op": "set",
                "path": "<step>.<field> | model.params.<name> | model.family | target_transform",
                "value": "...",
            },
            {"op": "unset", "path": "model.params.<name>  (back to the default)"},
            {"op": "set_model", "family": "<family>", "params": {"<name>": "..."}},
            {"op": "add", "path": "<list field>", "value": "..."},
            {"op": "remove", "path": "<list field>", "value": "..."},
        ],
    }
    if kind is None or kind == "regression":
        out["target_transform"] = TARGET_TRANSFORM.describe()
    return out


# ---------------------------------------------------------------------------------------
# Default and random specs
# ---------------------------------------------------------------------------------------


def default_spec(problem: Problem) -> SolutionSpec:
    """A good domain default for ``problem``.

    Tabular: XGBoost (hist) with moderate depth and shrinkage. Text: TF-IDF word 1-2 grams
    + logistic regression (ties the best AutoML on text, see COMPETITIONS.md). Forecast:
    calendar + trend + seasonal lags reaching back at least one horizon, ordered folds.
    """
    from haste_dagster.solution.spec import SolutionSpec

    kind = task_kind(problem)
    data: dict[str, Any] = {
        "validation": {"kind": default_validation_kind(problem), "n_folds": 3},
        "target_transform": "log1p" if log_target_suits(problem) else "none",
    }
    if problem.text:
        family = "logistic_regression" if kind == "classification" else "ridge"
        data["model"] = {"family": family, "params": FAMILIES[family].defaults(kind)}
        # a linear model beside the TF-IDF block: standardise, and tame heavy tails (counts)
        data["numeric"] = {"scale": "standard", "log1p_skewed": True}
    else:
        data["model"] = {"family": "xgboost", "params": FAMILIES["xgboost"].defaults(kind)}
    if problem.task == "forecast":
        h = problem.horizon or 1
        data["forecast"] = {
            "calendar": ["month", "day", "dayofweek", "dayofyear", "hour", "minute"],
            "trend": True,
            "lags": [1, 7],  # used as lags >= h: h itself and a weekly-phase lag
            "rolling": [max(2, h)],
        }
        data["categorical"] = {"encoding": "ordinal", "max_categories": 200}
    return SolutionSpec.model_validate(data)


def random_spec(problem: Problem, rng: np.random.Generator | int) -> SolutionSpec:
    """A random spec from the space that fits ``problem`` (leaderboard entrants, restarts)."""
    from haste_dagster.solution.spec import SolutionSpec

    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    kind = task_kind(problem)
    families = fitting_families(problem)
    family = families[int(rng.integers(len(families)))]
    params = {
        k: p.sample(rng)
        for k, p in FAMILIES[family].params.items()
        if kind == "classification" or not p.classification_only
    }
    if problem.text and "l1_ratio" in params:
        params["l1_ratio"] = 0.0  # saga is impractical on TF-IDF (check_spec_for_problem)
    data: dict[str, Any] = {
        "model": {"family": family, "params": params},
        "validation": {"kind": default_validation_kind(problem), "n_folds": 3},
        "target_transform": (TARGET_TRANSFORM.sample(rng) if log_target_suits(problem) else "none"),
    }
    # sorted: a set's order follows PYTHONHASHSEED, and the draws must not depend on it
    for step in sorted(relevant_steps(problem)):
        data[step] = {k: p.sample(rng) for k, p in STEPS[step].items()}
    if problem.task == "forecast":
        lags, rolls = lag_candidates(problem), rolling_candidates(problem)
        n_lags = int(rng.integers(0, 5))
        data["forecast"]["lags"] = sorted(
            int(x) for x in rng.choice(lags, size=min(n_lags, len(lags)), replace=False)
        )
        n_roll = int(rng.integers(0, 3))
        data["forecast"]["rolling"] = sorted(
            int(x) for x in rng.choice(rolls, size=min(n_roll, len(rolls)), replace=False)
        )
    spec = SolutionSpec.model_validate(data)
    check_spec_for_problem(spec, problem)
    return spec

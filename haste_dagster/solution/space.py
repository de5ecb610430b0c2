"""The search space of solution specs: the single source of truth for what a spec may hold.

Every tunable value (a feature-step field, a model parameter, the target transform, the
validation scheme) is described once by a `Param` (``solution.params``; the tables are in
``solution.space_models``): its type, range, log-scale flag and default. `solution.spec`
validates against it, `random_spec` samples from it and the heuristic policy mutates within
it, so the three can never disagree.

Which model families fit which tasks, and which feature steps matter for a problem, is
also decided here (`check_spec_for_problem`, `relevant_steps`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from haste_dagster.competitions.metrics import get_metric
from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import SpecError
from haste_dagster.solution.params import (  # noqa: F401 (re-exported)
    Param,
    ParamKind,
)
from haste_dagster.solution.space_models import (  # noqa: F401 (re-exported)
    DATE_PARTS,
    FAMILIES,
    SEARCH_STEPS,
    STEPS,
    TARGET_TRANSFORM,
    Family,
    TaskKind,
)

if TYPE_CHECKING:  # spec imports this module; import it lazily at runtime
    from haste_dagster.solution.spec import SolutionSpec



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
    would make scores incomparable with the incumbent's. The patch operations are not
    repeated here: the reply's JSON schema spells them out.
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

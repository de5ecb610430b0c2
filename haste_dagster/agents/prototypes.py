"""The prototype screen's candidates: three fundamentally different starting pipelines.

The domain specialist starts an attempt of the staged pipeline by screening three
prototypes on one validation fold. Candidates come, in this order, from

1. in-scope skills of kind ``recipe`` whose conditions hold: the skill's action (a Patch as
   JSON) applied to the domain default spec, validated for the problem; an invalid one is
   skipped with a logged reason, never run;
2. the defaults of the task kind (`DEFAULT_PROTOTYPES`, the one place that chooses them),

keeping only candidates whose `signature` (model family + the structural feature-pipeline
choices) differs from those already chosen, until there are three.

The task kind is read from the data profile (text columns, a forecast horizon, the task),
never from the competition's name, so an unseen competition gets the same treatment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from haste_dagster.agents.policy import SkillView, conditions_hold, touches_validation
from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import SpecError
from haste_dagster.solution.space import (
    FAMILIES,
    check_spec_for_problem,
    default_spec,
    lag_candidates,
    task_kind,
)
from haste_dagster.solution.spec import SolutionSpec, apply_patch, parse_patch

log = logging.getLogger(__name__)

N_PROTOTYPES = 3


@dataclass
class Prototype:
    """One screened starting pipeline."""

    name: str  # e.g. "boosted_trees", or "skill:<id>"
    spec: SolutionSpec
    skill_ids: list[str] = field(default_factory=list)
    source: str = "default"  # "default" | "skill" | "llm"
    rationale: str = ""

    @property
    def family(self) -> str:
        return self.spec.model.family

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["spec"] = self.spec.model_dump(mode="json")
        out["family"] = self.family
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prototype:
        return cls(
            name=str(data["name"]),
            spec=SolutionSpec.model_validate(data["spec"]),
            skill_ids=list(data.get("skill_ids") or []),
            source=str(data.get("source", "default")),
            rationale=str(data.get("rationale", "")),
        )


def prototype_kind(profile: dict, problem: Problem) -> str:
    """``forecast`` | ``text`` | ``tabular_classification`` | ``tabular_regression``."""
    if profile.get("is_forecast") or problem.task == "forecast":
        return "forecast"
    if profile.get("has_text") or problem.text:
        return "text"
    return f"tabular_{task_kind(problem)}"


def signature(spec: SolutionSpec, problem: Problem) -> tuple[Any, ...]:
    """What makes two prototypes fundamentally different: the model family and the
    structural choices of the feature pipeline this problem uses (not parameter values)."""
    sig: list[Any] = [spec.model.family, spec.target_transform]
    if problem.text:
        sig.append(("text", spec.text.analyzer))
    if problem.task == "forecast":
        f = spec.forecast
        sig.append(("forecast", bool(f.lags), bool(f.rolling), bool(f.calendar), f.trend))
    else:
        sig.append(("numeric", spec.numeric.scale != "none", spec.numeric.log1p_skewed))
    return tuple(sig)


# ---------------------------------------------------------------------------------------
# Defaults per task kind: each a function of the problem returning (name, why, spec data
# to merge over the domain default). Ordered: the first three distinct ones are used; the
# later ones stand in when a skill recipe already took a slot of the same signature.
# ---------------------------------------------------------------------------------------

Maker = Callable[[Problem], tuple[str, str, dict[str, Any]]]


def _model(family: str, problem: Problem, **params: Any) -> dict[str, Any]:
    return {"family": family, "params": {**FAMILIES[family].defaults(task_kind(problem)), **params}}


def _linear(problem: Problem) -> str:
    return "logistic_regression" if task_kind(problem) == "classification" else "ridge"


def _boosted_trees(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return "boosted_trees", "gradient-boosted trees on the default features", {}


def _linear_expanded(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return (
        "linear_expanded",
        "a linear model on expanded features: standardised, log1p of skewed columns, "
        "missing indicators, one-hot categories",
        {
            "model": _model(_linear(problem), problem),
            "numeric": {"scale": "standard", "log1p_skewed": True, "missing_indicator": True},
            "categorical": {"encoding": "onehot", "max_categories": 50},
        },
    )


def _bagged_trees(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return (
        "bagged_trees",
        "bagged deep trees (random forest) on ordinal-encoded categories",
        {
            "model": _model("random_forest", problem),
            "categorical": {"encoding": "ordinal", "max_categories": 200},
        },
    )


def _hist_boosting(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return (
        "hist_boosting",
        "histogram gradient boosting on ordinal-encoded categories",
        {
            "model": _model("hist_gradient_boosting", problem),
            "categorical": {"encoding": "ordinal", "max_categories": 200},
        },
    )


def _word_linear(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return "word_tfidf_linear", "word 1-2 gram TF-IDF and a linear model", {
        "model": _model(_linear(problem), problem),
        "text": {"analyzer": "word", "ngram_max": 2},
    }


def _char_linear(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return "char_tfidf_linear", "character 2-5 gram TF-IDF and a linear model", {
        "model": _model(_linear(problem), problem),
        "text": {"analyzer": "char_wb", "char_ngram_max": 5, "max_features": 100000},
    }


def _boosted_tfidf(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return "boosted_tfidf", "gradient-boosted trees on a smaller word TF-IDF", {
        "model": _model("xgboost", problem, n_estimators=300, learning_rate=0.1),
        "text": {"analyzer": "word", "ngram_max": 1, "max_features": 20000, "min_df": 3},
        "numeric": {"scale": "none", "log1p_skewed": False},
    }


def _svm_word(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return "word_tfidf_svm", "word TF-IDF and a linear SVM", {
        "model": _model("linear_svm", problem),
        "text": {"analyzer": "word", "ngram_max": 2},
    }


def _lags_boosted(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return "lags_boosted", "calendar, trend, seasonal lags and rolling means, boosted trees", {}


def _calendar_linear(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return (
        "calendar_linear",
        "a linear model on cyclical calendar features and the trend, no lags",
        {
            "model": _model("ridge", problem),
            "forecast": {
                "calendar": ["month", "dayofweek", "dayofyear", "hour"],
                "cyclical": True,
                "trend": True,
                "lags": [],
                "rolling": [],
            },
            "numeric": {"scale": "standard"},
            "categorical": {"encoding": "onehot", "max_categories": 200},
        },
    )


def _seasonal_baseline(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    h = problem.horizon or 1
    lags = [c for c in lag_candidates(problem) if c >= h][:3]
    return (
        "seasonal_baseline",
        "a seasonal baseline: a linear fit on seasonal lags and a rolling mean only",
        {
            "model": _model("ridge", problem),
            "forecast": {
                "calendar": [],
                "cyclical": False,
                "trend": False,
                "lags": lags,
                "rolling": [max(2, h)],
            },
            "numeric": {"scale": "standard"},
        },
    )


def _lags_forest(problem: Problem) -> tuple[str, str, dict[str, Any]]:
    return "lags_extra_trees", "seasonal lags and calendar, extremely randomised trees", {
        "model": _model("extra_trees", problem),
    }


DEFAULT_PROTOTYPES: dict[str, tuple[Maker, ...]] = {
    "tabular_classification": (_boosted_trees, _linear_expanded, _bagged_trees, _hist_boosting),
    "tabular_regression": (_boosted_trees, _linear_expanded, _bagged_trees, _hist_boosting),
    "text": (_word_linear, _char_linear, _boosted_tfidf, _svm_word),
    "forecast": (_lags_boosted, _calendar_linear, _seasonal_baseline, _lags_forest),
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "model":
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def default_prototypes(problem: Problem, profile: dict) -> list[Prototype]:
    """Every default prototype of the problem's task kind that is valid for it, in order."""
    base = default_spec(problem).model_dump(mode="json")
    out: list[Prototype] = []
    for make in DEFAULT_PROTOTYPES[prototype_kind(profile, problem)]:
        name, why, over = make(problem)
        try:
            spec = SolutionSpec.model_validate(_merge(base, over))
            check_spec_for_problem(spec, problem)
        except SpecError as exc:  # e.g. a family this task cannot use
            log.info("default prototype %s does not fit %s: %s", name, problem.slug, exc)
            continue
        out.append(Prototype(name=name, spec=spec, source="default", rationale=why))
    return out


def recipe_prototype(skill: SkillView, problem: Problem, profile: dict) -> Prototype | str:
    """The prototype a recipe skill describes, or why it cannot be one (a logged reason)."""
    if not skill.action:
        return "it has no action"
    if not conditions_hold(skill.conditions, profile):
        return "its conditions do not hold for this data"
    try:
        patch = parse_patch(skill.action)
    except (SpecError, ValidationError) as exc:
        return f"its action is not a valid patch: {exc}"
    if touches_validation(patch):
        return "it changes validation (every prototype must be scored on the same folds)"
    try:
        spec = apply_patch(default_spec(problem), patch)
        check_spec_for_problem(spec, problem)
    except SpecError as exc:
        return f"its spec does not fit the problem: {exc}"
    return Prototype(
        name=f"skill:{skill.id}",
        spec=spec,
        skill_ids=[skill.id],
        source="skill",
        rationale=f"{skill.tier} recipe skill {skill.id}: {skill.title}",
    )


def pick_distinct(
    candidates: list[Prototype], problem: Problem, n: int = N_PROTOTYPES
) -> list[Prototype]:
    """The first ``n`` candidates of pairwise different signatures."""
    chosen: list[Prototype] = []
    seen: set[tuple[Any, ...]] = set()
    for candidate in candidates:
        sig = signature(candidate.spec, problem)
        if sig in seen:
            continue
        seen.add(sig)
        chosen.append(candidate)
        if len(chosen) == n:
            break
    return chosen


def choose_prototypes(
    problem: Problem,
    profile: dict,
    skills: list[SkillView],
    *,
    first: list[Prototype] | None = None,
    n: int = N_PROTOTYPES,
) -> list[Prototype]:
    """``first`` (e.g. the LLM's proposals), then recipe skills (best utility first), then
    the task kind's defaults: the first ``n`` of distinct signatures."""
    from_skills: list[Prototype] = []
    recipes = [s for s in skills if s.kind == "recipe" and s.utility >= 0]
    for skill in sorted(recipes, key=lambda s: (-s.utility, s.id)):
        made = recipe_prototype(skill, problem, profile)
        if isinstance(made, str):
            log.info("recipe skill %s is not a prototype for %s: %s", skill.id, problem.slug, made)
            continue
        from_skills.append(made)
    return pick_distinct(
        [*(first or []), *from_skills, *default_prototypes(problem, profile)], problem, n
    )

"""The policy protocol of the refinement loop, and helpers every policy shares.

A policy builds the initial spec of an attempt and proposes one patch per iteration. The
loop (`agents.competition_agent`) resumes an interrupted attempt by replaying its recorded
history, so `Policy.propose` must be a pure function of its `PolicyContext`: any
randomness is derived from ``ctx.seed``, ``ctx.iteration`` and ``ctx.history``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import SpecError
from haste_dagster.solution.space import SEARCH_STEPS, check_spec_for_problem, relevant_steps
from haste_dagster.solution.spec import Patch, SolutionSpec, apply_patch, parse_patch


@dataclass
class SkillView:
    """What a policy sees of a skill in scope."""

    id: str
    tier: str
    title: str
    guidance: str
    action: dict | None  # a Patch as JSON
    utility: float  # recorded mean delta × kept rate; 0 if never used
    conditions: dict = field(default_factory=dict)
    # "change" (one patch) | "recipe" (a whole spec as a patch to the domain default: a
    # prototype candidate of the screen) | "rule" | "prior"
    kind: str = "change"
    payload: dict = field(default_factory=dict)  # a prior's move counts, a rule's template
    # A rule promoted in another domain, loaded to be cross-evaluated here (skills.scope).
    foreign: bool = False


@dataclass
class IterationRecord:
    idx: int
    patch: dict | None
    skill_ids: list[str]
    cv_mean: float | None
    cv_std: float | None
    kept: bool
    error: str | None


@dataclass
class PolicyContext:
    problem: Problem
    profile: dict
    incumbent: SolutionSpec
    incumbent_score: float | None
    history: list[IterationRecord]
    skills: list[SkillView]
    iteration: int
    budget: int
    seed: int
    higher_is_better: bool
    # The staged pipeline: where this branch started (None: the policy's initial spec), and
    # whether the next proposal must be structural (auto-escalation after two stalls).
    initial: SolutionSpec | None = None
    escalate: bool = False
    # Specs evaluated outside the iterations and rejected (the skill-shaped initial spec
    # the plain-default control beat): not worth proposing again.
    screened: list[SolutionSpec] = field(default_factory=list)


@dataclass
class Proposal:
    # None only with ``error`` set: a policy (the LLM one) that could not produce a valid
    # patch reports it, and the loop records a failed iteration.
    patch: Patch | None
    rationale: str
    skill_ids: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@runtime_checkable
class Policy(Protocol):
    name: str

    def initial_spec(
        self, problem: Problem, profile: dict, skills: list[SkillView]
    ) -> tuple[SolutionSpec, list[str]]:
        """The attempt's starting spec and the ids of the skills whose actions it applied."""
        ...

    def propose(self, ctx: PolicyContext) -> Proposal | None:
        """The next patch to evaluate, or None when nothing is left worth trying."""
        ...


# ---------------------------------------------------------------------------------------
# Skill applicability
# ---------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "eq": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
    "ne": operator.ne,
    ">": operator.gt,
    "gt": operator.gt,
    ">=": operator.ge,
    "ge": operator.ge,
    "gte": operator.ge,
    "<": operator.lt,
    "lt": operator.lt,
    "<=": operator.le,
    "le": operator.le,
    "lte": operator.le,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
    "contains": lambda a, b: b in a,
}
_MISSING = object()


def _lookup(profile: dict, name: str) -> Any:
    value: Any = profile
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def conditions_hold(conditions: dict | list | None, profile: dict) -> bool:
    """Whether a skill's when-to-use conditions hold for a data profile.

    Accepts ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}``, a list (= all) and
    leaves ``{"field": name, "op": op, "value": v}`` (``key``/``feature`` also name the
    field; dotted names reach into nested profile entries). A leaf naming a field the profile
    lacks is false; a leaf of an unknown shape is true, since the skill store has already
    scoped skills by their conditions.
    """
    if not conditions:
        return True
    if isinstance(conditions, list):
        return all(conditions_hold(c, profile) for c in conditions)
    if not isinstance(conditions, dict):
        return True
    if "all" in conditions:
        return all(conditions_hold(c, profile) for c in conditions["all"] or [])
    if "any" in conditions:
        items = conditions["any"] or []
        return not items or any(conditions_hold(c, profile) for c in items)
    if "not" in conditions:
        return not conditions_hold(conditions["not"], profile)
    name = conditions.get("field", conditions.get("key", conditions.get("feature")))
    if not isinstance(name, str):
        return True
    actual = _lookup(profile, name)
    op = str(conditions.get("op", "exists" if "value" not in conditions else "=="))
    if op == "exists":
        return actual is not _MISSING
    if actual is _MISSING:
        return False
    if op == "truthy":
        return bool(actual)
    fn = _OPS.get(op)
    if fn is None:
        return True
    try:
        return bool(fn(actual, conditions.get("value")))
    except TypeError:  # e.g. comparing a number with a string: not applicable
        return False


def skill_patch(skill: SkillView) -> Patch | None:
    """The skill's action as a Patch, or None if it has none or it is malformed."""
    if not skill.action:
        return None
    try:
        return parse_patch(skill.action)
    except (SpecError, ValidationError):
        return None


def patch_is_relevant(patch: Patch, problem: Problem) -> bool:
    """False when every op touches a step this problem's columns never use (an inert patch)."""
    steps = relevant_steps(problem)
    for path in patch.paths():
        head = path.split(".")[0]
        if head in ("model", "target_transform", "validation") or head in steps:
            return True
    return False


def touches_validation(patch: Patch) -> bool:
    """Changing validation changes the folds, which makes scores incomparable mid-attempt."""
    return any(p.split(".")[0] == "validation" for p in patch.paths())


# Changes that alter what the model is or sees, not how hard a parameter is turned: the
# auto-escalation after stalls asks for one of these.
STRUCTURAL_PATHS = frozenset(
    {
        "model.family",
        "target_transform",
        "numeric.scale",
        "numeric.log1p_skewed",
        "numeric.missing_indicator",
        "categorical.encoding",
        "text.analyzer",
        "text.ngram_max",
        "date.parts",
        "date.cyclical",
        "forecast.calendar",
        "forecast.cyclical",
        "forecast.trend",
        "forecast.lags",
        "forecast.rolling",
    }
)


def is_structural(patch: Patch) -> bool:
    """A model family switch, a feature-step change, a target transform or a lag/window set
    change, as opposed to a parameter nudge."""
    for op in patch.ops:
        if op.op == "set_model":
            return True
        path = getattr(op, "path", "")
        if path in STRUCTURAL_PATHS:
            return True
        if path in SEARCH_STEPS and op.op == "set":  # a whole step replaced
            return True
    return False


def try_patch(spec: SolutionSpec, patch: Patch, problem: Problem) -> SolutionSpec | None:
    """``spec`` with ``patch`` applied if the result is valid for ``problem``, else None."""
    try:
        candidate = apply_patch(spec, patch)
        check_spec_for_problem(candidate, problem)
    except SpecError:
        return None
    return candidate


def applicable_skills(
    skills: list[SkillView], profile: dict, problem: Problem
) -> list[tuple[SkillView, Patch]]:
    """Skills with a well-formed, relevant action whose conditions hold, best utility first."""
    out = []
    for skill in skills:
        patch = skill_patch(skill)
        if patch is None or not patch_is_relevant(patch, problem):
            continue
        if not conditions_hold(skill.conditions, profile):
            continue
        out.append((skill, patch))
    return sorted(out, key=lambda sp: (-sp[0].utility, sp[0].id))


def resolve_skill_views(
    views: list[SkillView], problem: Problem, profile: dict
) -> list[SkillView]:
    """The views as this competition can use them: a rule restated for its data
    (``skills.rules.resolve``), and every recipe or rule checked against the spec space on
    the domain default. One that no longer validates (a renamed parameter, a family that
    cannot solve this task) or does not translate is skipped with a logged reason, never
    passed on to break an attempt. Of the foreign rules (ranked by the store), the first
    ``MAX_FOREIGN`` that translate are kept."""
    import logging

    from haste_dagster.skills.rules import resolve
    from haste_dagster.skills.scope import MAX_FOREIGN
    from haste_dagster.solution.space import default_spec

    log = logging.getLogger(__name__)
    default = default_spec(problem)
    default_json = default.model_dump(mode="json")
    out: list[SkillView] = []
    foreign = 0
    for view in views:
        if view.kind not in ("recipe", "rule"):
            out.append(view)
            continue
        if view.foreign and foreign >= MAX_FOREIGN:
            continue
        action = view.action
        if view.kind == "rule" and isinstance(view.payload.get("rule"), dict):
            action = resolve(view.payload["rule"], default_json, profile)
            if action is None:
                log.info("skill %s skipped on %s: its rule does not translate to this "
                         "competition's data or model", view.id, problem.slug)
                continue
        try:
            patch = parse_patch(action)
            candidate = apply_patch(default, patch)
            check_spec_for_problem(candidate, problem)
        except (SpecError, ValidationError) as exc:
            if view.foreign:  # a candidate from another domain's task: expected to miss often
                log.info("foreign skill %s (%s) skipped on %s: it does not fit this task: %s",
                         view.id, view.kind, problem.slug, exc)
            else:
                log.warning("skill %s (%s) skipped on %s: its action no longer validates "
                            "against the spec space: %s", view.id, view.kind, problem.slug, exc)
            continue
        foreign += view.foreign
        out.append(SkillView(**{**view.__dict__, "action": patch.model_dump(mode="json")}))
    return out

"""HeuristicPolicy: the offline default policy, a real optimiser with no LLM.

Initial spec: `default_spec(problem)` with the applicable skill action of highest positive
utility applied: one skill, so that the negative-transfer guard's verdict (the plain default
evaluated beside the skill-shaped start) is that skill's own. With several, a losing start
charged every skill in it with one delta and dropped them all, however good the others were
alone; now the others are proposed as iterations, where the keep rule tests each on its own.

Proposals, in order:
1. applicable skill actions not tried yet in this attempt, best utility first (untried
   skills, utility 0, included; harmful ones, utility < 0, never; nor one that switches to
   a model family this attempt has already evaluated: a recipe and its family rule, or a
   family the search tried, would spend a second iteration on the same question);
2. a (1+1) evolution strategy around the incumbent:
   - *what* to change is chosen by Thompson sampling over "moves" (one parameter or feature
     step, a family switch, a learning-rate/rounds trade, adding/removing a lag). Each move
     has a Beta prior from the space's importance weights, updated with how often that move
     was kept earlier in the attempt;
   - *how far* is a Gaussian step in the parameter's normalised (log-)coordinate whose size
     follows the 1/5th success rule: ×1.5 after a kept change, ×1.5^(-1/4) after a rejected
     one, replayed from the history.
   A candidate identical to any spec already evaluated in the attempt is never proposed.

`propose` is a pure function of its context: its random generator is seeded from
(ctx.seed, ctx.iteration, len(ctx.history)), and its state is replayed from ctx.history, so
a resumed attempt proposes exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from haste_dagster.agents.policy import (
    STRUCTURAL_PATHS,
    IterationRecord,
    PolicyContext,
    Proposal,
    SkillView,
    applicable_skills,
    is_structural,
    touches_validation,
    try_patch,
)
from haste_dagster.agents.prototypes import Prototype, choose_prototypes
from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import SpecError
from haste_dagster.solution.space import (
    FAMILIES,
    Param,
    default_spec,
    dimensions,
    effective_lag,
    fitting_families,
    lag_candidates,
    rolling_candidates,
    task_kind,
)
from haste_dagster.solution.spec import Patch, SetModelOp, SolutionSpec, apply_patch, parse_patch

SIGMA_START = 0.25  # step size in the unit coordinate of a parameter
SIGMA_MIN, SIGMA_MAX = 0.04, 0.8
SUCCESS_GROWTH = 1.5  # 1/5th rule: grow by this on success, shrink by its 4th root on failure
TREES = ("xgboost", "random_forest", "extra_trees", "hist_gradient_boosting")
LINEAR = ("logistic_regression", "ridge", "linear_svm")
# Transforms that are monotone per column do not change what a tree can split on.
TREE_INERT = ("numeric.scale", "numeric.log1p_skewed", "numeric.skew_threshold")


@dataclass
class SearchState:
    """What the history says: evaluated specs, step size, and per-move success counts."""

    seen: set[str] = field(default_factory=set)
    tried_skills: set[str] = field(default_factory=set)
    tried_families: set[str] = field(default_factory=set)
    sigma: float = SIGMA_START
    tries: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)


def move_key(patch: dict | Patch | None) -> str | None:
    """The move a patch made (its first op's path; ``family:<name>`` for a model switch)."""
    if patch is None:
        return None
    try:
        parsed = patch if isinstance(patch, Patch) else parse_patch(patch)
    except SpecError:
        return None
    op = parsed.ops[0]
    if isinstance(op, SetModelOp):
        return f"family:{op.family}"
    if len(parsed.ops) == 2 and {o.op for o in parsed.ops} == {"set"}:
        paths = sorted(o.path for o in parsed.ops)  # type: ignore[union-attr]
        if paths == ["model.params.learning_rate", "model.params.n_estimators"]:
            return "trade:learning_rate"
        if paths == ["model.params.learning_rate", "model.params.max_iter"]:
            return "trade:learning_rate"
    return op.path  # type: ignore[union-attr]


def switched_family(patch: dict | Patch | None) -> str | None:
    """The model family a patch switches to (its move is ``family:<name>``), if it does."""
    key = move_key(patch)
    return key.split(":", 1)[1] if key and key.startswith("family:") else None


class HeuristicPolicy:
    """Skill actions by utility, then a seeded (1+1)-ES with adaptive steps (see module doc)."""

    name = "heuristic"

    def __init__(self, max_initial_skills: int = 1, max_draws: int = 200) -> None:
        self.max_initial_skills = max_initial_skills
        self.max_draws = max_draws

    # ---- initial spec ------------------------------------------------------------------
    def initial_spec(
        self, problem: Problem, profile: dict, skills: list[SkillView]
    ) -> tuple[SolutionSpec, list[str]]:
        spec = default_spec(problem)
        applied: list[str] = []
        decided: list[str] = []
        for skill, patch in applicable_skills(skills, profile, problem):
            if len(applied) >= self.max_initial_skills:
                break
            # Only skills with a recorded benefit go in unseen; an untried one (utility 0) is
            # proposed as an iteration instead, where the keep rule tests it and its usage
            # gets recorded. Harmful ones (< 0) are never applied.
            if skill.utility <= 0:
                continue
            paths = patch.paths()
            if any(_overlaps(p, d) for p in paths for d in decided):
                continue  # a higher-utility skill already decided this part of the spec
            candidate = try_patch(spec, patch, problem)
            if candidate is None or candidate == spec:
                continue
            spec = candidate
            applied.append(skill.id)
            decided += paths
        return spec, applied

    # ---- prototype screen --------------------------------------------------------------
    def prototypes(
        self, problem: Problem, profile: dict, skills: list[SkillView]
    ) -> list[Prototype]:
        """Recipe skills first, then the task kind's defaults (`agents.prototypes`)."""
        return choose_prototypes(problem, profile, skills)

    # ---- proposals ---------------------------------------------------------------------
    def propose(self, ctx: PolicyContext) -> Proposal | None:
        state = self.search_state(ctx)
        proposal = self._skill_proposal(ctx, state)
        if proposal is not None:
            return proposal
        rng = np.random.default_rng(
            [ctx.seed & 0xFFFFFFFF, max(ctx.iteration, 0), len(ctx.history), 0x4A57]
        )
        # Auto-escalation: only structural moves, while there is one left to make.
        structural = ctx.escalate and bool(self._moves(ctx, state, structural=True))
        for _ in range(self.max_draws):
            move = self._draw_move(ctx, state, rng, structural=structural)
            if move is None:
                return None
            patch, rationale = move
            candidate = try_patch(ctx.incumbent, patch, ctx.problem)
            if candidate is None or candidate.key() in state.seen:
                continue
            if structural:
                rationale = f"escalate after stalls: {rationale}"
            return Proposal(patch=patch, rationale=rationale, skill_ids=[])
        return None

    def _skill_proposal(self, ctx: PolicyContext, state: SearchState) -> Proposal | None:
        for skill, patch in applicable_skills(ctx.skills, ctx.profile, ctx.problem):
            if skill.id in state.tried_skills or skill.utility < 0 or touches_validation(patch):
                continue
            if ctx.escalate and not is_structural(patch):
                continue
            family = switched_family(patch)
            if family in state.tried_families and family != ctx.incumbent.model.family:
                continue  # this family was already tried here (by a recipe, or a search move)
            candidate = try_patch(ctx.incumbent, patch, ctx.problem)
            if candidate is None or candidate.key() in state.seen:
                continue
            return Proposal(
                patch=patch,
                rationale=f"apply {skill.tier} skill {skill.id} (utility {skill.utility:.4g}): "
                f"{skill.title}",
                skill_ids=[skill.id],
            )
        return None

    def search_state(self, ctx: PolicyContext) -> SearchState:
        """Rebuild the search state from the history (no hidden state between calls)."""
        state = SearchState()
        state.seen.add(ctx.incumbent.key())
        state.tried_families.add(ctx.incumbent.model.family)
        for spec in ctx.screened:
            state.seen.add(spec.key())
            state.tried_families.add(spec.model.family)
        explored: list[IterationRecord] = []
        for rec in ctx.history:
            state.tried_skills.update(rec.skill_ids)
            family = switched_family(rec.patch)
            if family is not None:
                state.tried_families.add(family)
            if rec.patch is not None and not rec.skill_ids:
                explored.append(rec)
        for spec in self._evaluated_specs(ctx):
            state.seen.add(spec.key())
            state.tried_families.add(spec.model.family)
        for rec in explored:
            key = move_key(rec.patch)
            if key is None:
                continue
            state.tries[key] = state.tries.get(key, 0) + 1
            if rec.kept:
                state.kept[key] = state.kept.get(key, 0) + 1
                state.sigma *= SUCCESS_GROWTH
            else:
                state.sigma *= SUCCESS_GROWTH**-0.25
            state.sigma = min(SIGMA_MAX, max(SIGMA_MIN, state.sigma))
        return state

    def _evaluated_specs(self, ctx: PolicyContext) -> list[SolutionSpec]:
        """Every spec evaluated so far in the attempt (as far as it can be rebuilt).

        Replays the recorded patches from this policy's initial spec; when the kept ones do
        not land on ``ctx.incumbent`` (the attempt started elsewhere), each past patch is
        applied to the incumbent instead, which at least never repeats a past change verbatim.
        """
        initial = ctx.initial
        if initial is None:
            initial, _ = self.initial_spec(ctx.problem, ctx.profile, ctx.skills)
        specs, spec = [initial], initial
        for rec in ctx.history:
            if rec.patch is None:
                continue
            try:
                candidate = apply_patch(spec, parse_patch(rec.patch))
            except SpecError:
                continue
            specs.append(candidate)
            if rec.kept:
                spec = candidate
        if spec.key() == ctx.incumbent.key():
            return specs
        fallback = [ctx.incumbent]
        for rec in ctx.history:
            if rec.patch is not None:
                try:
                    fallback.append(apply_patch(ctx.incumbent, parse_patch(rec.patch)))
                except SpecError:
                    continue
        return fallback

    # ---- moves -------------------------------------------------------------------------
    def _moves(
        self, ctx: PolicyContext, state: SearchState, *, structural: bool = False
    ) -> list[tuple[str, float, Any]]:
        """(key, prior weight, payload) of every move available from the incumbent; with
        ``structural`` only family switches and structural feature/target changes."""
        spec, problem = ctx.incumbent, ctx.problem
        moves: list[tuple[str, float, Any]] = []
        for path, param in dimensions(spec, problem):
            if not _active(path, spec, ctx.profile):
                continue
            if structural and path not in STRUCTURAL_PATHS:
                continue
            moves.append((path, param.importance, param))
        for family in fitting_families(problem):
            if family not in state.tried_families:
                moves.append((f"family:{family}", 2.0, family))
        params = spec.model.params
        if structural:
            return moves
        if "learning_rate" in params and ("n_estimators" in params or "max_iter" in params):
            moves.append(("trade:learning_rate", 1.5, None))
        return moves

    def _draw_move(
        self,
        ctx: PolicyContext,
        state: SearchState,
        rng: np.random.Generator,
        *,
        structural: bool = False,
    ) -> tuple[Patch, str] | None:
        moves = self._moves(ctx, state, structural=structural)
        if not moves:
            return None
        priors = move_priors(ctx.skills)
        draws = [
            rng.beta(
                prior * priors.get(key, 1.0) + state.kept.get(key, 0),
                1.0 + state.tries.get(key, 0) - state.kept.get(key, 0),
            )
            for key, prior, _ in moves
        ]
        key, _, payload = moves[int(np.argmax(draws))]
        record = f"kept {state.kept.get(key, 0)}/{state.tries.get(key, 0)} before"
        if key.startswith("family:"):
            return self._family_move(ctx, payload, record)
        if key == "trade:learning_rate":
            return self._trade_move(ctx.incumbent, rng, state.sigma, record)
        return self._param_move(ctx, key, payload, rng, state.sigma, record)

    def _family_move(self, ctx: PolicyContext, family: str, record: str) -> tuple[Patch, str]:
        kind = task_kind(ctx.problem)
        ops: list[dict[str, Any]] = [
            {"op": "set_model", "family": family, "params": FAMILIES[family].defaults(kind)}
        ]
        note = ""
        if family in LINEAR and ctx.incumbent.numeric.scale == "none":
            ops.append({"op": "set", "path": "numeric.scale", "value": "standard"})
            note = " with standardised numeric columns (linear models need them)"
        patch = parse_patch({"ops": ops})
        return patch, (
            f"explore: switch model {ctx.incumbent.model.family} → {family} with its defaults"
            f"{note} (untried family)"
        )

    def _trade_move(
        self, spec: SolutionSpec, rng: np.random.Generator, sigma: float, record: str
    ) -> tuple[Patch, str]:
        params = spec.model.params
        rounds = "n_estimators" if "n_estimators" in params else "max_iter"
        lr_param = FAMILIES[spec.model.family].params["learning_rate"]
        rounds_param = FAMILIES[spec.model.family].params[rounds]
        factor = math.exp(float(rng.normal(0.0, 2.0 * sigma)))
        lr = float(lr_param.check("", _clip(params["learning_rate"] * factor, lr_param)))
        lr = float(f"{lr:.3g}")
        n = int(_clip(round(params[rounds] / (lr / params["learning_rate"])), rounds_param))
        patch = parse_patch(
            {
                "ops": [
                    {"op": "set", "path": "model.params.learning_rate", "value": lr},
                    {"op": "set", "path": f"model.params.{rounds}", "value": n},
                ]
            }
        )
        return patch, (
            f"explore: trade learning rate for rounds: learning_rate {params['learning_rate']} → "
            f"{lr}, {rounds} {params[rounds]} → {n} (σ={sigma:.2f}, {record})"
        )

    def _param_move(
        self,
        ctx: PolicyContext,
        path: str,
        param: Param,
        rng: np.random.Generator,
        sigma: float,
        record: str,
    ) -> tuple[Patch, str]:
        current = _get(ctx.incumbent, path)
        if param.kind == "int_list":
            new = _list_move(path, list(current), ctx.problem, rng)
        else:
            new = param.mutate(current, rng, sigma)
        patch = parse_patch({"ops": [{"op": "set", "path": path, "value": new}]})
        return patch, f"explore: {path} {current!r} → {new!r} (σ={sigma:.2f}, {record})"


def move_priors(skills: list[SkillView]) -> dict[str, float]:
    """Move weights from the domain's search priors (skills of kind ``prior``, whose payload
    holds ``moves: {key: [tried, kept]}`` over earlier attempts of the domain): twice the
    smoothed kept rate, so a move kept half the time elsewhere keeps its space weight, one
    kept more often is drawn more, one rarely kept less."""
    counts: dict[str, list[int]] = {}
    for skill in skills:
        if skill.kind != "prior":
            continue
        for key, pair in (skill.payload.get("moves") or {}).items():
            tried, kept = (int(pair[0]), int(pair[1])) if len(pair) == 2 else (0, 0)
            have = counts.setdefault(key, [0, 0])
            have[0], have[1] = have[0] + tried, have[1] + kept
    return {key: 2.0 * (kept + 1) / (tried + 2) for key, (tried, kept) in counts.items()}


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _clip(value: float, param: Param) -> float:
    assert param.low is not None and param.high is not None
    return min(param.high, max(param.low, value))


def _get(spec: SolutionSpec, path: str) -> Any:
    data: Any = spec.model_dump(mode="json")
    for part in path.split("."):
        data = data[part]
    return data


# Settings that only matter when some feature cell is missing.
MISSING_ONLY = ("numeric.impute", "numeric.missing_indicator", "categorical.impute")


def _active(path: str, spec: SolutionSpec, profile: dict) -> bool:
    """Whether changing ``path`` can change the fitted model (skip settings nothing reads)."""
    family = spec.model.family
    if path in MISSING_ONLY and profile.get("missing_rate") == 0:
        # forecast lag columns are missing at the start of every series even then
        if not profile.get("is_forecast"):
            return False
    if family in TREES and path in TREE_INERT:
        return False
    if path == "numeric.skew_threshold" and not spec.numeric.log1p_skewed:
        return False
    if path == "text.char_ngram_max" and spec.text.analyzer != "char_wb":
        return False
    if path == "text.ngram_max" and spec.text.analyzer != "word":
        return False
    if path == "categorical.max_categories" and spec.categorical.encoding == "target":
        return False
    if path == "model.params.max_iter" and family == "logistic_regression":
        return False  # convergence, not quality: leave it
    return True


def _list_move(
    path: str, current: list[int], problem: Problem, rng: np.random.Generator
) -> list[int]:
    """Add a lag/window the list lacks or drop one it has."""
    horizon = problem.horizon or 1
    if path == "forecast.lags":
        have = {effective_lag(v, horizon) for v in current}
        pool = [c for c in lag_candidates(problem) if effective_lag(c, horizon) not in have]
    else:
        have = set(current)
        pool = [c for c in rolling_candidates(problem) if c not in have]
    if current and (not pool or rng.random() < 0.35):
        drop = current[int(rng.integers(len(current)))]
        return [v for v in current if v != drop]
    if not pool:
        return current
    return sorted([*current, int(pool[int(rng.integers(len(pool)))])])

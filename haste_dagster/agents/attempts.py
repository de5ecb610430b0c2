"""The pieces every form of an attempt shares (the sequential loop in
`agents.competition_agent`, the rounds in `agents.rounds`, the staged pipeline in
`agents.pipeline`): its config and result, the keep rule, the start (attempt row, scoped
skills, baseline row) and the finished record.

**Keep rule.** Every candidate is scored on the same folds as the incumbent (the fold
split depends only on the attempt seed), so the noise of a comparison is the spread of the
*paired* per-fold differences d_k (oriented so positive = better). A candidate is kept iff

    mean(d) > KEEP_Z · sd(d) / sqrt(k)   and   mean(d) > MIN_REL_GAIN · |incumbent|

i.e. it beats the incumbent by more than half a standard error of the paired difference and
by a non-negligible relative amount.

**Inert proposals** (`propose_live`). A proposal whose candidate would fit the same model
on the same feature matrices as the incumbent on every fold (`evaluate.same_model_input`: a
missing-value indicator where nothing is missing) would score exactly the incumbent. It is
not evaluated and spends no iteration: the policy is asked again with it in its history
(marked by ``INERT``, so it is not proposed twice), at most ``MAX_INERT`` times per
iteration. The skipped proposals are kept in the evaluated row's ``detail["inert"]`` and
`policy_history` puts them back before that row, so a resumed attempt, the next iteration
and a round all see the history the live proposal saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import psycopg

from haste_dagster.agents import records
from haste_dagster.agents.policy import (
    IterationRecord,
    Policy,
    PolicyContext,
    Proposal,
    SkillView,
    resolve_skill_views,
    touches_validation,
)
from haste_dagster.errors import AttemptConfigError, AttemptStateError, HasteError
from haste_dagster.solution.evaluate import CVResult
from haste_dagster.solution.spec import Patch, SolutionSpec, apply_patch

if TYPE_CHECKING:  # the skill store loads lazily, when an attempt opens it
    from haste_dagster.competitions.registry import Competition
    from haste_dagster.skills.model import Skill
    from haste_dagster.skills.store import SkillStore

Loading = Literal["tiered", "flat", "none"]
Pipeline = Literal["straight", "staged"]
PIPELINES = ("straight", "staged")
KEEP_Z = 0.5
MIN_REL_GAIN = 1e-4
MAX_INERT = 3  # inert proposals skipped per iteration before one is evaluated anyway
INERT = "inert: the model would see the incumbent's own feature matrices on every fold"


@dataclass
class AttemptConfig:
    policy: str = "heuristic"
    loading: Loading = "tiered"
    iterations: int | None = None  # None: the competition's budget
    seed: int = 0
    label: str | None = None
    patience: int | None = None  # None: max(5, iterations // 2)
    seconds: float | None = None  # None: the competition's budget
    campaign_id: str | None = None  # groups LLM token budgets and ledger rows
    # "straight": the domain default (plus skills) refined in one line; "staged": the
    # specialist's screen → winner/runner-up branches → ensemble (agents.pipeline)
    pipeline: Pipeline = "straight"

    def __post_init__(self) -> None:
        # Refused here, whichever entry point built it: 0 or -1 would record nothing.
        for name in ("iterations", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AttemptConfigError(f"{name} must be at least 1, got {value}")
        if self.seconds is not None and not self.seconds > 0:
            raise AttemptConfigError(f"seconds must be positive, got {self.seconds}")


@dataclass
class AttemptResult:
    attempt_id: int
    slug: str
    policy: str
    loading: str
    seed: int
    best_spec: dict
    best_cv: float | None
    kept_rate: float
    iterations: list[dict[str, Any]]
    skills_loaded: list[dict[str, Any]]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stopped: str = "budget"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "attempt_id": self.attempt_id,
            "slug": self.slug,
            "policy": self.policy,
            "loading": self.loading,
            "seed": self.seed,
            "best_cv": self.best_cv,
            "kept_rate": self.kept_rate,
            "stopped": self.stopped,
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "skills_loaded": self.skills_loaded,
            "best_spec": self.best_spec,
            "iterations": self.iterations,
            **self.extra,
        }


ProgressFn = Callable[[int, int, records.IterationRow], None]


def paired_improvement(
    candidate: list[float], incumbent: list[float], higher_is_better: bool
) -> tuple[float, float]:
    """Mean and standard error of the per-fold improvement of ``candidate`` (positive = better)."""
    d = np.asarray(candidate, float) - np.asarray(incumbent, float)
    if not higher_is_better:
        d = -d
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()), se


def should_keep(
    candidate: list[float], incumbent: list[float], incumbent_mean: float, higher_is_better: bool
) -> bool:
    gain, se = paired_improvement(candidate, incumbent, higher_is_better)
    return gain > KEEP_Z * se and gain > MIN_REL_GAIN * max(abs(incumbent_mean), 1e-12)


def skill_views(
    skills: list[Skill],
    loaded: Sequence[Mapping[str, Any]],
    domain: str | None = None,
    slug: str | None = None,
) -> list[SkillView]:
    """Policy views of ``skills`` with the utilities frozen in their ``loaded`` entries
    (`load_attempt_skills`); with the competition's ``domain`` and ``slug``, a domain skill
    of another domain is marked ``foreign``, and each cross-evaluation candidate carries
    the conditions it must meet here (`skills.scope.conditions_here`)."""
    from haste_dagster.skills.scope import conditions_here, is_foreign

    frozen = {entry["id"]: entry for entry in loaded}
    views = []
    for s in skills:
        foreign = is_foreign(s.tier, s.scope_key, domain)
        kind = str(getattr(s, "kind", None) or "change")
        here = conditions_here(s.conditions, kind, s.tier, s.scope_key, slug=slug, domain=domain)
        entry = frozen.get(s.id, {})
        views.append(SkillView(
            id=s.id,
            tier=s.tier,
            title=s.title,
            guidance=s.guidance,
            action=s.action,
            utility=float(entry.get("utility", 0.0)),
            conditions={"all": [c.model_dump() for c in here]},
            kind=kind,
            payload=dict(getattr(s, "payload", None) or {}),
            foreign=foreign,
        ))
    return views


def advance_incumbent(
    incumbent: SolutionSpec,
    best_row: records.IterationRow,
    since_kept: int,
    row: records.IterationRow,
) -> tuple[SolutionSpec, records.IterationRow, int]:
    """(incumbent, its row, iterations since the last kept one) after the judged ``row``."""
    if row.kept:
        return apply_patch(incumbent, Patch.model_validate(row.patch)), row, 0
    return incumbent, best_row, since_kept + 1


def inert_record(idx: int, skipped: dict[str, Any]) -> IterationRecord:
    """How a skipped inert proposal (an entry of a row's ``detail["inert"]``) reads in the
    history of iteration ``idx``."""
    return IterationRecord(idx=idx, patch=skipped["patch"], skill_ids=list(skipped["skill_ids"]),
                           cv_mean=None, cv_std=None, kept=False, error=INERT)


def policy_history(rows: list[records.IterationRow]) -> list[IterationRecord]:
    """What a policy sees of ``rows``: each row, after the inert proposals skipped for it."""
    history = []
    for r in rows:
        history += [inert_record(r.idx, s) for s in (r.detail or {}).get("inert", [])]
        history.append(IterationRecord(
            idx=r.idx,
            patch=r.patch,
            skill_ids=list(r.skill_ids),
            cv_mean=r.cv_mean,
            cv_std=r.cv_std,
            kept=r.kept,
            error=r.error,
        ))
    return history


def propose_live(
    policy: Policy,
    ctx: PolicyContext,
    inert: Callable[[SolutionSpec], bool],
) -> tuple[Proposal | None, list[dict[str, Any]]]:
    """The policy's proposal for ``ctx``, skipping up to ``MAX_INERT`` inert ones (see the
    module doc); ``inert`` tells whether a candidate spec would score exactly the incumbent.
    Returns the proposal (None: the policy has nothing left) and the skipped ones as stored
    in ``detail["inert"]``."""
    skipped: list[dict[str, Any]] = []
    proposal = policy.propose(ctx)
    while proposal is not None and len(skipped) < MAX_INERT:
        patch = proposal.patch
        if proposal.error is not None or patch is None or touches_validation(patch):
            break
        try:
            candidate = apply_patch(ctx.incumbent, patch)
        except HasteError:
            break  # evaluating it records why
        if not inert(candidate):
            break
        skipped.append({"patch": patch.model_dump(mode="json"),
                        "skill_ids": list(proposal.skill_ids), "rationale": proposal.rationale})
        ctx = replace(ctx, history=[*ctx.history, inert_record(ctx.iteration, skipped[-1])])
        proposal = policy.propose(ctx)
    return proposal, skipped


def replay_incumbent(
    initial: SolutionSpec, rows: list[records.IterationRow]
) -> tuple[SolutionSpec, records.IterationRow]:
    """The incumbent spec and its scored row after the recorded iterations."""
    spec, best = initial, rows[0]
    for r in rows[1:]:
        if r.kept and r.patch is not None:
            spec = apply_patch(spec, Patch.model_validate(r.patch))
            best = r
    return spec, best


def iterations_since_kept(rows: list[records.IterationRow]) -> int:
    n = 0
    for r in reversed(rows):
        if r.kept:
            break
        n += 1
    return n


def iteration_json(r: records.IterationRow) -> dict[str, Any]:
    out = {
        "idx": r.idx,
        "branch": r.branch,
        "score": r.cv_mean,
        "std": r.cv_std,
        "kept": r.kept,
        "skills": r.skill_ids,
        "patch": r.patch,
        "rationale": r.rationale,
        "seconds": round(r.seconds, 3),
        "error": r.error,
        "tokens": r.prompt_tokens + r.completion_tokens,
    }
    if r.detail:
        out["detail"] = r.detail
    return out


def record_finished_attempt(
    conn: psycopg.Connection,
    attempt: records.AttemptRow,
    rows: list[records.IterationRow],
    incumbent: SolutionSpec,
    best_row: records.IterationRow,
    skills_loaded: list[dict[str, Any]],
    stopped: str,
    extra: dict[str, Any] | None = None,
    *,
    scored: list[records.IterationRow] | None = None,
    best_cv: float | None = None,
) -> AttemptResult:
    """The attempt's result from its recorded ``rows``, stored as finished. ``scored``: the
    rows the kept rate is over (default: all after the baseline); ``best_cv``: the attempt's
    score when it is not ``best_row``'s (a kept ensemble)."""
    scored = rows[1:] if scored is None else scored
    extra = dict(extra or {})
    skipped = sum(len((r.detail or {}).get("inert", [])) for r in rows)
    if skipped:
        extra["inert_skipped"] = skipped  # proposals not evaluated (see the module doc)
    result = AttemptResult(
        attempt_id=attempt.id,
        slug=attempt.slug,
        policy=attempt.policy,
        loading=attempt.loading,
        seed=attempt.seed,
        best_spec=incumbent.model_dump(mode="json"),
        best_cv=best_row.cv_mean if best_cv is None else best_cv,
        kept_rate=sum(r.kept for r in scored) / len(scored) if scored else 0.0,
        iterations=[iteration_json(r) for r in rows],
        skills_loaded=list(skills_loaded),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
        stopped=stopped,
        extra=extra,
    )
    save_finished(conn, result)
    return result


def save_finished(conn: psycopg.Connection, result: AttemptResult) -> None:
    """Mark ``result``'s attempt finished; its iterations are already rows of their own."""
    summary = {k: v for k, v in result.as_json().items() if k != "iterations"}
    records.finish_attempt(
        conn,
        result.attempt_id,
        best_spec=result.best_spec,
        best_cv=result.best_cv,
        result=summary,
    )


def baseline_row(
    attempt_id: int, applied: list[str], cv: CVResult, seconds: float
) -> records.IterationRow:
    """Iteration 0: the initial spec (shaped by the ``applied`` skills), kept by definition."""
    return records.IterationRow(
        attempt_id=attempt_id,
        idx=0,
        patch=None,
        rationale="initial spec",
        skill_ids=applied,
        cv_mean=cv.mean,
        cv_std=cv.std,
        fold_scores=list(cv.fold_scores),
        kept=True,
        incumbent_before=None,
        seconds=seconds,
    )


def open_attempt(
    conn: psycopg.Connection,
    competition: Competition,
    config: AttemptConfig,
    policy_name: str,
    *,
    dagster_run_id: str | None = None,
    resume_attempt_id: int | None = None,
) -> records.AttemptRow:
    """A new attempt row, or ``resume_attempt_id`` (checked to be this competition's)."""
    definition = competition.definition
    if resume_attempt_id is not None:
        attempt = records.get_attempt(conn, resume_attempt_id)
        if attempt.slug != definition.slug:
            raise AttemptStateError(
                f"attempt {resume_attempt_id} belongs to {attempt.slug}, not {definition.slug}"
            )
        if attempt.initial_spec is None:  # it never got going: it starts now
            records.mark_started(conn, attempt.id)
        return attempt
    attempt_id = records.create_attempt(
        conn,
        slug=definition.slug,
        policy=policy_name,
        loading=config.loading,
        seed=config.seed,
        budget_iterations=config.iterations or definition.budget.iterations,
        label=config.label,
        dagster_run_id=dagster_run_id,
        pipeline=config.pipeline,
    )
    return records.get_attempt(conn, attempt_id)


def bind_policy(policy: Policy, attempt_id: int) -> None:
    """An LLM policy tags its ledger rows with the attempt it proposes for."""
    if hasattr(policy, "bind_attempt"):
        policy.bind_attempt(attempt_id)


def load_attempt_skills(
    conn: psycopg.Connection,
    store: SkillStore,
    attempt: records.AttemptRow,
    competition: Competition,
    profile: dict,
) -> tuple[list[Skill], list[dict[str, Any]]]:
    """(skills, loaded entries) of the attempt: fixed once, the first time they are asked
    for (scoped, recorded as loaded and stored on the attempt row), read back from
    ``skills_loaded`` ever after. Utilities are frozen with them, so a resumed attempt, a
    round on another machine, or an attempt that a campaign phase fixed before it ran
    (`fix_attempt_skills`) sees what was in the store when they were fixed. The foreign
    skills its agent would pass over are not recorded (`without_unused_foreign`)."""
    definition = competition.definition
    if attempt.skills_loaded is None:
        skills = without_unused_foreign(
            store.scoped_skills(definition.slug, definition.domain, profile, attempt.loading),
            competition, profile,
        )
        store.record_loaded(attempt.id, skills)
        loaded = [
            {"id": s.id, "version": s.version, "tier": s.tier, "utility": store.utility(s.id)}
            for s in skills
        ]
        records.set_skills_loaded(conn, attempt.id, loaded)
        return skills, loaded
    loaded = list(attempt.skills_loaded)
    return [store.get(entry["id"], entry["version"]) for entry in loaded], loaded


def without_unused_foreign(
    skills: list[Skill], competition: Competition, profile: dict
) -> list[Skill]:
    """``skills`` less the foreign ones (promoted in another domain) the agent would pass
    over: a scoped load returns every foreign rule pattern that holds, ranked, and the agent
    keeps only the first ``MAX_FOREIGN`` that translate to this task
    (`policy.resolve_skill_views`). Lineage then says an attempt loaded a skill only when
    its agent could use it."""
    definition = competition.definition
    views = skill_views(skills, [], definition.domain, definition.slug)
    foreign = [v for v in views if v.foreign]
    if not foreign:
        return skills
    used = {v.id for v in resolve_skill_views(foreign, competition.problem, profile)}
    return [s for s, v in zip(skills, views, strict=True) if not v.foreign or v.id in used]


def fix_attempt_skills(
    conn: psycopg.Connection,
    store: SkillStore,
    competition: Competition,
    config: AttemptConfig,
    *,
    resume_attempt_id: int | None = None,
    dagster_run_id: str | None = None,
) -> int:
    """Open the attempt ``config`` asks for (or take ``resume_attempt_id``) and fix the
    skills it will load, now, without running it; returns its id.

    A parallel campaign phase does this for every attempt of the phase before any of them
    runs, so all of them load the store as it stood when the phase began, whatever order
    and however many workers then run them."""
    from haste_dagster.competitions.profile import profile_data

    profile = profile_data(competition).as_dict()
    records.record_competition(conn, competition, profile)
    attempt = open_attempt(conn, competition, config, config.policy,
                           dagster_run_id=dagster_run_id, resume_attempt_id=resume_attempt_id)
    load_attempt_skills(conn, store, attempt, competition, profile)
    return attempt.id

"""The competition agent: the refinement loop of one attempt.

    initial spec (specialist) → iteration 0 = its cross-validation (the baseline)
    → for i in 1..N: policy proposes a patch → cross-validate → keep or revert

**Keep rule.** Every candidate is scored on the same folds as the incumbent (the fold
split depends only on the attempt seed), so the noise of a comparison is the spread of the
*paired* per-fold differences d_k (oriented so positive = better). A candidate is kept iff

    mean(d) > KEEP_Z · sd(d) / sqrt(k)   and   mean(d) > MIN_REL_GAIN · |incumbent|

i.e. it beats the incumbent by more than half a standard error of the paired difference and
by a non-negligible relative amount. The loop stops early after ``patience`` consecutive
iterations without a kept change, when the policy has nothing left to propose, or when the
time budget is spent.

**Recording and resume.** Each iteration is written to Postgres as soon as it is scored.
Resuming replays the recorded history (no refitting): the incumbent is the initial spec with
every kept patch applied, and because policies are pure functions of their context the next
proposal is the same one an uninterrupted run would have made.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import psycopg

from haste_dagster.agents import records
from haste_dagster.agents.policy import (
    IterationRecord,
    Policy,
    PolicyContext,
    SkillView,
    resolve_skill_views,
    touches_validation,
)
from haste_dagster.competitions.metrics import get_metric
from haste_dagster.config import redact
from haste_dagster.db import DatabaseError
from haste_dagster.errors import AttemptConfigError, AttemptStateError, HasteError
from haste_dagster.solution.evaluate import CVResult, cross_validate
from haste_dagster.solution.fold_cache import FoldCache
from haste_dagster.solution.spec import Patch, SolutionSpec, apply_patch

log = logging.getLogger(__name__)

Loading = Literal["tiered", "flat", "none"]
Pipeline = Literal["straight", "staged"]
PIPELINES = ("straight", "staged")
KEEP_Z = 0.5
MIN_REL_GAIN = 1e-4


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


def skill_views(skills: list[Any], utility: Callable[[str], float]) -> list[SkillView]:
    return [
        SkillView(
            id=s.id,
            tier=s.tier,
            title=s.title,
            guidance=s.guidance,
            action=s.action,
            utility=utility(s.id),
            conditions={
                "all": [c if isinstance(c, dict) else c.model_dump() for c in s.conditions]
            },
            kind=str(getattr(s, "kind", None) or "change"),
            payload=dict(getattr(s, "payload", None) or {}),
        )
        for s in skills
    ]


def policy_history(rows: list[records.IterationRow]) -> list[IterationRecord]:
    return [
        IterationRecord(
            idx=r.idx,
            patch=r.patch,
            skill_ids=list(r.skill_ids),
            cv_mean=r.cv_mean,
            cv_std=r.cv_std,
            kept=r.kept,
            error=r.error,
        )
        for r in rows
    ]


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


class RefinementLoop:
    """Runs (or resumes) one attempt; the heavy lifting is the policy and cross_validate."""

    def __init__(
        self,
        conn: psycopg.Connection,
        competition: Any,
        policy: Policy,
        *,
        skills: list[Any],
        skills_loaded: list[dict[str, Any]],
        record_usage: Callable[..., Any] | None = None,
        progress: ProgressFn | None = None,
        fold_cache: bool = True,
    ) -> None:
        self.conn = conn
        self.competition = competition
        self.policy = policy
        self.skills_loaded = skills_loaded
        utility = {entry["id"]: entry.get("utility", 0.0) for entry in skills_loaded}
        self.views = skill_views(skills, lambda skill_id: utility.get(skill_id, 0.0))
        self.record_usage = record_usage
        self.progress = progress
        self.metric = get_metric(competition.problem.metric)
        # candidates that change only the model reuse their folds' feature matrices
        cache = FoldCache() if fold_cache else None  # HASTE_FOLD_CACHE_MB=0 turns it off
        self.fold_cache = cache if cache is not None and cache.max_bytes > 0 else None
        self.control: dict[str, Any] | None = None  # the guard's result (see _control_guard)

    def _evaluate(self, spec: SolutionSpec, seed: int, deadline: float | None = None) -> CVResult:
        return cross_validate(
            spec,
            self.competition.problem,
            self.competition.train,
            seed,
            deadline=deadline,
            fold_cache=self.fold_cache,
        )

    def run(
        self, attempt: records.AttemptRow, config: AttemptConfig, profile: dict
    ) -> AttemptResult:
        problem = self.competition.problem
        budget = attempt.budget_iterations
        patience = config.patience or max(5, budget // 2)
        seconds = config.seconds or float(self.competition.definition.budget.seconds)
        started = time.monotonic()
        rows = records.load_iterations(self.conn, attempt.id)

        self.views = resolve_skill_views(self.views, problem, profile)
        if not rows:
            initial, applied = self.policy.initial_spec(problem, profile, self.views)
            scored: CVResult | None = None
            if attempt.initial_spec is None:
                initial, applied, scored = self._control_guard(attempt, initial, applied)
                records.set_attempt_start(
                    self.conn, attempt.id, initial.model_dump(mode="json"), self.skills_loaded
                )
            else:  # crashed before the baseline was scored: keep what was recorded
                initial = SolutionSpec.model_validate(attempt.initial_spec)
            rows = [self._baseline(attempt, initial, applied, budget, scored)]
        else:
            initial = SolutionSpec.model_validate(attempt.initial_spec)

        incumbent, best_row = replay_incumbent(initial, rows)
        since_kept = iterations_since_kept(rows)
        stopped = "budget"
        idx = rows[-1].idx + 1
        while idx <= budget:
            if since_kept >= patience:
                stopped = "stagnation"
                break
            if time.monotonic() - started > seconds:
                stopped = "time"
                break
            ctx = PolicyContext(
                problem=problem,
                profile=profile,
                incumbent=incumbent,
                incumbent_score=best_row.cv_mean,
                history=policy_history(rows),
                skills=self.views,
                iteration=idx,
                budget=budget,
                seed=attempt.seed,
                higher_is_better=self.metric.higher_is_better,
            )
            # A candidate still running when the budget ends is stopped (BudgetExceeded) and
            # recorded as a failed iteration; the baseline above always completes.
            row = self._iterate(attempt, idx, ctx, incumbent, best_row, started + seconds)
            if row is None:
                stopped = "exhausted"
                break
            # The iteration and the usage of the skills it applied commit together: a crash
            # between the two would otherwise leave the iteration recorded (so a resume skips
            # it) and its usage lost for good.
            with self.conn.transaction():
                records.record_iteration(self.conn, row)
                if self.record_usage and row.skill_ids:
                    delta = (
                        0.0
                        if row.cv_mean is None or best_row.cv_mean is None
                        else (
                            (row.cv_mean - best_row.cv_mean)
                            * (1 if self.metric.higher_is_better else -1)
                        )
                    )
                    self.record_usage(attempt.id, idx, row.skill_ids, row.kept, delta)
            self._report(row, budget)
            rows.append(row)
            if row.kept:
                incumbent = apply_patch(incumbent, Patch.model_validate(row.patch))
                best_row = row
                since_kept = 0
            else:
                since_kept += 1
            idx += 1

        extra: dict[str, Any] = {}
        if self.fold_cache is not None:
            extra["fold_cache"] = self.fold_cache.stats()
        if self.control is not None:
            extra["control"] = self.control
        return record_finished_attempt(
            self.conn, attempt, rows, incumbent, best_row, self.skills_loaded, stopped, extra
        )

    def _control_guard(
        self, attempt: records.AttemptRow, initial: SolutionSpec, applied: list[str]
    ) -> tuple[SolutionSpec, list[str], CVResult | None]:
        """The negative-transfer guard. When skills shaped the initial spec, the plain domain
        default is evaluated as a control on the same folds. Each responsible skill gets a
        'screened' usage row with the skill-shaped spec's delta against the control (negative
        = it hurt); when the control scores better, the attempt starts from the control.
        Returns (initial spec, skills it applied, its CV result when already evaluated)."""
        from haste_dagster.solution.space import default_spec

        control = default_spec(self.competition.problem)
        if not applied or initial == control:
            return initial, applied, None
        shaped = self._evaluate(initial, attempt.seed)
        plain = self._evaluate(control, attempt.seed)
        sign = 1.0 if self.metric.higher_is_better else -1.0
        delta = sign * (shaped.mean - plain.mean)
        won = delta >= 0
        self.control = {"cv": plain.mean, "skill_shaped_cv": shaped.mean, "delta": delta,
                        "skills": list(applied), "control_won": not won}
        if self.record_usage:
            self.record_usage(attempt.id, 0, applied, won, delta, event="screened")
        if won:
            return initial, applied, shaped
        log.info("attempt %s: the plain default beat the skill-shaped initial spec by %.4g; "
                 "starting from the control (skills %s get negative usage)", attempt.id,
                 -delta, ", ".join(applied))
        return control, [], plain

    def _baseline(
        self, attempt: records.AttemptRow, initial: SolutionSpec, applied: list[str], budget: int,
        scored: CVResult | None = None,
    ) -> records.IterationRow:
        t0 = time.monotonic()
        cv = scored if scored is not None else self._evaluate(initial, attempt.seed)
        base = baseline_row(attempt.id, applied, cv, time.monotonic() - t0)
        records.record_iteration(self.conn, base)
        self._report(base, budget)
        return base

    def _iterate(
        self,
        attempt: records.AttemptRow,
        idx: int,
        ctx: PolicyContext,
        incumbent: SolutionSpec,
        best_row: records.IterationRow,
        deadline: float | None = None,
    ) -> records.IterationRow | None:
        t0 = time.monotonic()
        proposal = self.policy.propose(ctx)
        if proposal is None:
            return None
        row = records.IterationRow(
            attempt_id=attempt.id,
            idx=idx,
            patch=proposal.patch.model_dump(mode="json") if proposal.patch is not None else None,
            rationale=proposal.rationale,
            skill_ids=list(proposal.skill_ids),
            cv_mean=None,
            cv_std=None,
            fold_scores=None,
            kept=False,
            incumbent_before=best_row.cv_mean,
            seconds=0.0,
            prompt_tokens=proposal.prompt_tokens,
            completion_tokens=proposal.completion_tokens,
            error=getattr(proposal, "error", None),
        )
        if row.error is None and proposal.patch is not None and touches_validation(proposal.patch):
            # Candidates must be scored on the incumbent's folds for the paired keep rule.
            row.error = "patches may not change validation: scores must stay paired by fold"
        if row.error is None and proposal.patch is not None:
            try:
                candidate = apply_patch(incumbent, proposal.patch)
                cv = self._evaluate(candidate, attempt.seed, deadline)
            except HasteError as exc:
                row.error = f"{type(exc).__name__}: {exc}"
            else:
                row.cv_mean, row.cv_std = cv.mean, cv.std
                row.fold_scores = list(cv.fold_scores)
                row.kept = should_keep(
                    row.fold_scores,
                    best_row.fold_scores or [],
                    best_row.cv_mean or 0.0,
                    self.metric.higher_is_better,
                )
        elif row.error is None:
            row.error = "policy returned no patch"
        row.seconds = time.monotonic() - t0
        return row

    def _report(self, row: records.IterationRow, budget: int) -> None:
        if self.progress:
            self.progress(row.idx, budget, row)


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
        extra=dict(extra or {}),
    )
    records.finish_attempt(
        conn,
        attempt.id,
        best_spec=result.best_spec,
        best_cv=result.best_cv,
        result={k: v for k, v in result.as_json().items() if k != "iterations"},
    )
    return result


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
    competition: Any,
    config: AttemptConfig,
    policy: Policy,
    *,
    dagster_run_id: str | None = None,
    resume_attempt_id: int | None = None,
) -> records.AttemptRow:
    """A new attempt row, or ``resume_attempt_id`` (checked to be this competition's); an
    LLM policy is bound to it so its ledger rows carry the attempt."""
    definition = competition.definition
    if resume_attempt_id is not None:
        attempt = records.get_attempt(conn, resume_attempt_id)
        if attempt.slug != definition.slug:
            raise AttemptStateError(
                f"attempt {resume_attempt_id} belongs to {attempt.slug}, not {definition.slug}"
            )
    else:
        attempt_id = records.create_attempt(
            conn,
            slug=definition.slug,
            policy=policy.name,
            loading=config.loading,
            seed=config.seed,
            budget_iterations=config.iterations or definition.budget.iterations,
            label=config.label,
            dagster_run_id=dagster_run_id,
            pipeline=config.pipeline,
        )
        attempt = records.get_attempt(conn, attempt_id)
    if hasattr(policy, "bind_attempt"):  # the LLM policy tags its ledger rows
        policy.bind_attempt(attempt.id)
    return attempt


def load_attempt_skills(
    store: Any, attempt: records.AttemptRow, definition: Any, profile: dict
) -> tuple[list[Any], list[dict[str, Any]]]:
    """(skills, loaded entries) of the attempt: scoped and recorded as loaded when it starts,
    read back from ``skills_loaded`` when it resumes. Utilities are frozen at the start so
    a resumed attempt (or a round on another machine) sees what the first run saw."""
    if attempt.initial_spec is None:
        skills = store.scoped_skills(definition.slug, definition.domain, profile, attempt.loading)
        store.record_loaded(attempt.id, skills)
        loaded = [
            {"id": s.id, "version": s.version, "tier": s.tier, "utility": store.utility(s.id)}
            for s in skills
        ]
        return skills, loaded
    loaded = list(attempt.skills_loaded)
    return [store.get(entry["id"], entry["version"]) for entry in loaded], loaded


def run_attempt(
    conn: psycopg.Connection,
    competition: Any,
    config: AttemptConfig,
    *,
    store: Any | None = None,
    policy: Policy | None = None,
    dagster_run_id: str | None = None,
    resume_attempt_id: int | None = None,
    progress: ProgressFn | None = None,
) -> AttemptResult:
    """Run a new attempt, or resume ``resume_attempt_id`` from its last recorded iteration."""
    from haste_dagster.agents.factory import make_policy, open_skill_store
    from haste_dagster.competitions.profile import profile_data

    if config.pipeline not in PIPELINES:
        raise AttemptConfigError(
            f"pipeline: unknown pipeline {config.pipeline!r}; allowed: {', '.join(PIPELINES)}"
        )
    store = store if store is not None else open_skill_store(conn)
    policy = (
        policy
        if policy is not None
        else make_policy(config.policy, conn, campaign_id=config.campaign_id)
    )
    definition = competition.definition
    profile = profile_data(competition).as_dict()
    records.record_competition(conn, competition, profile)
    attempt = open_attempt(
        conn,
        competition,
        config,
        policy,
        dagster_run_id=dagster_run_id,
        resume_attempt_id=resume_attempt_id,
    )
    skills, loaded = load_attempt_skills(store, attempt, definition, profile)
    # A resumed attempt goes on in the pipeline it started with.
    loop_class: type[RefinementLoop] = RefinementLoop
    if attempt.pipeline == "staged":
        from haste_dagster.agents.pipeline import StagedPipeline

        loop_class = StagedPipeline
    loop = loop_class(
        conn,
        competition,
        policy,
        skills=skills,
        skills_loaded=loaded,
        record_usage=store.record_usage,
        progress=progress,
    )
    try:
        return loop.run(attempt, config, profile)
    except psycopg.OperationalError as exc:
        # The database went away (server stopped, network cut): nothing more can be written,
        # not even the failure. Every iteration recorded so far is kept and resumable.
        raise DatabaseError(
            f"lost the database connection during attempt {attempt.id} ({definition.slug}): "
            f"{redact(str(exc)).strip()}. The iterations recorded so far are kept; when the "
            "database is back, rerun with --resume to continue the attempt"
        ) from exc
    except Exception as exc:
        try:
            records.fail_attempt(conn, attempt.id, f"{type(exc).__name__}: {exc}")
        except psycopg.Error as db_exc:  # keep the original error, not this follow-up
            log.warning("could not mark attempt %s failed: %s", attempt.id, redact(str(db_exc)))
        raise

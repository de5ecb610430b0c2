"""The competition agent: the refinement loop of one attempt.

    initial spec (specialist) → iteration 0 = its cross-validation (the baseline)
    → for i in 1..N: policy proposes a patch → cross-validate → keep or revert

**Keep rule** (`agents.attempts.should_keep`): a candidate is kept iff its paired per-fold
gain over the incumbent exceeds half a standard error and a small relative amount; the
config, result, start and finish of an attempt live there too. The loop stops early after
``patience`` consecutive iterations without a kept change, when the policy has nothing left
to propose, or when the time budget is spent.

**Recording and resume.** Each iteration is written to Postgres as soon as it is scored.
Resuming replays the recorded history (no refitting): the incumbent is the initial spec with
every kept patch applied, and because policies are pure functions of their context the next
proposal is the same one an uninterrupted run would have made.

**Inert candidates** (`attempts.propose_live`): a proposal that would score exactly the
incumbent, its fold matrices being the incumbent's, is skipped without spending an
iteration; the check is a pure function of the data, so it replays identically on resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import psycopg

from haste_dagster.agents import records
from haste_dagster.agents.attempts import (
    PIPELINES,
    AttemptConfig,
    AttemptResult,
    ProgressFn,
    advance_incumbent,
    baseline_row,
    bind_policy,
    iterations_since_kept,
    load_attempt_skills,
    open_attempt,
    policy_history,
    propose_live,
    record_finished_attempt,
    replay_incumbent,
    should_keep,
    skill_views,
)
from haste_dagster.agents.policy import (
    Policy,
    PolicyContext,
    SkillView,
    resolve_skill_views,
    touches_validation,
)
from haste_dagster.competitions.metrics import get_metric
from haste_dagster.config import redact
from haste_dagster.db import DatabaseError
from haste_dagster.errors import AttemptConfigError, HasteError
from haste_dagster.solution.evaluate import CVResult, cross_validate, same_model_input
from haste_dagster.solution.fold_cache import FoldCache
from haste_dagster.solution.spec import SolutionSpec, apply_patch

if TYPE_CHECKING:  # the skill store loads lazily, when an attempt opens it
    from haste_dagster.competitions.registry import Competition
    from haste_dagster.skills.model import Skill
    from haste_dagster.skills.store import SkillStore

log = logging.getLogger(__name__)


class RefinementLoop:
    """Runs (or resumes) one attempt; the heavy lifting is the policy and cross_validate."""

    def __init__(
        self,
        conn: psycopg.Connection,
        competition: Competition,
        policy: Policy,
        *,
        skills: list[Skill],
        skills_loaded: list[dict[str, Any]],
        record_usage: Callable[..., Any] | None = None,
        progress: ProgressFn | None = None,
        fold_cache: bool = True,
    ) -> None:
        self.conn = conn
        self.competition = competition
        self.policy = policy
        self.skills_loaded = skills_loaded
        self.views = skill_views(
            skills, skills_loaded, competition.definition.domain, competition.definition.slug
        )
        self.record_usage = record_usage
        self.progress = progress
        self.metric = get_metric(competition.problem.metric)
        # candidates that change only the model reuse their folds' feature matrices
        cache = FoldCache() if fold_cache else None  # HASTE_FOLD_CACHE_MB=0 turns it off
        self.fold_cache = cache if cache is not None and cache.max_bytes > 0 else None
        self.control: dict[str, Any] | None = None  # the guard's result (see _control_guard)
        self.screened: list[SolutionSpec] = []  # evaluated outside the iterations, rejected

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
            self.control = (rows[0].detail or {}).get("control")  # as the guard decided
        if self.control is not None and self.control["control_won"]:
            # The recorded evidence says these skills hurt here: the attempt goes on without
            # them, and never re-proposes the spec they shaped.
            self.views = demoted(self.views, self.control["skills"], self.control["delta"])
            self.screened = [SolutionSpec.model_validate(self.control["skill_shaped_spec"])]

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
            ctx = self._context(attempt, profile, incumbent, best_row, rows, idx, budget)
            # A candidate still running when the budget ends is stopped (BudgetExceeded) and
            # recorded as a failed iteration; the baseline above always completes.
            row = self._iterate(attempt, idx, ctx, incumbent, best_row, started + seconds)
            if row is None:
                stopped = "exhausted"
                break
            self._record(attempt, row, best_row)
            rows.append(row)
            incumbent, best_row, since_kept = advance_incumbent(
                incumbent, best_row, since_kept, row
            )
            idx += 1

        extra: dict[str, Any] = {}
        if self.fold_cache is not None:
            extra["fold_cache"] = self.fold_cache.stats()
        if self.control is not None:
            extra["control"] = self.control
        return record_finished_attempt(
            self.conn, attempt, rows, incumbent, best_row, self.skills_loaded, stopped, extra
        )

    def _context(
        self,
        attempt: records.AttemptRow,
        profile: dict,
        incumbent: SolutionSpec,
        best_row: records.IterationRow,
        rows: list[records.IterationRow],
        idx: int,
        budget: int,
        **extra: Any,
    ) -> PolicyContext:
        """What the policy sees for iteration ``idx``: the incumbent and its score, the
        history of ``rows`` (its line of iterations), the skills; ``extra``: further fields."""
        return PolicyContext(
            problem=self.competition.problem,
            profile=profile,
            incumbent=incumbent,
            incumbent_score=best_row.cv_mean,
            history=policy_history(rows),
            skills=self.views,
            iteration=idx,
            budget=budget,
            seed=attempt.seed,
            higher_is_better=self.metric.higher_is_better,
            screened=self.screened,
            **extra,
        )

    def _record(
        self, attempt: records.AttemptRow, row: records.IterationRow,
        best_row: records.IterationRow,
    ) -> None:
        """Record ``row`` and the usage of the skills it applied (their delta against
        ``best_row``, the incumbent it was compared with; positive = better), then report it.
        The two commit together: a crash between them would otherwise leave the iteration
        recorded (so a resume skips it) and its usage lost for good."""
        with self.conn.transaction():
            records.record_iteration(self.conn, row)
            if self.record_usage and row.skill_ids:
                delta = (
                    0.0
                    if row.cv_mean is None or best_row.cv_mean is None
                    else (row.cv_mean - best_row.cv_mean)
                    * (1 if self.metric.higher_is_better else -1)
                )
                self.record_usage(attempt.id, row.idx, row.skill_ids, row.kept, delta)
        self._report(row, attempt.budget_iterations)

    def _control_guard(
        self, attempt: records.AttemptRow, initial: SolutionSpec, applied: list[str]
    ) -> tuple[SolutionSpec, list[str], CVResult | None]:
        """The negative-transfer guard. When skills shaped the initial spec, the plain domain
        default is evaluated as a control on the same folds. Each responsible skill gets a
        'screened' usage row with the skill-shaped spec's delta against the control (negative
        = it hurt); when the control scores better, the attempt starts from the control.
        Then the responsible skills are demoted for the rest of the attempt (`demoted`) and
        the spec they shaped is not proposed again (the context's ``screened``).
        Returns (initial spec, skills it applied, its CV result when already evaluated)."""
        from haste_dagster.solution.space import default_spec

        control = default_spec(self.competition.problem)
        if not applied or initial.key() == control.key():
            return initial, applied, None
        if same_model_input(
            initial, control, self.competition.problem, self.competition.train, attempt.seed,
            self.fold_cache,
        ):
            # The skills change nothing the model sees here: the control would score the
            # same to the last bit, so it is not evaluated; their measured effect is 0.
            if self.record_usage:
                self.record_usage(attempt.id, 0, applied, True, 0.0, event="screened")
            return initial, applied, None
        shaped = self._evaluate(initial, attempt.seed)
        plain = self._evaluate(control, attempt.seed)
        sign = 1.0 if self.metric.higher_is_better else -1.0
        delta = sign * (shaped.mean - plain.mean)
        won = delta >= 0
        self.control = {"cv": plain.mean, "skill_shaped_cv": shaped.mean, "delta": delta,
                        "skills": list(applied), "control_won": not won,
                        "skill_shaped_spec": initial.model_dump(mode="json")}
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
        if self.control is not None:  # kept with iteration 0, so a resume knows it
            base.detail = {"control": self.control}
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
        proposal, inert = propose_live(
            self.policy,
            ctx,
            lambda candidate: same_model_input(
                candidate, incumbent, self.competition.problem, self.competition.train,
                attempt.seed, self.fold_cache, deadline,
            ),
        )
        if inert:
            log.info("attempt %s iteration %s: skipped %d inert proposal(s)", attempt.id, idx,
                     len(inert))
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
            detail={"inert": inert} if inert else None,
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


def demoted(views: list[SkillView], skill_ids: list[str], delta: float) -> list[SkillView]:
    """``views`` with the named skills' utility lowered to ``delta`` (< 0: they hurt), so
    policies neither apply nor propose them for the rest of the attempt."""
    blamed = set(skill_ids)
    return [
        replace(v, utility=min(v.utility, delta)) if v.id in blamed else v for v in views
    ]


def run_attempt(
    conn: psycopg.Connection,
    competition: Competition,
    config: AttemptConfig,
    *,
    store: SkillStore | None = None,
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
        policy.name,
        dagster_run_id=dagster_run_id,
        resume_attempt_id=resume_attempt_id,
    )
    bind_policy(policy, attempt.id)
    skills, loaded = load_attempt_skills(conn, store, attempt, competition, profile)
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

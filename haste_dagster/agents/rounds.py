"""Refinement in rounds of K candidates: the batch form of the competition agent's loop.

The sequential loop (`competition_agent.RefinementLoop`) proposes, scores and judges one
patch at a time. To spread candidate evaluations over several workers, a *round* asks the
policy for K patches against the same incumbent, scores each one on its own (a `Candidate`
is self-contained JSON: the full candidate spec, the seed, the competition slug), then
judges them together:

- **Proposals** use the "constant liar" rule of batch optimisation: candidate j of a round
  is proposed with candidates 0..j-1 already in the history as evaluated-but-not-kept
  iterations. Policies are pure functions of their context, so they neither repeat a
  pending spec nor need hidden state, and a rerun proposes exactly the same batch.
- **Keep rule**: each candidate is judged against the incumbent with the project's paired
  rule (`attempts.should_keep`); of those that pass, the best mean is kept (ties:
  the lower index). At most one per round, because every patch was made against the same
  incumbent and two of them need not compose.
- **Recording**: the round's K iterations (in index order) and their skill usage are
  written in one transaction, so a round is either recorded whole or not at all, and
  replaying an already recorded round (a retried step) changes nothing.

Inert proposals (`attempts.propose_live`) are skipped as the loop skips them, against a fold
cache of the round's own. With K = 1 a round is exactly one iteration of `RefinementLoop`:
the same proposal, the same keep decision, the same rows (the loop's negative-transfer
control of a skill-shaped start is not part of the rounds). No Dagster here:
`defs/distributed.py` wires these functions into ops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import psycopg

from haste_dagster.agents import attempts, records
from haste_dagster.agents.policy import (
    IterationRecord,
    Policy,
    PolicyContext,
    SkillView,
    resolve_skill_views,
    touches_validation,
)
from haste_dagster.competitions.metrics import get_metric
from haste_dagster.errors import HasteError
from haste_dagster.solution.evaluate import cross_validate, same_model_input
from haste_dagster.solution.fold_cache import FoldCache
from haste_dagster.solution.spec import SolutionSpec, apply_patch

if TYPE_CHECKING:  # the skill store loads lazily, when an attempt opens it
    from haste_dagster.competitions.registry import Competition
    from haste_dagster.skills.model import Skill
    from haste_dagster.skills.store import SkillStore

RecordUsage = Callable[[int, int, list[str], bool, float], Any]


@dataclass
class Candidate:
    """One proposed iteration, and (after `evaluate_candidate`) its cross-validation."""

    attempt_id: int
    slug: str
    seed: int
    idx: int
    patch: dict | None
    spec: dict | None  # the incumbent with ``patch`` applied; None when ``error`` is set
    rationale: str
    skill_ids: list[str]
    incumbent_before: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cv_mean: float | None = None
    cv_std: float | None = None
    fold_scores: list[float] | None = None
    seconds: float = 0.0
    device: str | None = None  # where it was scored: "cpu" or "cuda"
    inert: list[dict] = field(default_factory=list)  # proposals skipped before this one

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def scored(self) -> bool:
        return self.error is None and self.fold_scores is not None


@dataclass
class RoundPlan:
    """What `propose_round` returns: the candidates, or why there are none."""

    attempt_id: int
    candidates: list[Candidate] = field(default_factory=list)
    stopped: str | None = None  # "budget" | "stagnation" | "exhausted"


@dataclass
class RoundOutcome:
    attempt_id: int
    recorded: list[int]  # iteration indices of the round
    kept: int | None  # the index kept, if any
    best_cv: float | None  # the incumbent's score after the round
    replayed: bool = False  # the round was already recorded (a retried step)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def default_patience(budget: int) -> int:
    """The sequential loop's default: stop after this many iterations without a kept change."""
    return max(5, budget // 2)


def attempt_views(
    store: SkillStore, attempt: records.AttemptRow, competition: Competition, profile: dict
) -> tuple[list[Skill], list[SkillView]]:
    """(skills, policy views) of the skill versions the attempt loaded at its start.

    Utilities are the ones frozen in ``skills_loaded``, so every round (on any machine)
    sees what the first one saw, as a resumed sequential attempt does.
    """
    loaded = list(attempt.skills_loaded)
    skills = [store.get(entry["id"], entry["version"]) for entry in loaded]
    return skills, frozen_views(skills, loaded, competition, profile)


def frozen_views(
    skills: list[Skill], loaded: list[dict[str, Any]], competition: Competition, profile: dict
) -> list[SkillView]:
    """Policy views of ``skills`` with the utilities frozen in their ``loaded`` entries,
    resolved as the sequential attempt resolves them (foreign rules capped, rules restated
    for this data, actions that no longer validate skipped with a logged reason)."""
    views = attempts.skill_views(
        skills, loaded, competition.definition.domain, competition.definition.slug
    )
    return resolve_skill_views(views, competition.problem, profile)


# ---------------------------------------------------------------------------------------
# Start: the attempt row, its skills, the initial spec and the baseline (iteration 0)
# ---------------------------------------------------------------------------------------


def start_attempt(
    conn: psycopg.Connection,
    competition: Competition,
    config: attempts.AttemptConfig,
    *,
    store: SkillStore,
    policy: Policy,
    profile: dict,
    dagster_run_id: str | None = None,
    resume_attempt_id: int | None = None,
    device: str = "cpu",
) -> tuple[records.AttemptRow, bool]:
    """Create (or resume) an attempt and score its baseline; (attempt, baseline scored now).

    Mirrors `competition_agent.run_attempt` up to the first proposal: the same scoped
    skills, recorded loads, initial spec and iteration 0, so both forms of an attempt
    start identically.
    """
    attempt = attempts.open_attempt(
        conn,
        competition,
        config,
        policy.name,
        dagster_run_id=dagster_run_id,
        resume_attempt_id=resume_attempt_id,
    )
    attempts.bind_policy(policy, attempt.id)
    if records.load_iterations(conn, attempt.id):
        return attempt, False
    skills, loaded = attempts.load_attempt_skills(conn, store, attempt, competition, profile)
    views = frozen_views(skills, loaded, competition, profile)
    initial, applied = policy.initial_spec(competition.problem, profile, views)
    if attempt.initial_spec is None:
        records.set_attempt_start(conn, attempt.id, initial.model_dump(mode="json"), loaded)
    else:  # crashed before the baseline was scored: keep what was recorded
        initial = SolutionSpec.model_validate(attempt.initial_spec)
    t0 = time.monotonic()
    cv = cross_validate(
        initial, competition.problem, competition.train, attempt.seed, device=device
    )
    baseline = attempts.baseline_row(attempt.id, applied, cv, time.monotonic() - t0)
    records.record_iteration(conn, baseline)
    return records.get_attempt(conn, attempt.id), True


# ---------------------------------------------------------------------------------------
# Propose
# ---------------------------------------------------------------------------------------


def propose_round(
    conn: psycopg.Connection,
    competition: Competition,
    attempt_id: int,
    k: int,
    *,
    store: SkillStore,
    policy: Policy,
    profile: dict,
    patience: int | None = None,
) -> RoundPlan:
    """Up to ``k`` candidates against the current incumbent (see the module doc)."""
    if k < 1:
        raise ValueError(f"a round needs at least one candidate, not {k}")
    attempt = records.get_attempt(conn, attempt_id)
    rows = records.load_iterations(conn, attempt_id)
    if not rows or attempt.initial_spec is None:
        raise ValueError(f"attempt {attempt_id} has no scored baseline: start it first")
    if hasattr(policy, "bind_attempt"):
        policy.bind_attempt(attempt.id)
    budget = attempt.budget_iterations
    idx = rows[-1].idx + 1
    if idx > budget:
        return RoundPlan(attempt_id, stopped="budget")
    if attempts.iterations_since_kept(rows) >= (patience or default_patience(budget)):
        return RoundPlan(attempt_id, stopped="stagnation")
    initial = SolutionSpec.model_validate(attempt.initial_spec)
    incumbent, best = attempts.replay_incumbent(initial, rows)
    _skills, views = attempt_views(store, attempt, competition, profile)
    higher_is_better = get_metric(competition.problem.metric).higher_is_better
    history = attempts.policy_history(rows)
    plan = RoundPlan(attempt_id)
    fold_cache = FoldCache()  # the incumbent's fold matrices, for every inert check

    def inert(spec: SolutionSpec) -> bool:
        return same_model_input(spec, incumbent, competition.problem, competition.train,
                                attempt.seed, fold_cache)

    for j in range(min(k, budget - idx + 1)):
        ctx = PolicyContext(
            problem=competition.problem,
            profile=profile,
            incumbent=incumbent,
            incumbent_score=best.cv_mean,
            history=history,
            skills=views,
            iteration=idx + j,
            budget=budget,
            seed=attempt.seed,
            higher_is_better=higher_is_better,
        )
        proposal, skipped = attempts.propose_live(policy, ctx, inert)
        history = [*history, *(attempts.inert_record(idx + j, x) for x in skipped)]
        if proposal is None:
            break
        candidate = Candidate(
            attempt_id=attempt.id,
            slug=attempt.slug,
            seed=attempt.seed,
            idx=idx + j,
            patch=proposal.patch.model_dump(mode="json") if proposal.patch is not None else None,
            spec=None,
            rationale=proposal.rationale,
            skill_ids=list(proposal.skill_ids),
            incumbent_before=best.cv_mean,
            prompt_tokens=proposal.prompt_tokens,
            completion_tokens=proposal.completion_tokens,
            error=getattr(proposal, "error", None),
            inert=skipped,
        )
        if candidate.error is None and proposal.patch is None:
            candidate.error = "policy returned no patch"
        elif candidate.error is None and touches_validation(proposal.patch):
            # Candidates must be scored on the incumbent's folds for the paired keep rule.
            candidate.error = "patches may not change validation: scores must stay paired by fold"
        elif candidate.error is None:
            try:
                candidate.spec = apply_patch(incumbent, proposal.patch).model_dump(mode="json")
            except HasteError as exc:
                candidate.error = f"{type(exc).__name__}: {exc}"
        plan.candidates.append(candidate)
        # The constant liar: the pending candidate counts as evaluated and not kept.
        history = [
            *history,
            IterationRecord(
                idx=candidate.idx,
                patch=candidate.patch,
                skill_ids=list(candidate.skill_ids),
                cv_mean=None,
                cv_std=None,
                kept=False,
                error=candidate.error,
            ),
        ]
    if not plan.candidates:
        plan.stopped = "exhausted"
    return plan


# ---------------------------------------------------------------------------------------
# Evaluate (anywhere: needs the competition's data, not the database)
# ---------------------------------------------------------------------------------------


def evaluate_candidate(
    candidate: Candidate, competition: Competition, device: str = "cpu"
) -> Candidate:
    """``candidate`` with its cross-validation filled in (or its fitting error)."""
    if candidate.error is not None or candidate.spec is None:
        return replace(candidate, device=device)
    if competition.definition.slug != candidate.slug:
        raise ValueError(f"candidate of {candidate.slug} given competition "
                         f"{competition.definition.slug}")
    t0 = time.monotonic()
    try:
        cv = cross_validate(
            SolutionSpec.model_validate(candidate.spec),
            competition.problem,
            competition.train,
            candidate.seed,
            device=device,
        )
    except HasteError as exc:
        return replace(
            candidate,
            error=f"{type(exc).__name__}: {exc}",
            seconds=time.monotonic() - t0,
            device=device,
        )
    return replace(
        candidate,
        cv_mean=cv.mean,
        cv_std=cv.std,
        fold_scores=list(cv.fold_scores),
        seconds=time.monotonic() - t0,
        device=device,
    )


# ---------------------------------------------------------------------------------------
# Select and record
# ---------------------------------------------------------------------------------------


def choose_kept(
    candidates: list[Candidate],
    incumbent_folds: list[float],
    incumbent_mean: float,
    higher_is_better: bool,
) -> Candidate | None:
    """The candidate a round keeps: best mean among those passing the keep rule, or None."""
    passing = [
        c
        for c in candidates
        if c.scored
        and c.cv_mean is not None
        and attempts.should_keep(
            c.fold_scores or [], incumbent_folds, incumbent_mean, higher_is_better
        )
    ]
    if not passing:
        return None
    sign = 1.0 if higher_is_better else -1.0
    return min(passing, key=lambda c: (-sign * float(c.cv_mean or 0.0), c.idx))


def record_round(
    conn: psycopg.Connection,
    competition: Competition,
    attempt_id: int,
    scored: list[Candidate],
    *,
    record_usage: RecordUsage | None = None,
) -> RoundOutcome:
    """Judge a round's scored candidates and record them (and skill usage) in one transaction."""
    attempt = records.get_attempt(conn, attempt_id)
    rows = records.load_iterations(conn, attempt_id)
    if not rows or attempt.initial_spec is None:
        raise ValueError(f"attempt {attempt_id} has no scored baseline: start it first")
    batch = sorted(scored, key=lambda c: c.idx)
    if any(c.attempt_id != attempt_id for c in batch):
        raise ValueError(f"round for attempt {attempt_id} holds candidates of another attempt")
    have = {r.idx: r for r in rows}
    indices = [c.idx for c in batch]
    if batch and all(i in have for i in indices):  # already recorded: a retried step
        kept = next((i for i in indices if have[i].kept), None)
        initial = SolutionSpec.model_validate(attempt.initial_spec)
        _spec, best = attempts.replay_incumbent(initial, rows)
        return RoundOutcome(attempt_id, indices, kept, best.cv_mean, replayed=True)
    expected = list(range(rows[-1].idx + 1, rows[-1].idx + 1 + len(batch)))
    if indices != expected:
        raise ValueError(
            f"attempt {attempt_id}: round holds iterations {indices}, but the next ones to "
            f"record are {expected} (was the attempt advanced by another run?)"
        )
    _spec, best = attempts.replay_incumbent(SolutionSpec.model_validate(attempt.initial_spec), rows)
    higher_is_better = get_metric(competition.problem.metric).higher_is_better
    winner = choose_kept(batch, best.fold_scores or [], best.cv_mean or 0.0, higher_is_better)
    sign = 1.0 if higher_is_better else -1.0
    with conn.transaction():
        for c in batch:
            row = records.IterationRow(
                attempt_id=attempt_id,
                idx=c.idx,
                patch=c.patch,
                rationale=c.rationale,
                skill_ids=list(c.skill_ids),
                cv_mean=c.cv_mean,
                cv_std=c.cv_std,
                fold_scores=c.fold_scores,
                kept=winner is not None and c.idx == winner.idx,
                incumbent_before=best.cv_mean,
                seconds=c.seconds,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                error=c.error,
                detail={"inert": c.inert} if c.inert else None,
            )
            records.record_iteration(conn, row)
            if record_usage and row.skill_ids:
                delta = (
                    0.0
                    if row.cv_mean is None or best.cv_mean is None
                    else (row.cv_mean - best.cv_mean) * sign
                )
                record_usage(attempt_id, row.idx, row.skill_ids, row.kept, delta)
    best_cv = winner.cv_mean if winner is not None else best.cv_mean
    return RoundOutcome(attempt_id, indices, winner.idx if winner else None, best_cv)


# ---------------------------------------------------------------------------------------
# Finish and the final model
# ---------------------------------------------------------------------------------------


def finish_attempt(
    conn: psycopg.Connection,
    attempt_id: int,
    *,
    stopped: str = "budget",
    extra: dict[str, Any] | None = None,
) -> attempts.AttemptResult:
    """Mark the attempt finished with its best spec; the same result the sequential loop gives."""
    attempt = records.get_attempt(conn, attempt_id)
    rows = records.load_iterations(conn, attempt_id)
    if not rows or attempt.initial_spec is None:
        raise ValueError(f"attempt {attempt_id} has no scored baseline: start it first")
    initial = SolutionSpec.model_validate(attempt.initial_spec)
    incumbent, best = attempts.replay_incumbent(initial, rows)
    return attempts.record_finished_attempt(
        conn, attempt, rows, incumbent, best, attempt.skills_loaded, stopped, extra
    )

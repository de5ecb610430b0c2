"""Multi-target competitions, solved as one single-target sub-problem per target column.

A multi-target metric that is the mean of a single-column metric over the targets
(``Metric.per_column``: ``mean_columnwise_rmsle`` → ``rmsle``, ``mean_columnwise_roc_auc``
→ ``roc_auc``) is optimised by optimising each column on its own, so each target gets a
*view* (:func:`~haste_dagster.competitions.registry.target_view`: the same training rows and
features, that one target, the per-column metric) refined by the ordinary attempt machinery
(:func:`~haste_dagster.agents.competition_agent.run_attempt`). Each target's best spec is
then fit on all training rows, the per-target hidden-test predictions are stacked into one
(n, k) prediction in the definition's target order, and that is graded with the
competition's real multi-target metric, its leaderboard and medals.

**Budget.** The attempt's N refinement iterations are split evenly over the k targets, the
first ``N mod k`` targets taking one more, and every target at least one (so with k > N the
attempt runs k refinement iterations, one per target; the JSON says each target's share).
Each target's baseline (iteration 0) is not counted, as in a single-target attempt. The time
budget is split evenly: each sub-attempt gets ``seconds / k``.

**Records.** One attempt row (the *parent*: the competition's slug, the whole budget N) holds
the combined grade and the stacked predictions, so ``haste solve --submission`` and
``haste grade`` read it like any attempt. Each target is a sub-attempt row (``parent_id``,
``target``: migration 0009) with its own iterations, skills loaded and usage, refined in the
pipeline the attempt was asked for (``--pipeline staged``: each target screens its own
prototypes). ``--resume``
picks up the newest ungraded parent and resumes every sub-attempt from its last recorded
iteration (a finished one is replayed from its rows without refitting); a target with no
sub-attempt yet gets a new one.

**Skills.** Each sub-attempt extracts competition skills like a single-target attempt, scoped
to the competition (the view keeps its slug and domain; its profile is that target's), after
every target is refined, so each target starts from the same inventory.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from haste_dagster.agents import records
from haste_dagster.agents.attempts import (
    AttemptConfig,
    AttemptResult,
    ProgressFn,
    open_attempt,
    save_finished,
)
from haste_dagster.agents.competition_agent import run_attempt
from haste_dagster.agents.factory import make_policy, open_skill_store
from haste_dagster.agents.orchestrator import (
    SolveResult,
    extract_skills,
    reflect_with_llm,
)
from haste_dagster.agents.submission import predictions_to_bytes
from haste_dagster.competitions.grading import competition_thresholds, grade, score_hidden
from haste_dagster.competitions.registry import Competition, check_solvable, target_view
from haste_dagster.solution.evaluate import fit_predict
from haste_dagster.solution.spec import SolutionSpec

if TYPE_CHECKING:
    from haste_dagster.agents.policy import Policy

log = logging.getLogger(__name__)


def split_budget(iterations: int, n_targets: int) -> list[int]:
    """Refinement iterations per target: ``iterations`` split evenly, the first
    ``iterations mod n_targets`` targets one more, every target at least 1."""
    base, extra = divmod(iterations, n_targets)
    return [max(1, base + (1 if j < extra else 0)) for j in range(n_targets)]


def target_predictions(view: Competition, attempt: records.AttemptRow) -> np.ndarray:
    """One target's hidden-test predictions from its sub-attempt's best spec, fit on all
    training rows: P(1) for a 0/1 target, values for a numeric one."""
    spec = SolutionSpec.model_validate(attempt.best_spec)
    predictions = np.asarray(
        fit_predict(spec, view.problem, view.train, view.test_features, attempt.seed), dtype=float
    )
    if view.metric.name == "rmsle":
        # The per-column RMSLE scores max(p, 0) (so CV measured exactly that); the
        # multi-target RMSLE, like MLE-bench's, refuses negative predictions instead.
        predictions = np.clip(predictions, 0.0, None)
    return predictions


def _open_parent(
    conn: psycopg.Connection,
    competition: Competition,
    config: AttemptConfig,
    policy_name: str,
    resume: bool,
    dagster_run_id: str | None,
) -> tuple[records.AttemptRow, bool]:
    """(the parent attempt, whether it is a resumed one)."""
    resume_id = records.resumable_attempt(conn, competition.slug, config) if resume else None
    if resume and resume_id is None:
        log.warning("nothing to resume for %s: starting a new attempt", competition.slug)
    if resume_id is not None:
        return records.get_attempt(conn, resume_id), True
    parent = open_attempt(conn, competition, config, policy_name, dagster_run_id=dagster_run_id)
    return parent, False


def _sub_attempt(
    conn: psycopg.Connection,
    parent: records.AttemptRow,
    target: str,
    budget: int,
    existing: dict[str, int],
) -> int:
    if target in existing:
        return existing[target]
    return records.create_attempt(
        conn,
        slug=parent.slug,
        policy=parent.policy,
        loading=parent.loading,
        seed=parent.seed,
        budget_iterations=budget,
        label=parent.label,
        dagster_run_id=parent.dagster_run_id,
        parent_id=parent.id,
        target=target,
        pipeline=parent.pipeline,  # each target is refined as the attempt was asked to be
    )


def _combined_result(
    parent: records.AttemptRow,
    targets: list[str],
    results: list[AttemptResult],
    details: list[dict[str, Any]],
) -> AttemptResult:
    """The parent's result: the mean of the per-target CV scores (the multi-target metric is
    their mean), every iteration tagged with its target, the per-target details in extra."""
    iterations = [
        {"target": target, "attempt_id": r.attempt_id, **it}
        for target, r in zip(targets, results, strict=True)
        for it in r.iterations
    ]
    refined = [it for it in iterations if it["idx"] > 0]
    loaded: dict[str, dict[str, Any]] = {}
    for r in results:
        for entry in r.skills_loaded:
            loaded.setdefault(entry["id"], entry)
    stops = {r.stopped for r in results}
    best = [r.best_cv for r in results]
    return AttemptResult(
        attempt_id=parent.id,
        slug=parent.slug,
        policy=parent.policy,
        loading=parent.loading,
        seed=parent.seed,
        best_spec={"per_target": {t: r.best_spec for t, r in zip(targets, results, strict=True)}},
        best_cv=float(np.mean(best)) if all(b is not None for b in best) else None,
        kept_rate=sum(bool(it["kept"]) for it in refined) / len(refined) if refined else 0.0,
        iterations=iterations,
        skills_loaded=list(loaded.values()),
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
        stopped=stops.pop() if len(stops) == 1 else "mixed",
        extra={"targets": details},
    )


def solve_multitarget(
    conn: psycopg.Connection,
    competition: Competition,
    config: AttemptConfig,
    *,
    resume: bool = False,
    extract: bool = True,
    progress: ProgressFn | None = None,
    dagster_run_id: str | None = None,
    policy: Policy | None = None,
) -> SolveResult:
    """Solve a multi-target competition one target at a time (see the module doc)."""
    definition = competition.definition
    # Before any compute, as for one target: an unsupported metric, a view that cannot be
    # built (a 0/1 target with one class), a broken leaderboard.
    check_solvable(competition, per_target=True)
    targets = list(definition.targets)
    views = [target_view(competition, t) for t in targets]
    competition_thresholds(competition)
    store = open_skill_store(conn)
    if policy is None:
        policy = make_policy(config.policy, conn, campaign_id=config.campaign_id)
    parent, resumed = _open_parent(conn, competition, config, policy.name, resume, dagster_run_id)
    budgets = split_budget(parent.budget_iterations, len(targets))
    seconds = (config.seconds or float(definition.budget.seconds)) / len(targets)
    existing = records.sub_attempts(conn, parent.id)
    results: list[AttemptResult] = []
    offset = 0
    try:
        for target, view, budget in zip(targets, views, budgets, strict=True):
            sub_id = _sub_attempt(conn, parent, target, budget, existing)
            # The CLI's progress bar counts the whole attempt: target j starts after the
            # budgets of the targets before it.
            report = None
            if progress is not None:
                report = _offset_progress(progress, offset, sum(budgets))
            results.append(
                run_attempt(
                    conn,
                    view,
                    replace(config, iterations=budget, seconds=seconds),
                    store=store,
                    policy=policy,
                    dagster_run_id=dagster_run_id,
                    resume_attempt_id=sub_id,
                    progress=report,
                )
            )
            offset += budget
    except Exception as exc:
        records.fail_attempt(conn, parent.id, f"{type(exc).__name__}: {exc}")
        raise

    # Skills before the grade, as for one target: a crash while they are written is finished
    # by resuming (the parent stays ungraded until then; extraction is idempotent).
    new_skills: list[str] = []
    llm = None
    client = getattr(policy, "client", None)
    for view, result in zip(views, results, strict=True):
        if extract:
            new_skills += [s.id for s in extract_skills(conn, view, result.attempt_id, store)]
            if result.policy == "llm" and client is not None:
                new_skills += reflect_with_llm(conn, view, result.attempt_id, store, client)
    if parent.policy == "llm":
        from haste_dagster.llm.ledger import TokenLedger

        ledger = TokenLedger(conn)
        llm = {
            t: ledger.attempt_totals(r.attempt_id).as_json()
            for t, r in zip(targets, results, strict=True)
        }

    columns = []
    details = []
    for target, view, result, budget in zip(targets, views, results, budgets, strict=True):
        sub = records.get_attempt(conn, result.attempt_id)
        column = target_predictions(view, sub)
        columns.append(column)
        details.append(
            {
                "target": target,
                "attempt_id": result.attempt_id,
                "metric": view.metric.name,
                "budget_iterations": budget,
                "best_cv": result.best_cv,
                "kept_rate": result.kept_rate,
                "stopped": result.stopped,
                "test_score": score_hidden(view, column),
            }
        )
    predictions = np.column_stack(columns)
    combined = _combined_result(parent, targets, results, details)
    save_finished(conn, combined)
    graded = grade(competition, predictions)
    records.record_grade(
        conn,
        parent.id,
        test_score=graded.score,
        medal=graded.medal,
        predictions=predictions_to_bytes(predictions),
        grade=graded.model_dump(mode="json"),
    )
    return SolveResult(
        attempt=combined, grade=graded, new_skills=new_skills, resumed=resumed, llm=llm
    )


def _offset_progress(progress: ProgressFn, offset: int, total: int) -> ProgressFn:
    def report(idx: int, budget: int, row: records.IterationRow) -> None:
        progress(offset + idx, total, row)

    return report

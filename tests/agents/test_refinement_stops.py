"""The sequential loop's stops (patience, time budget), a candidate cut by BudgetExceeded,
and the sign of the skill-usage delta for a lower-is-better metric (rmse)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from haste_dagster import db
from haste_dagster.agents.attempts import AttemptConfig, open_attempt
from haste_dagster.agents.competition_agent import RefinementLoop, run_attempt
from haste_dagster.agents.heuristic import HeuristicPolicy
from haste_dagster.competitions.profile import profile_data
from haste_dagster.competitions.registry import load_competition
from haste_dagster.solution.spec import Patch

SKILL = "sk_00000000000000aa"


class _Scripted:
    """The heuristic policy's specs, with proposals chosen per test (a real Policy)."""

    name = "heuristic"

    def __init__(self, propose: Any) -> None:
        self.inner = HeuristicPolicy()
        self._propose = propose

    def initial_spec(self, problem: Any, profile: Any, skills: Any) -> Any:
        return self.inner.initial_spec(problem, profile, skills)

    def propose(self, ctx: Any) -> Any:
        return self._propose(self.inner, ctx)


def _iterations(conn: psycopg.Connection, attempt_id: int) -> list[dict]:
    return conn.execute(
        "SELECT idx, kept, cv_mean, error FROM iterations WHERE attempt_id = %s ORDER BY idx",
        (attempt_id,),
    ).fetchall()


def _invalid(inner: Any, ctx: Any) -> Any:
    proposal = inner.propose(ctx)
    bad = Patch.model_validate({"ops": [{"op": "set", "path": "model.params.nope", "value": 1}]})
    return replace(proposal, patch=bad)


def _solve(db_url: str, defs: Path, config: AttemptConfig, propose: Any) -> tuple[Any, list]:
    with db.connection(db_url) as conn:
        competition = load_competition("tiny_regression", defs)
        result = run_attempt(conn, competition, config, policy=_Scripted(propose))
        return result, _iterations(conn, result.attempt_id)


def test_patience_stops_after_that_many_iterations_without_a_kept_candidate(
    db_url: str, tiny_defs: Path
) -> None:
    result, rows = _solve(db_url, tiny_defs, AttemptConfig(iterations=10, patience=3), _invalid)
    assert result.stopped == "stagnation"
    assert [r["idx"] for r in rows] == [0, 1, 2, 3]  # baseline + 3 unkept, of a budget of 10
    assert not any(r["kept"] for r in rows[1:])


def test_a_candidate_past_the_time_budget_is_recorded_failed_then_the_loop_stops_on_time(
    db_url: str, tiny_defs: Path
) -> None:
    competition = load_competition("tiny_regression", tiny_defs)
    with db.connection(db_url) as conn:
        first = run_attempt(
            conn, competition, AttemptConfig(iterations=5), policy=_Scripted(lambda i, c: None)
        )
        assert first.stopped == "exhausted"  # the baseline only

        def slow(inner: Any, ctx: Any) -> Any:
            # Resumed, the clock starts after the recorded baseline; sleeping past the
            # budget means the candidate's cross-validation starts after its deadline.
            time.sleep(2.5)
            return inner.propose(ctx)

        resumed = run_attempt(
            conn,
            competition,
            AttemptConfig(iterations=5, seconds=2.0),
            policy=_Scripted(slow),
            resume_attempt_id=first.attempt_id,
        )
        rows = _iterations(conn, first.attempt_id)
    assert resumed.stopped == "time"
    assert [r["idx"] for r in rows] == [0, 1]
    assert rows[1]["kept"] is False and rows[1]["cv_mean"] is None
    assert rows[1]["error"].startswith("BudgetExceeded")


def test_skill_usage_delta_is_positive_when_a_lower_is_better_score_drops(
    db_url: str, tiny_defs: Path
) -> None:
    competition = load_competition("tiny_regression", tiny_defs)
    assert not competition.metric.higher_is_better  # rmse
    usage: list[tuple] = []

    def with_skill(inner: Any, ctx: Any) -> Any:
        if ctx.iteration > 3:
            return None
        return replace(inner.propose(ctx), skill_ids=[SKILL])

    policy = _Scripted(with_skill)
    config = AttemptConfig(iterations=3)
    with db.connection(db_url) as conn:
        attempt = open_attempt(conn, competition, config, policy.name)
        loop = RefinementLoop(
            conn,
            competition,
            policy,
            skills=[],
            skills_loaded=[],
            record_usage=lambda *args: usage.append(args),
        )
        loop.run(attempt, config, profile_data(competition).as_dict())
        rows = _iterations(conn, attempt.id)
    scored = {r["idx"]: r for r in rows}
    assert len(usage) == 3
    incumbent = scored[0]["cv_mean"]
    for attempt_id, idx, skill_ids, kept, delta in usage:
        row = scored[idx]
        assert (attempt_id, skill_ids, kept) == (attempt.id, [SKILL], row["kept"])
        if row["cv_mean"] is not None:
            # Positive = better: the incumbent's rmse minus the candidate's.
            assert delta == pytest.approx(incumbent - row["cv_mean"])
        if kept:
            assert delta > 0
            incumbent = row["cv_mean"]
    assert any(r["kept"] for r in rows[1:])  # the sign was seen on a real improvement

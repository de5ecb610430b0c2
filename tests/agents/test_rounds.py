"""Refinement in rounds of K candidates (agents.rounds): the batch form of the loop."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any

import psycopg
import pytest

from haste_dagster.agents import records
from haste_dagster.agents import rounds as batch
from haste_dagster.agents.attempts import AttemptConfig, AttemptResult
from haste_dagster.agents.competition_agent import run_attempt
from haste_dagster.agents.factory import open_skill_store
from haste_dagster.agents.heuristic import HeuristicPolicy
from haste_dagster.agents.submission import make_submission
from haste_dagster.competitions import load_competition, profile_data

SLUG = "tiny_regression"


@pytest.fixture
def setup(
    conn: psycopg.Connection, tiny_defs: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")  # lexical embeddings: no model, fast
    competition = load_competition(SLUG, tiny_defs)
    return {
        "conn": conn,
        "competition": competition,
        "store": open_skill_store(conn),
        "policy": HeuristicPolicy(),
        "profile": profile_data(competition).as_dict(),
    }


def _start(s: dict[str, Any], budget: int, seed: int = 0) -> records.AttemptRow:
    attempt, scored_now = batch.start_attempt(
        s["conn"],
        s["competition"],
        AttemptConfig(iterations=budget, seed=seed),
        store=s["store"],
        policy=s["policy"],
        profile=s["profile"],
    )
    assert scored_now
    return attempt


def _propose(s: dict[str, Any], attempt_id: int, k: int, **kw: Any) -> batch.RoundPlan:
    return batch.propose_round(
        s["conn"],
        s["competition"],
        attempt_id,
        k,
        store=s["store"],
        policy=s["policy"],
        profile=s["profile"],
        **kw,
    )


def _run_rounds(s: dict[str, Any], rounds: int, k: int, seed: int) -> AttemptResult:
    attempt = _start(s, rounds * k, seed)
    stopped = "budget"
    for _ in range(rounds):
        plan = _propose(s, attempt.id, k)
        if plan.stopped:
            stopped = plan.stopped
            break
        scored = [batch.evaluate_candidate(c, s["competition"]) for c in plan.candidates]
        batch.record_round(
            s["conn"], s["competition"], attempt.id, scored, record_usage=s["store"].record_usage
        )
    return batch.finish_attempt(s["conn"], attempt.id, stopped=stopped)


def _rows(conn: psycopg.Connection, attempt_id: int) -> list[tuple]:
    return [
        (r.idx, r.patch, r.rationale, r.skill_ids, r.cv_mean, r.fold_scores, r.kept, r.error)
        for r in records.load_iterations(conn, attempt_id)
    ]


def _candidate(idx: int, folds: list[float] | None, error: str | None = None) -> batch.Candidate:
    return batch.Candidate(
        attempt_id=1,
        slug=SLUG,
        seed=0,
        idx=idx,
        patch={"ops": []},
        spec={},
        rationale="r",
        skill_ids=[],
        incumbent_before=1.0,
        fold_scores=folds,
        cv_mean=mean(folds) if folds else None,
        error=error,
    )


def test_rounds_of_one_candidate_reproduce_the_sequential_refinement_loop(
    setup: dict[str, Any],
) -> None:
    config = AttemptConfig(iterations=4, seed=3)
    sequential = run_attempt(setup["conn"], setup["competition"], config)
    rounds = _run_rounds(setup, rounds=4, k=1, seed=3)
    assert rounds.attempt_id != sequential.attempt_id
    assert _rows(setup["conn"], rounds.attempt_id) == _rows(setup["conn"], sequential.attempt_id)
    assert rounds.best_spec == sequential.best_spec
    assert rounds.best_cv == sequential.best_cv
    assert rounds.kept_rate == sequential.kept_rate


def test_a_round_proposes_distinct_candidates_against_one_incumbent(
    setup: dict[str, Any],
) -> None:
    attempt = _start(setup, budget=8)
    baseline = records.load_iterations(setup["conn"], attempt.id)[0]
    plan = _propose(setup, attempt.id, 4)
    assert plan.stopped is None
    assert [c.idx for c in plan.candidates] == [1, 2, 3, 4]
    specs = [json.dumps(c.spec, sort_keys=True) for c in plan.candidates]
    assert len(set(specs)) == 4
    assert json.dumps(attempt.initial_spec, sort_keys=True) not in specs
    assert all(c.incumbent_before == baseline.cv_mean for c in plan.candidates)
    # The first candidate is the one a single-candidate round (the sequential loop) proposes.
    assert _propose(setup, attempt.id, 1).candidates[0] == plan.candidates[0]
    # Proposing is a pure function of the recorded history: a retried step gets the same batch.
    assert [c.as_json() for c in _propose(setup, attempt.id, 4).candidates] == [
        c.as_json() for c in plan.candidates
    ]


def test_a_round_keeps_the_best_candidate_that_passes_the_keep_rule() -> None:
    incumbent = [1.0, 1.0, 1.0]  # rmse: lower is better
    good = _candidate(1, [0.9, 0.9, 0.9])
    better = _candidate(2, [0.8, 0.8, 0.8])
    noisy = _candidate(3, [0.2, 1.8, 0.5])  # a lower mean, but the folds disagree: noise
    failed = _candidate(4, None, error="SpecError: boom")
    assert batch.choose_kept([good, better, noisy, failed], incumbent, 1.0, False) == better
    twin = _candidate(5, [0.8, 0.8, 0.8])
    assert batch.choose_kept([twin, better], incumbent, 1.0, False) == better  # tie: lower idx
    assert batch.choose_kept([noisy, failed], incumbent, 1.0, False) is None
    assert batch.choose_kept([good, better], incumbent, 1.0, True) is None  # all worse


def test_recording_a_round_again_changes_nothing(setup: dict[str, Any]) -> None:
    attempt = _start(setup, budget=4)
    plan = _propose(setup, attempt.id, 2)
    scored = [batch.evaluate_candidate(c, setup["competition"]) for c in plan.candidates]
    first = batch.record_round(setup["conn"], setup["competition"], attempt.id, scored)
    rows = _rows(setup["conn"], attempt.id)
    assert [r[0] for r in rows] == [0, 1, 2]
    assert sum(r[6] for r in rows[1:]) <= 1  # at most one kept per round
    assert first.kept == next((r[0] for r in rows[1:] if r[6]), None)
    again = batch.record_round(setup["conn"], setup["competition"], attempt.id, scored[::-1])
    assert again.replayed and again.kept == first.kept and again.best_cv == first.best_cv
    assert _rows(setup["conn"], attempt.id) == rows


def test_a_round_that_does_not_continue_the_attempt_is_refused(setup: dict[str, Any]) -> None:
    attempt = _start(setup, budget=6)
    plan = _propose(setup, attempt.id, 2)
    stale = [batch.Candidate.from_json({**c.as_json(), "idx": c.idx + 2}) for c in plan.candidates]
    with pytest.raises(ValueError, match=r"next ones to record are \[1, 2\]"):
        batch.record_round(setup["conn"], setup["competition"], attempt.id, stale)
    assert [r[0] for r in _rows(setup["conn"], attempt.id)] == [0]


def test_proposals_stop_when_the_budget_is_spent_or_nothing_is_kept(
    setup: dict[str, Any],
) -> None:
    attempt = _start(setup, budget=2)
    plan = _propose(setup, attempt.id, 3)
    assert len(plan.candidates) == 2  # capped by what is left of the budget
    failed = [
        batch.Candidate.from_json({**c.as_json(), "error": "SpecError: x"})
        for c in plan.candidates
    ]
    outcome = batch.record_round(setup["conn"], setup["competition"], attempt.id, failed)
    assert outcome.kept is None
    assert _propose(setup, attempt.id, 3).stopped == "budget"

    other = _start(setup, budget=6)
    plan = _propose(setup, other.id, 2)
    failed = [
        batch.Candidate.from_json({**c.as_json(), "error": "SpecError: x"})
        for c in plan.candidates
    ]
    batch.record_round(setup["conn"], setup["competition"], other.id, failed)
    stalled = _propose(setup, other.id, 2, patience=2)
    assert stalled.stopped == "stagnation" and stalled.candidates == []


def test_candidates_travel_as_plain_json() -> None:
    candidate = _candidate(3, [0.5, 0.6, 0.7])
    wire = json.loads(json.dumps(candidate.as_json()))
    assert batch.Candidate.from_json({**wire, "added_later": 1}) == candidate


def test_an_unscorable_candidate_is_passed_through_with_its_error(setup: dict[str, Any]) -> None:
    candidate = _candidate(1, None, error="patches may not change validation")
    out = batch.evaluate_candidate(candidate, setup["competition"], device="cpu")
    assert out.error == candidate.error and out.cv_mean is None and out.device == "cpu"


def test_the_final_fit_of_a_rounds_attempt_is_graded_stored_and_reproducible(
    setup: dict[str, Any],
) -> None:
    result = _run_rounds(setup, rounds=1, k=2, seed=1)
    graded = make_submission(setup["conn"], setup["competition"], result.attempt_id, "cpu")
    stored = records.get_attempt(setup["conn"], result.attempt_id)
    assert stored.test_score == pytest.approx(graded.score) and stored.medal == graded.medal
    again = make_submission(setup["conn"], setup["competition"], result.attempt_id)
    assert again.score == pytest.approx(graded.score, rel=1e-12)
    assert again.medal == graded.medal


def test_restarting_an_attempt_continues_after_its_recorded_rounds(
    setup: dict[str, Any],
) -> None:
    attempt = _start(setup, budget=6)
    plan = _propose(setup, attempt.id, 2)
    scored = [batch.evaluate_candidate(c, setup["competition"]) for c in plan.candidates]
    batch.record_round(setup["conn"], setup["competition"], attempt.id, scored)
    before = _rows(setup["conn"], attempt.id)
    # A new run (another machine, after a crash) picks the attempt up: no new baseline...
    again, scored_now = batch.start_attempt(
        setup["conn"],
        setup["competition"],
        AttemptConfig(iterations=6),
        store=setup["store"],
        policy=HeuristicPolicy(),
        profile=setup["profile"],
        resume_attempt_id=attempt.id,
    )
    assert again.id == attempt.id and not scored_now
    assert _rows(setup["conn"], attempt.id) == before
    # ...and its next round continues the index sequence.
    assert [c.idx for c in _propose(setup, attempt.id, 2).candidates] == [3, 4]


def test_a_recipe_that_no_longer_validates_is_skipped_by_rounds_as_by_the_sequential_loop(
    setup: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from haste_dagster.skills.model import Evidence, Skill

    stale = setup["store"].add(Skill(
        tier="domain", scope_key=setup["competition"].definition.domain, kind="recipe",
        pattern="recipe:regression:xgboost", title="Recipe written before max_depth was renamed",
        guidance="When anywhere: start from this model. Evidence: helped elsewhere.",
        action={"ops": [{"op": "set_model", "family": "xgboost",
                         "params": {"max_dept": 3}}]},
        evidence=[Evidence(slug="elsewhere", delta=0.5), Evidence(slug="elsewhere_2", delta=0.4)],
        created_by="promotion",
    ))
    with caplog.at_level(logging.WARNING):
        attempt = _start(setup, budget=2)
        plan = _propose(setup, attempt.id, 2)
    assert stale.id in {s["id"] for s in attempt.skills_loaded}
    warned = [r.getMessage() for r in caplog.records if stale.id in r.getMessage()]
    assert warned and "no longer validates" in warned[0] and "max_dept" in warned[0]
    baseline = records.load_iterations(setup["conn"], attempt.id)[0]
    assert stale.id not in baseline.skill_ids
    assert plan.candidates and all(stale.id not in c.skill_ids for c in plan.candidates)


class _InertFirst(HeuristicPolicy):
    """Proposes a change that alters no fold matrix (the skew step is off) before every
    heuristic proposal, until the history shows it was skipped as inert."""

    def propose(self, ctx):
        from haste_dagster.agents.attempts import INERT
        from haste_dagster.agents.policy import Proposal
        from haste_dagster.solution.spec import Patch

        if not any(r.error == INERT for r in ctx.history):
            patch = Patch.model_validate(
                {"ops": [{"op": "set", "path": "numeric.skew_threshold", "value": 3.5}]})
            return Proposal(patch=patch, rationale="an inert change", skill_ids=[])
        return super().propose(ctx)


def test_rounds_skip_an_inert_proposal_as_the_sequential_loop_does(
    setup: dict[str, Any],
) -> None:
    setup["policy"] = _InertFirst()
    sequential = run_attempt(setup["conn"], setup["competition"],
                             AttemptConfig(iterations=3, seed=1), policy=_InertFirst())
    rounds = _run_rounds(setup, rounds=3, k=1, seed=1)
    assert _rows(setup["conn"], rounds.attempt_id) == _rows(setup["conn"], sequential.attempt_id)
    loaded = records.load_iterations(setup["conn"], rounds.attempt_id)
    skipped = [r.detail["inert"] for r in loaded if r.detail and "inert" in r.detail]
    assert len(skipped) == 1 and skipped[0][0]["rationale"] == "an inert change"
    assert all("skew_threshold" not in json.dumps(r.patch) for r in loaded)  # never evaluated

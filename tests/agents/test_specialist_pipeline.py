"""The specialist's staged pipeline: prototype screen, two branches, escalation, ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_competitions import write_tiny_regression

from haste_dagster import db
from haste_dagster.agents import records
from haste_dagster.agents.attempts import AttemptConfig, should_keep
from haste_dagster.agents.competition_agent import run_attempt
from haste_dagster.agents.heuristic import HeuristicPolicy
from haste_dagster.agents.pipeline import needs_escalation, split_budget
from haste_dagster.agents.policy import PolicyContext, Proposal, SkillView, is_structural
from haste_dagster.agents.prototypes import Prototype, prototype_kind, signature
from haste_dagster.agents.submission import submission_members
from haste_dagster.competitions.metrics import get_metric
from haste_dagster.competitions.registry import load_competition
from haste_dagster.solution import synthetic
from haste_dagster.solution.ensemble import combine, cross_validate_ensemble
from haste_dagster.solution.evaluate import cross_validate
from haste_dagster.solution.space import check_spec_for_problem, default_spec
from haste_dagster.solution.spec import SolutionSpec, parse_patch

CASES = {
    "tabular_classification": lambda: synthetic.make_binary(n=160, seed=1),
    "tabular_regression": lambda: synthetic.make_regression(n=160, seed=1),
    "text": lambda: synthetic.make_text(n=200, seed=1),
    "forecast": lambda: synthetic.make_forecast(seed=1),
}


def _profile(case: synthetic.SyntheticCase) -> dict:
    p = case.problem
    return {
        "task": p.task,
        "rows": len(case.train),
        "has_text": bool(p.text),
        "is_forecast": p.task == "forecast",
        "missing_rate": 0.0,
    }


@pytest.mark.parametrize("kind", list(CASES))
def test_screen_yields_three_runnable_prototypes_of_distinct_families_or_pipelines(
    kind: str,
) -> None:
    case = CASES[kind]()
    profile = _profile(case)
    assert prototype_kind(profile, case.problem) == kind
    prototypes = HeuristicPolicy().prototypes(case.problem, profile, [])
    assert len(prototypes) == 3
    assert len({signature(p.spec, case.problem) for p in prototypes}) == 3
    assert len({p.spec.key() for p in prototypes}) == 3
    for proto in prototypes:
        check_spec_for_problem(proto.spec, case.problem)
        assert proto.source == "default" and proto.skill_ids == []
        # every prototype actually runs on the screen's single fold
        cv = cross_validate(proto.spec, case.problem, case.train, 0, only_fold=-1)
        assert len(cv.fold_scores) == 1 and np.isfinite(cv.mean)


def _recipe(sid: str, ops: list[dict], utility: float = 0.0, kind: str = "recipe") -> SkillView:
    return SkillView(
        id=sid, tier="domain", title=f"recipe {sid}", guidance="", action={"ops": ops},
        utility=utility, kind=kind,
    )


def test_recipe_skills_are_screened_first_and_invalid_ones_are_skipped_not_run() -> None:
    case = CASES["tabular_regression"]()
    skills = [
        _recipe("good", [{"op": "set_model", "family": "extra_trees", "params": {}}], 0.2),
        _recipe("unknown_family", [{"op": "set_model", "family": "no_such_model"}], 0.9),
        _recipe("changes_folds", [{"op": "set", "path": "validation.n_folds", "value": 5}], 0.8),
        _recipe("classifier_only", [{"op": "set_model", "family": "logistic_regression"}], 0.7),
        # a single change is not a whole recipe: no prototype
        _recipe("change", [{"op": "set_model", "family": "hist_gradient_boosting"}], 1.0,
                kind="change"),
    ]
    prototypes = HeuristicPolicy().prototypes(case.problem, _profile(case), skills)
    assert [p.name for p in prototypes][0] == "skill:good"
    assert prototypes[0].skill_ids == ["good"] and prototypes[0].source == "skill"
    assert prototypes[0].family == "extra_trees"
    assert all(p.source == "default" for p in prototypes[1:])
    assert len({signature(p.spec, case.problem) for p in prototypes}) == 3


def test_budget_split_spends_at_most_the_straight_lines_evaluations() -> None:
    for budget in range(3, 61):
        split = split_budget(budget)
        assert split.screen + split.winner + split.runner_up + split.ensemble == budget + 1
        assert split.winner >= 1
        if budget >= 12:  # the runner-up gets about a third of the winner's budget
            assert 0.2 <= split.runner_up / split.winner <= 0.5
            assert split.ensemble == 1
    paper = split_budget(29)  # 30 evaluations: 3 screen, 20 winner, 6 runner-up, 1 ensemble
    assert (paper.winner, paper.runner_up) == (20, 6)


def _row(idx: int, patch: dict | None, kept: bool) -> records.IterationRow:
    return records.IterationRow(
        attempt_id=1, idx=idx, patch=patch, rationale="", skill_ids=[], cv_mean=1.0,
        cv_std=0.0, fold_scores=[1.0], kept=kept, incumbent_before=1.0, seconds=0.0,
        branch="winner",
    )


NUDGE = {"ops": [{"op": "set", "path": "model.params.max_depth", "value": 4}]}
SWITCH = {"ops": [{"op": "set_model", "family": "random_forest", "params": {}}]}


def test_escalation_is_due_after_two_consecutive_stalls_without_a_structural_change() -> None:
    base = _row(0, None, True)
    assert not needs_escalation([base, _row(1, NUDGE, False)])
    assert needs_escalation([base, _row(1, NUDGE, False), _row(2, NUDGE, False)])
    assert not needs_escalation([base, _row(1, NUDGE, False), _row(2, NUDGE, True)])
    assert not needs_escalation([base, _row(1, SWITCH, False), _row(2, NUDGE, False)])
    assert needs_escalation(
        [base, _row(1, SWITCH, False), _row(2, NUDGE, False), _row(3, NUDGE, False)]
    )


def test_escalated_heuristic_proposals_are_structural_where_plain_ones_nudge_parameters() -> None:
    case = CASES["tabular_regression"]()
    policy = HeuristicPolicy()
    spec = default_spec(case.problem)
    plain, escalated = [], []
    for seed in range(12):
        for escalate, out in ((False, plain), (True, escalated)):
            ctx = PolicyContext(
                problem=case.problem, profile=_profile(case), incumbent=spec,
                incumbent_score=1.0, history=[], skills=[], iteration=3, budget=10, seed=seed,
                higher_is_better=False, initial=spec, escalate=escalate,
            )
            proposal = policy.propose(ctx)
            assert proposal is not None and proposal.patch is not None
            out.append(is_structural(proposal.patch))
    assert all(escalated)
    assert not all(plain)  # without escalation the search also nudges parameters


# ---- ensembles ---------------------------------------------------------------------------


def test_combine_rank_averages_order_metrics_and_votes_labels() -> None:
    auc = get_metric("roc_auc")
    a, b = np.array([0.1, 0.2, 0.9]), np.array([0.5, 0.9, 0.6])
    assert np.allclose(combine([a, b], auc), [(1 + 1) / 6, (2 + 3) / 6, (3 + 2) / 6])
    acc = get_metric("accuracy")
    labels = [np.array(["x", "y", "x"]), np.array(["y", "y", "z"]), np.array(["y", "x", "w"])]
    assert list(combine(labels, acc)) == ["y", "y", "x"]  # no majority: the first member's
    rmse = get_metric("rmse")
    assert np.allclose(combine([np.array([1.0, 3.0]), np.array([3.0, 5.0])], rmse), [2.0, 4.0])


def _spec(problem, family: str, **params) -> SolutionSpec:
    data = default_spec(problem).model_dump(mode="json")
    data["model"] = {"family": family, "params": params}
    if family in ("ridge", "logistic_regression"):
        data["numeric"] = {**data["numeric"], "scale": "standard"}
    return SolutionSpec.model_validate(data)


def test_ensemble_of_a_good_member_and_poor_ones_is_rejected_by_the_keep_rule() -> None:
    case = synthetic.make_regression(n=300, seed=2)
    good = _spec(case.problem, "xgboost")
    poor = [_spec(case.problem, "ridge", alpha=1e4), _spec(case.problem, "xgboost",
            n_estimators=20, learning_rate=0.005, max_depth=1)]
    best = cross_validate(good, case.problem, case.train, 0)
    ens = cross_validate_ensemble([good, *poor], case.problem, case.train, 0)
    assert ens.mean > best.mean  # rmse: worse
    assert not should_keep(ens.fold_scores, best.fold_scores, best.mean, False)


def test_ensemble_of_high_variance_members_is_kept_by_the_keep_rule() -> None:
    # three overfit boosters (deep trees, a high learning rate, heavy row and column
    # subsampling): their errors differ, so averaging them cuts the variance
    case = synthetic.make_regression(n=300, seed=2)
    members = [
        _spec(case.problem, "xgboost", max_depth=d, learning_rate=lr, n_estimators=n,
              subsample=sub, colsample_bytree=col)
        for d, lr, n, sub, col in ((8, 0.3, 60, 0.5, 0.5), (6, 0.25, 80, 0.6, 0.4),
                                   (7, 0.35, 50, 0.5, 0.6))
    ]
    singles = [cross_validate(m, case.problem, case.train, 0) for m in members]
    best = min(singles, key=lambda cv: cv.mean)
    ens = cross_validate_ensemble(members, case.problem, case.train, 0)
    assert ens.mean < best.mean
    assert should_keep(ens.fold_scores, best.fold_scores, best.mean, False)


def test_submission_fits_the_ensemble_only_when_it_was_kept() -> None:
    problem = synthetic.make_regression(n=40).problem
    a, b = _spec(problem, "xgboost"), _spec(problem, "ridge")
    members = [{"spec": a.model_dump(mode="json")}, {"spec": b.model_dump(mode="json")}]

    def attempt(kept: bool) -> records.AttemptRow:
        return records.AttemptRow(
            id=1, slug="x", policy="heuristic", loading="none", seed=0, budget_iterations=8,
            status="finished", initial_spec=None, best_spec=a.model_dump(mode="json"),
            best_cv=1.0, pipeline="staged",
            result={"ensemble": {"kept": kept, "members": members}},
        )

    assert submission_members(attempt(True)) == [a, b]
    assert submission_members(attempt(False)) == [a]


# ---- whole staged attempts on the tiny competition ---------------------------------------

SLUG = "tiny_staged"


@pytest.fixture
def staged_defs(tmp_path: Path) -> Path:
    folder = tmp_path / "defs"
    write_tiny_regression(folder, SLUG, seed=7, rows=200, iterations=10)
    return folder


def _rows(conn, attempt_id: int) -> list[dict]:
    return conn.execute(
        """SELECT idx, branch, patch, spec, detail, cv_mean, fold_scores, kept, skill_ids, error
           FROM iterations WHERE attempt_id = %s ORDER BY idx""",
        (attempt_id,),
    ).fetchall()


def test_staged_attempt_records_every_stage_within_the_straight_lines_budget(
    db_url: str, staged_defs: Path
) -> None:
    competition = load_competition(SLUG, staged_defs)
    with db.connection(db_url) as conn:
        result = run_attempt(conn, competition, AttemptConfig(pipeline="staged", iterations=10))
        rows = _rows(conn, result.attempt_id)
        attempt = records.get_attempt(conn, result.attempt_id)
    assert attempt.pipeline == "staged" and attempt.plan is not None
    assert [r["idx"] for r in rows] == list(range(len(rows))) and len(rows) <= 11
    branches = [r["branch"] for r in rows]
    assert branches[:3] == ["screen"] * 3
    order = ["screen", "winner", "runner_up", "ensemble"]
    assert branches == sorted(branches, key=order.index)  # stages in order, never interleaved
    screen = rows[:3]
    assert all(len(r["fold_scores"]) == 1 and r["spec"] is not None for r in screen)
    stages = result.as_json()
    assert [p["fold_score"] for p in stages["prototypes"]["screened"]] == [
        r["cv_mean"] for r in screen
    ]
    assert len({p["family"] for p in stages["prototypes"]["screened"]}) == 3
    assert stages["prototypes"]["spread"] >= 1.0
    assert [it["branch"] for it in stages["iterations"]] == branches
    assert {"winner", "runner_up"} <= set(stages["branches"])
    # winner rows ≈ 3x runner-up rows, both full cross-validations (3 folds)
    assert all(len(r["fold_scores"]) == 3 for r in rows[3:] if r["fold_scores"])
    # escalation: a row due for it (two stalls before it in its branch) is structural
    for name in ("winner", "runner_up"):
        branch = [r for r in rows if r["branch"] == name]
        typed = [
            records.IterationRow(
                attempt_id=1, idx=r["idx"], patch=r["patch"], rationale="", skill_ids=[],
                cv_mean=r["cv_mean"], cv_std=None, fold_scores=r["fold_scores"], kept=r["kept"],
                incumbent_before=None, seconds=0.0,
            )
            for r in branch
        ]
        for j in range(1, len(typed)):
            if needs_escalation(typed[:j]):
                assert (branch[j]["detail"] or {}).get("escalated") is True
                assert is_structural(parse_patch(branch[j]["patch"]))
    ensemble = stages["ensemble"]
    if ensemble is not None:
        ens_row = rows[-1]
        assert ens_row["branch"] == "ensemble" and ens_row["kept"] == ensemble["kept"]
        assert 2 <= len(ensemble["members"]) <= 3
        assert stages["submission"] == ("ensemble" if ensemble["kept"] else "single")


class RunnerUpFavouring(HeuristicPolicy):
    """Screens a linear model (it cannot fit the x2² term), heavily underfit trees and a
    near-constant model; refines the runner-up (the underfit trees) into a good model and
    only nudges the winner's ridge penalty. The runner-up branch must then win."""

    def prototypes(self, problem, profile, skills):
        linear = _spec(problem, "ridge", alpha=1.0)
        weak = _spec(problem, "xgboost", n_estimators=20, learning_rate=0.01, max_depth=2)
        flat = _spec(problem, "linear_svm", C=1e-4)  # regularised to a near-constant
        return [Prototype("linear", linear), Prototype("weak_trees", weak), Prototype("flat", flat)]

    def propose(self, ctx: PolicyContext) -> Proposal | None:
        if ctx.initial is not None and ctx.initial.model.family == "xgboost":
            if any(r.patch for r in ctx.history):
                return None
            return Proposal(
                patch=parse_patch({"ops": [
                    {"op": "set", "path": "model.params.n_estimators", "value": 400},
                    {"op": "set", "path": "model.params.learning_rate", "value": 0.05},
                    {"op": "set", "path": "model.params.max_depth", "value": 4},
                ]}),
                rationale="undo the underfit", skill_ids=[],
            )
        alpha = 0.5 + 0.1 * len(ctx.history)
        return Proposal(
            patch=parse_patch({"ops": [
                {"op": "set", "path": "model.params.alpha", "value": alpha}
            ]}),
            rationale="ridge penalty", skill_ids=[],
        )


def test_runner_up_branch_is_recorded_and_wins_when_its_incumbent_is_better(
    db_url: str, staged_defs: Path
) -> None:
    competition = load_competition(SLUG, staged_defs)
    with db.connection(db_url) as conn:
        result = run_attempt(
            conn, competition, AttemptConfig(pipeline="staged", iterations=10, loading="none"),
            policy=RunnerUpFavouring(),
        )
        rows = _rows(conn, result.attempt_id)
    stages = result.as_json()
    assert stages["prototypes"]["winner"] == "linear"
    assert stages["prototypes"]["runner_up"] == "weak_trees"
    runner = [r for r in rows if r["branch"] == "runner_up"]
    assert runner and runner[0]["spec"]["model"]["family"] == "xgboost"
    assert any(r["kept"] and r["patch"] for r in runner)
    assert stages["best_branch"] == "runner_up" and stages["runner_up_won"] is True
    assert result.best_spec["model"]["family"] == "xgboost"
    assert result.best_spec["model"]["params"]["n_estimators"] == 400
    winner_best = stages["branches"]["winner"]["best_cv"]
    assert stages["branches"]["runner_up"]["best_cv"] < winner_best  # rmse: lower is better
    assert json.dumps(stages, default=str)  # serialisable for --json

"""Compile + cross-validate + fit-predict on tiny synthetic problems of every task."""

from __future__ import annotations

import time

import numpy as np
import pytest

from haste_dagster.competitions.metrics import get_metric
from haste_dagster.errors import BudgetExceeded, SpecError
from haste_dagster.solution import synthetic
from haste_dagster.solution.compile import build_pipeline, detect_device
from haste_dagster.solution.evaluate import cross_validate, fit_predict, make_folds
from haste_dagster.solution.space import default_spec
from haste_dagster.solution.spec import Patch, SolutionSpec, apply_patch

CASES = {
    "binary": lambda: synthetic.make_binary(n=300),
    "multiclass": lambda: synthetic.make_multiclass(n=300),
    "regression": lambda: synthetic.make_regression(n=300),
    "text": lambda: synthetic.make_text(n=300),
    "forecast": lambda: synthetic.make_forecast(n=200, horizon=14),
    "panel": lambda: synthetic.make_forecast(n=120, horizon=7, groups=3),
}
# A cheap model per case keeps the suite fast on 2 shared cores.
SMALL_XGB = {
    "op": "set_model",
    "family": "xgboost",
    "params": {"n_estimators": 60, "learning_rate": 0.15, "max_depth": 4},
}


def _spec(case: synthetic.SyntheticCase) -> SolutionSpec:
    spec = default_spec(case.problem)
    if spec.model.family == "xgboost":
        spec = apply_patch(spec, Patch.model_validate({"ops": [SMALL_XGB]}))
    return spec


def _chance_level(case: synthetic.SyntheticCase) -> float:
    """A score a model that learned nothing would get (the worse side of the metric)."""
    metric = get_metric(case.problem.metric)
    if metric.name == "roc_auc":
        return 0.5
    if metric.name == "f1_macro":
        return 1 / len(case.problem.classes or [1])
    train_y = case.train[case.problem.target].to_numpy(dtype=float)
    return float(metric(case.test_target, np.full(len(case.test_target), train_y.mean())))


@pytest.mark.parametrize("name", list(CASES))
def test_default_spec_learns_something_on_every_task(name: str) -> None:
    case = CASES[name]()
    spec, metric = _spec(case), get_metric(case.problem.metric)
    cv = cross_validate(spec, case.problem, case.train, seed=0)
    assert len(cv.fold_scores) == spec.validation.n_folds == 3
    assert cv.mean == pytest.approx(np.mean(cv.fold_scores))
    assert cv.seconds > 0

    pred = fit_predict(spec, case.problem, case.train, case.test_features, seed=0)
    n = len(case.test_features)
    if (
        case.problem.classes is not None
        and len(case.problem.classes) > 2
        and metric.prediction == "proba"
    ):
        assert pred.shape == (n, len(case.problem.classes))
    else:
        assert pred.shape == (n,)
    test_score = metric(case.test_target, pred, case.problem.classes)
    chance = _chance_level(case)
    # held-out and CV scores both beat a model that learned nothing
    assert metric.better(test_score, chance) and metric.better(cv.mean, chance)


def test_binary_proba_is_the_probability_of_the_second_class() -> None:
    case = CASES["binary"]()
    spec = _spec(case)
    p_yes = fit_predict(spec, case.problem, case.train, case.test_features, seed=0)
    flipped = case.problem.model_copy(update={"classes": ["yes", "no"]})
    p_no = fit_predict(spec, flipped, case.train, case.test_features, seed=0)
    assert np.all((p_yes >= 0) & (p_yes <= 1))
    assert p_yes == pytest.approx(1 - p_no, abs=1e-6)
    assert np.mean(p_yes[case.test_target == "yes"]) > np.mean(p_yes[case.test_target == "no"])


def test_multiclass_proba_columns_follow_problem_classes_order() -> None:
    case = synthetic.make_multiclass(n=300, metric="log_loss")
    spec = _spec(case)
    proba = fit_predict(spec, case.problem, case.train, case.test_features, seed=0)
    assert proba.sum(axis=1) == pytest.approx(np.ones(len(proba)))
    classes = case.problem.classes or []
    for k, label in enumerate(classes):  # each column is highest on its own class's rows
        mine = proba[case.test_target == label, k].mean()
        others = proba[case.test_target != label, k].mean()
        assert mine > others


def test_label_metrics_get_labels_from_the_problem_classes() -> None:
    case = synthetic.make_binary(n=200, metric="accuracy")
    pred = fit_predict(_spec(case), case.problem, case.train, case.test_features, seed=0)
    assert set(pred) <= {"no", "yes"}


def test_a_class_missing_from_a_fold_still_gets_a_probability_column() -> None:
    case = synthetic.make_multiclass(n=300, metric="roc_auc")
    train = case.train[case.train["label"] != "mid"]  # "mid" never seen in training
    proba = fit_predict(_spec(case), case.problem, train, case.test_features, seed=0)
    assert proba.shape[1] == 3 and np.all(proba[:, 2] == 0)


def test_same_seed_gives_the_same_scores_and_predictions() -> None:
    case = synthetic.make_binary(n=240)
    spec = apply_patch(
        _spec(case),
        Patch.model_validate(
            {"ops": [{"op": "set", "path": "categorical.encoding", "value": "target"}]}
        ),
    )
    a = cross_validate(spec, case.problem, case.train, seed=4)
    b = cross_validate(spec, case.problem, case.train, seed=4)
    assert a.fold_scores == b.fold_scores
    c = cross_validate(spec, case.problem, case.train, seed=5)
    assert c.fold_scores != a.fold_scores  # the seed moves the folds
    p1 = fit_predict(spec, case.problem, case.train, case.test_features, seed=4)
    p2 = fit_predict(spec, case.problem, case.train, case.test_features, seed=4)
    assert np.array_equal(p1, p2)


def test_folds_depend_on_the_seed_not_on_the_model() -> None:
    case = synthetic.make_regression(n=120)
    xgb, ridge = _spec(case), SolutionSpec.model_validate({"model": {"family": "ridge"}})
    for a, b in zip(
        make_folds(xgb, case.problem, case.train, 1),
        make_folds(ridge, case.problem, case.train, 1),
        strict=True,
    ):
        assert np.array_equal(a[1], b[1])


@pytest.mark.parametrize(
    "family",
    ["logistic_regression", "linear_svm", "random_forest", "extra_trees", "hist_gradient_boosting"],
)
def test_every_classification_family_compiles_and_scores(family: str) -> None:
    case = synthetic.make_binary(n=160)
    small = {"n_estimators": 30} if family in ("random_forest", "extra_trees") else {}
    spec = apply_patch(
        default_spec(case.problem),
        Patch.model_validate({"ops": [{"op": "set_model", "family": family, "params": small}]}),
    )
    cv = cross_validate(spec, case.problem, case.train, seed=0)
    assert 0.5 < cv.mean <= 1.0


@pytest.mark.parametrize("family", ["ridge", "linear_svm", "hist_gradient_boosting"])
def test_regression_families_with_log_target_and_feature_options(family: str) -> None:
    case = synthetic.make_regression(n=160)
    train = case.train.assign(y=case.train["y"] - case.train["y"].min())  # >= 0 for log1p
    spec = apply_patch(
        default_spec(case.problem),
        Patch.model_validate(
            {
                "ops": [
                    {"op": "set_model", "family": family},
                    {"op": "set", "path": "target_transform", "value": "log1p"},
                    {
                        "op": "set",
                        "path": "numeric",
                        "value": {
                            "scale": "robust",
                            "log1p_skewed": True,
                            "missing_indicator": True,
                            "impute": "mean",
                        },
                    },
                    {
                        "op": "set",
                        "path": "categorical",
                        "value": {"encoding": "ordinal", "impute": "most_frequent"},
                    },
                ]
            }
        ),
    )
    pred = fit_predict(spec, case.problem, train, case.test_features, seed=0)
    assert pred.shape == (len(case.test_features),) and np.all(np.isfinite(pred))


def test_char_ngrams_and_xgboost_work_on_text() -> None:
    case = synthetic.make_text(n=200)
    spec = apply_patch(
        default_spec(case.problem),
        Patch.model_validate(
            {
                "ops": [
                    {"op": "set", "path": "text.analyzer", "value": "char_wb"},
                    {"op": "set", "path": "text.max_features", "value": 2000},
                ]
            }
        ),
    )
    assert cross_validate(spec, case.problem, case.train, seed=0).mean > 0.6
    boosted = apply_patch(spec, Patch.model_validate({"ops": [SMALL_XGB]}))
    assert cross_validate(boosted, case.problem, case.train, seed=0).mean > 0.6


def test_fitting_failures_become_spec_errors_with_the_reason() -> None:
    case = synthetic.make_text(n=60)
    spec = apply_patch(
        default_spec(case.problem),
        Patch.model_validate({"ops": [{"op": "set", "path": "text.min_df", "value": 20}]}),
    )
    with pytest.raises(SpecError, match="fitting logistic_regression failed: .*no terms remain"):
        cross_validate(spec, case.problem, case.train.head(30), seed=0)
    regression = synthetic.make_regression(n=80)
    logged = SolutionSpec.model_validate({"target_transform": "log1p"})
    with pytest.raises(SpecError, match="target_transform: 'log1p' needs targets > -1"):
        cross_validate(
            logged,
            regression.problem,
            regression.train.assign(y=regression.train["y"] - 1000),
            seed=0,
        )


def test_a_spec_that_does_not_fit_the_task_is_a_spec_error_before_fitting() -> None:
    case = synthetic.make_regression(n=80)
    spec = SolutionSpec.model_validate({"model": {"family": "logistic_regression"}})
    with pytest.raises(SpecError, match="cannot solve a regression"):
        cross_validate(spec, case.problem, case.train, seed=0)


def test_xgboost_runs_on_cpu_unless_told_otherwise() -> None:
    case = synthetic.make_binary(n=60)
    model = build_pipeline(_spec(case), case.problem).estimator.named_steps["model"]
    assert model.get_params()["device"] == "cpu"
    gpu = build_pipeline(_spec(case), case.problem, device="cuda").estimator.named_steps["model"]
    assert gpu.get_params()["device"] == "cuda"
    assert detect_device() in ("cpu", "cuda")


def test_an_evaluation_past_its_deadline_stops_with_budget_exceeded() -> None:
    case = synthetic.make_regression(n=300)
    spec = apply_patch(default_spec(case.problem), Patch.model_validate({"ops": [SMALL_XGB]}))
    with pytest.raises(BudgetExceeded, match="before fold 1"):
        cross_validate(spec, case.problem, case.train, deadline=time.monotonic() - 1)
    # Inside a fit: XGBoost stops between boosting rounds, so one slow candidate cannot
    # overrun the attempt's budget by the length of a whole fit.
    model = build_pipeline(spec, case.problem, deadline=time.monotonic() - 1)
    X = case.train.drop(columns=[case.problem.target])
    with pytest.raises(BudgetExceeded, match="boosting round 1"):
        model.fit(X, case.train[case.problem.target])
    # No deadline, or one in the future: the same evaluation completes.
    assert np.isfinite(
        cross_validate(spec, case.problem, case.train, deadline=time.monotonic() + 600).mean
    )

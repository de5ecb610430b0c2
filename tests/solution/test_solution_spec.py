"""SolutionSpec JSON round-trips, and patches are validated against the search space."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import SpecError
from haste_dagster.solution import synthetic
from haste_dagster.solution.space import (
    FAMILIES,
    STEPS,
    check_spec_for_problem,
    default_spec,
    describe_space,
    effective_lag,
    random_spec,
)
from haste_dagster.solution.spec import (
    ModelSpec,
    NumericStep,
    Patch,
    SolutionSpec,
    apply_patch,
    parse_patch,
)


def _problems() -> list[Problem]:
    return [
        synthetic.make_binary(n=40).problem,
        synthetic.make_multiclass(n=40).problem,
        synthetic.make_regression(n=40, metric="rmsle").problem,
        synthetic.make_text(n=40).problem,
        synthetic.make_forecast(n=60, horizon=7).problem,
        synthetic.make_forecast(n=60, horizon=7, groups=2).problem,
    ]


def _patch(*ops: dict) -> Patch:
    return Patch.model_validate({"ops": list(ops)})


def test_spec_json_round_trips_through_text() -> None:
    for problem in _problems():
        for spec in [default_spec(problem), random_spec(problem, np.random.default_rng(3))]:
            text = json.dumps(spec.model_dump(mode="json"))
            again = SolutionSpec.model_validate(json.loads(text))
            assert again == spec
            assert again.key() == spec.key()


def test_default_and_random_specs_fit_their_problems() -> None:
    for problem in _problems():
        check_spec_for_problem(default_spec(problem), problem)
        rng = np.random.default_rng(0)
        families = {random_spec(problem, rng).model.family for _ in range(30)}
        assert len(families) >= 3  # the sampler explores families, not one
        for _ in range(10):
            check_spec_for_problem(random_spec(problem, rng), problem)


def test_domain_defaults_follow_the_competition_lessons() -> None:
    text = default_spec(synthetic.make_text(n=40).problem)
    assert text.model.family == "logistic_regression"
    tabular = default_spec(synthetic.make_binary(n=40).problem)
    assert tabular.model.family == "xgboost" and tabular.validation.kind == "stratified"
    forecast_problem = synthetic.make_forecast(n=60, horizon=7).problem
    forecast = default_spec(forecast_problem)
    assert forecast.validation.kind == "timeseries"
    assert forecast.forecast.lags and forecast.forecast.calendar
    assert (
        default_spec(synthetic.make_regression(n=40, metric="rmsle").problem).target_transform
        == "log1p"
    )


def test_spec_stores_complete_model_params() -> None:
    spec = SolutionSpec.model_validate({"model": {"family": "ridge", "params": {"alpha": 3}}})
    assert spec.model.params == {"alpha": 3.0}
    xgb = SolutionSpec.model_validate({"model": {"family": "xgboost"}})
    assert set(xgb.model.params) == set(FAMILIES["xgboost"].params)


def test_set_param_and_list_ops_apply() -> None:
    spec = default_spec(synthetic.make_forecast(n=60, horizon=7).problem)
    patched = apply_patch(
        spec,
        _patch(
            {"op": "set", "path": "model.params.max_depth", "value": 4.0},
            {"op": "add", "path": "forecast.lags", "value": [365, 7]},
            {"op": "remove", "path": "forecast.rolling", "value": 7},
            {"op": "set", "path": "text", "value": {"ngram_max": 3}},
        ),
    )
    assert patched.model.params["max_depth"] == 4 and isinstance(
        patched.model.params["max_depth"], int
    )
    assert patched.forecast.lags == sorted({*spec.forecast.lags, 365, 7})
    assert patched.forecast.rolling == []
    assert patched.text.ngram_max == 3 and patched.text.min_df == spec.text.min_df
    assert spec.model.params["max_depth"] == 6  # the original is untouched


def test_set_model_merges_params_onto_family_defaults() -> None:
    spec = apply_patch(
        SolutionSpec(),
        _patch({"op": "set_model", "family": "random_forest", "params": {"max_depth": None}}),
    )
    assert spec.model.family == "random_forest"
    assert spec.model.params["max_depth"] is None
    assert (
        spec.model.params["n_estimators"]
        == FAMILIES["random_forest"].params["n_estimators"].default
    )
    back = apply_patch(spec, _patch({"op": "set", "path": "model.family", "value": "xgboost"}))
    assert back.model == SolutionSpec().model
    unset = apply_patch(
        back,
        _patch(
            {"op": "set", "path": "model.params.max_depth", "value": 3},
            {"op": "unset", "path": "model.params.max_depth"},
        ),
    )
    assert unset.model.params["max_depth"] == 6


@pytest.mark.parametrize(
    ("op", "named"),
    [
        (
            {"op": "set", "path": "model.params.no_such_param", "value": 3},
            ["model.params.no_such_param", "max_depth"],
        ),
        ({"op": "set_model", "family": "deep_forest"}, ["model.family", "deep_forest", "xgboost"]),
        (
            {"op": "set", "path": "embedding.size", "value": 3},
            ["embedding.size", "numeric", "forecast"],
        ),
        ({"op": "set", "path": "text.ngrams", "value": 3}, ["text.ngrams", "ngram_max"]),
        (
            {"op": "set", "path": "model.params.max_depth", "value": 40},
            ["model.params.max_depth", "40", "[1, 12]"],
        ),
        (
            {"op": "set", "path": "model.params.learning_rate", "value": "fast"},
            ["model.params.learning_rate", "fast", "0.005"],
        ),
        (
            {"op": "set", "path": "model.params.max_depth", "value": 2.5},
            ["model.params.max_depth", "2.5", "integer"],
        ),
        ({"op": "set", "path": "text.ngram_max", "value": 4}, ["text.ngram_max", "4", "[1, 3]"]),
        (
            {"op": "set", "path": "text.sublinear_tf", "value": 1},
            ["text.sublinear_tf", "true or false"],
        ),
        (
            {"op": "set", "path": "categorical.encoding", "value": "hashing"},
            ["categorical.encoding", "hashing", "'target'"],
        ),
        ({"op": "add", "path": "forecast.lags", "value": 0}, ["forecast.lags", "0", "[1, 100000]"]),
        (
            {"op": "set", "path": "date.parts", "value": ["century"]},
            ["date.parts", "century", "'dayofweek'"],
        ),
        (
            {"op": "set", "path": "target_transform", "value": "sqrt"},
            ["target_transform", "sqrt", "'log1p'"],
        ),
        (
            {"op": "add", "path": "model.params.max_depth", "value": 1},
            ["model.params.max_depth", "list"],
        ),
        ({"op": "remove", "path": "forecast.lags", "value": 99}, ["forecast.lags", "99"]),
        (
            {"op": "set", "path": "model.params.subsample", "value": float("nan")},
            ["model.params.subsample", "nan"],
        ),
    ],
)
def test_patch_rejects_bad_ops_naming_the_path_and_what_is_allowed(
    op: dict, named: list[str]
) -> None:
    with pytest.raises(SpecError) as info:
        apply_patch(default_spec(synthetic.make_forecast(n=60, horizon=7).problem), _patch(op))
    for text in named:
        assert text in str(info.value)


def test_param_check_follows_the_current_family_within_a_patch() -> None:
    # max_depth exists for xgboost but not for ridge: validity depends on earlier ops
    with pytest.raises(SpecError, match="model.params.max_depth: unknown parameter for ridge"):
        apply_patch(
            SolutionSpec(),
            _patch(
                {"op": "set_model", "family": "ridge"},
                {"op": "set", "path": "model.params.max_depth", "value": 3},
            ),
        )


def test_malformed_patch_json_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="ops"):
        parse_patch('{"ops": [{"op": "rename", "path": "x"}]}')
    with pytest.raises(SpecError, match="not valid JSON"):
        parse_patch("{ops: [")
    with pytest.raises(SpecError):
        parse_patch({"ops": []})
    single = parse_patch({"op": "set", "path": "numeric.scale", "value": "robust"})
    assert apply_patch(SolutionSpec(), single).numeric.scale == "robust"


def test_patch_round_trips_as_json() -> None:
    patch = _patch(
        {"op": "set_model", "family": "ridge", "params": {"alpha": 0.5}},
        {"op": "add", "path": "forecast.lags", "value": 14},
    )
    again = Patch.model_validate(json.loads(json.dumps(patch.model_dump(mode="json"))))
    assert again == patch
    assert "model=ridge" in patch.describe() and "forecast.lags+=14" in patch.describe()


def test_unknown_spec_fields_are_rejected_on_load() -> None:
    with pytest.raises(SpecError, match="numeric.impute_mode: unknown field"):
        SolutionSpec.model_validate({"numeric": {"impute_mode": "mean"}})
    with pytest.raises(SpecError, match="features: unknown step"):
        SolutionSpec.model_validate({"features": {}})


def test_problem_checks_reject_families_and_validation_that_do_not_fit() -> None:
    regression = synthetic.make_regression(n=40).problem
    with pytest.raises(SpecError, match="logistic_regression.*cannot solve a regression"):
        check_spec_for_problem(
            SolutionSpec.model_validate({"model": {"family": "logistic_regression"}}), regression
        )
    text = synthetic.make_text(n=40).problem
    with pytest.raises(SpecError, match="needs dense input"):
        check_spec_for_problem(
            SolutionSpec.model_validate(
                {
                    "model": {"family": "hist_gradient_boosting"},
                    "validation": {"kind": "stratified"},
                }
            ),
            text,
        )
    with pytest.raises(SpecError, match="model.params.l1_ratio: > 0 needs the saga solver"):
        check_spec_for_problem(
            SolutionSpec.model_validate(
                {
                    "model": {"family": "logistic_regression", "params": {"l1_ratio": 0.5}},
                    "validation": {"kind": "stratified"},
                }
            ),
            text,
        )
    forecast = synthetic.make_forecast(n=60, horizon=7).problem
    with pytest.raises(SpecError, match="validation.kind: 'kfold' on a forecast"):
        check_spec_for_problem(SolutionSpec(), forecast)


def test_effective_lags_reach_back_at_least_one_horizon_and_keep_their_phase() -> None:
    for horizon in (1, 7, 12, 365, 2688):
        for lag in (1, 2, 7, 12, 24, 48, 336, 365, 1000):
            eff = effective_lag(lag, horizon)
            assert eff >= horizon and eff % lag == 0 and eff - lag < horizon


def test_space_description_is_json_limited_to_what_the_problem_uses() -> None:
    described = json.loads(json.dumps(describe_space(synthetic.make_text(n=40).problem)))
    assert set(described["steps"]) == {"numeric", "text"}
    assert "validation" not in described["steps"]  # fixed per attempt: not for proposals
    assert "hist_gradient_boosting" not in described["models"]  # dense-only: not for text
    c = described["models"]["logistic_regression"]["params"]["C"]
    assert c.startswith("number in [") and "; log scale" in c  # one line per parameter
    everything = describe_space()
    assert set(everything["steps"]) == set(STEPS) - {"validation"}
    assert set(everything["models"]) == set(FAMILIES)


def test_setting_the_whole_model_object_is_a_model_switch() -> None:
    spec = apply_patch(
        SolutionSpec(),
        _patch(
            {"op": "set", "path": "model", "value": {"family": "ridge", "params": {"alpha": 2}}}
        ),
    )
    assert spec.model.family == "ridge" and spec.model.params == {"alpha": 2.0}
    with pytest.raises(SpecError, match='model: expected {"family"'):
        apply_patch(SolutionSpec(), _patch({"op": "set", "path": "model", "value": "ridge"}))


def test_specs_are_frozen_and_accept_step_objects() -> None:
    spec = SolutionSpec(numeric=NumericStep(scale="robust"), model=ModelSpec(family="ridge"))
    assert spec.numeric.scale == "robust" and spec.model.params == {"alpha": 1.0}
    with pytest.raises(ValidationError):
        spec.numeric.scale = "none"  # type: ignore[misc]


def test_random_specs_do_not_depend_on_the_string_hash_seed() -> None:
    """Leaderboard entrants are drawn with random_spec: a rebuild must draw the same ones."""
    script = (
        "import numpy as np\n"
        "from haste_dagster.solution.space import random_spec\n"
        "from haste_dagster.solution import synthetic\n"
        "problem = synthetic.make_text(n=40).problem\n"
        "rng = np.random.default_rng(7)\n"
        "print([random_spec(problem, rng).model_dump_json() for _ in range(5)])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1

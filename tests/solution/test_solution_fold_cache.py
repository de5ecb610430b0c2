"""The fold-feature cache: same scores as fresh fits, bounded bytes, keys that see features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from haste_dagster.solution import synthetic
from haste_dagster.solution.evaluate import cross_validate, same_model_input
from haste_dagster.solution.fold_cache import (
    CachedFeatures,
    FoldCache,
    FoldCacheConfigError,
    FoldFeatures,
    budget_from_env,
)
from haste_dagster.solution.space import default_spec
from haste_dagster.solution.spec import Patch, SolutionSpec, apply_patch

XGB = {"n_estimators": 30, "learning_rate": 0.2, "max_depth": 3}


def _patched(spec: SolutionSpec, *ops: dict) -> SolutionSpec:
    return apply_patch(spec, Patch.model_validate({"ops": list(ops)}))


def _xgb(spec: SolutionSpec, **params: object) -> SolutionSpec:
    return _patched(spec, {"op": "set_model", "family": "xgboost", "params": {**XGB, **params}})


def _cases() -> dict[str, tuple[synthetic.SyntheticCase, SolutionSpec]]:
    binary = synthetic.make_binary(n=240)
    regression = synthetic.make_regression(n=240)
    target = regression.problem.target  # log1p needs targets > -1
    regression.train[target] -= regression.train[target].min() - 1.0
    text = synthetic.make_text(n=240)
    panel = synthetic.make_forecast(n=90, horizon=7, groups=3)
    return {
        # target encoding reads the (encoded) labels and cross-fits on seeded folds
        "binary_target_encoding": (
            binary,
            _xgb(
                _patched(
                    default_spec(binary.problem),
                    {"op": "set", "path": "categorical.encoding", "value": "target"},
                )
            ),
        ),
        # the target transform changes what target encoding sees
        "regression_log1p_target_encoding": (
            regression,
            _xgb(
                _patched(
                    default_spec(regression.problem),
                    {"op": "set", "path": "categorical.encoding", "value": "target"},
                    {"op": "set", "path": "target_transform", "value": "log1p"},
                )
            ),
        ),
        "text_tfidf": (text, default_spec(text.problem)),
        # lag features are computed from the fold's training targets
        "panel_forecast_lags": (
            panel,
            _xgb(
                _patched(
                    default_spec(panel.problem),
                    {"op": "set", "path": "forecast.lags", "value": [7, 14]},
                    {"op": "set", "path": "forecast.rolling", "value": [7]},
                )
            ),
        ),
    }


CASES = _cases()


def _model_variant(spec: SolutionSpec) -> SolutionSpec:
    """The same feature pipeline with other model parameters."""
    if spec.model.family == "xgboost":
        return _xgb(spec, max_depth=2, learning_rate=0.3)
    params = dict(spec.model.params)
    key = "C" if "C" in params else "alpha"
    params[key] = float(params[key]) * 3
    return _patched(spec, {"op": "set_model", "family": spec.model.family, "params": params})


@pytest.mark.parametrize("name", list(CASES))
def test_cached_fold_matrices_give_the_scores_of_fresh_fits(name: str) -> None:
    case, spec = CASES[name]
    variant = _model_variant(spec)
    cache = FoldCache(max_bytes=64 * 2**20)
    first = cross_validate(spec, case.problem, case.train, seed=3, fold_cache=cache)
    assert cache.hits == 0 and cache.misses == 3 and len(cache) == 3
    fresh = cross_validate(variant, case.problem, case.train, seed=3)
    cached = cross_validate(variant, case.problem, case.train, seed=3, fold_cache=cache)
    assert cache.hits == 3, "a model-only change must reuse every fold's features"
    assert cached.fold_scores == fresh.fold_scores  # bit-identical, not approximately
    again = cross_validate(spec, case.problem, case.train, seed=3, fold_cache=cache)
    assert again.fold_scores == first.fold_scores
    assert first.fold_scores == cross_validate(spec, case.problem, case.train, seed=3).fold_scores


@pytest.mark.parametrize(
    "op",
    [
        {"op": "set", "path": "numeric.scale", "value": "robust"},
        {"op": "set", "path": "categorical.encoding", "value": "ordinal"},
        {"op": "set", "path": "target_transform", "value": "none"},
    ],
)
def test_a_spec_change_touching_features_misses_the_cache(op: dict) -> None:
    case, spec = CASES["regression_log1p_target_encoding"]
    cache = FoldCache(max_bytes=64 * 2**20)
    cross_validate(spec, case.problem, case.train, seed=0, fold_cache=cache)
    changed = _patched(spec, op)
    cached = cross_validate(changed, case.problem, case.train, seed=0, fold_cache=cache)
    assert cache.hits == 0 and cache.misses == 6
    assert cached.fold_scores == cross_validate(changed, case.problem, case.train, 0).fold_scores


def test_other_data_seed_or_lags_miss_the_cache() -> None:
    case, spec = CASES["panel_forecast_lags"]
    cache = FoldCache(max_bytes=64 * 2**20)
    cross_validate(spec, case.problem, case.train, seed=0, fold_cache=cache)
    cross_validate(spec, case.problem, case.train, seed=1, fold_cache=cache)
    cross_validate(
        _patched(spec, {"op": "set", "path": "forecast.lags", "value": [14]}),
        case.problem,
        case.train,
        seed=0,
        fold_cache=cache,
    )
    # same inputs, one target value changed: lags (and so the matrices) differ
    train = case.train.copy()
    train.loc[train.index[5], case.problem.target] = train[case.problem.target].iloc[5] + 1.0
    cross_validate(spec, case.problem, train, seed=0, fold_cache=cache)
    assert cache.hits == 0 and cache.misses == 12


def _entry(rows: int, cols: int = 10) -> FoldFeatures:
    return FoldFeatures(np.zeros((rows, cols)), np.zeros((rows // 4, cols)))


def test_the_cache_evicts_least_recently_used_entries_to_stay_within_its_byte_budget() -> None:
    one = _entry(100).nbytes  # 100x10 + 25x10 float64 = 10,000 bytes
    cache = FoldCache(max_bytes=3 * one)
    for name in "abc":
        cache.put(name, _entry(100))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", _entry(100))
    assert cache.bytes <= cache.max_bytes and cache.bytes == 3 * one
    assert cache.get("b") is None and cache.get("a") is not None
    assert cache.evictions == 1
    cache.put("huge", _entry(1000))  # larger than the whole budget: not kept
    assert cache.get("huge") is None and cache.too_large == 1 and cache.bytes == 3 * one
    assert cache.peak_bytes <= cache.max_bytes


def test_cross_validation_under_a_small_budget_keeps_bytes_within_it() -> None:
    case, spec = CASES["text_tfidf"]
    probe = FoldCache(max_bytes=2**30)
    cross_validate(spec, case.problem, case.train, seed=0, fold_cache=probe)
    budget = probe.bytes // 2  # room for one or two of the three folds
    cache = FoldCache(max_bytes=budget)
    for _ in range(2):
        cv = cross_validate(spec, case.problem, case.train, seed=0, fold_cache=cache)
        assert cache.peak_bytes <= budget
    assert cache.evictions > 0
    assert cv.fold_scores == cross_validate(spec, case.problem, case.train, seed=0).fold_scores


def test_the_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASTE_FOLD_CACHE_MB", "1.5")
    assert budget_from_env() == int(1.5 * 2**20)
    monkeypatch.setenv("HASTE_FOLD_CACHE_MB", "lots")
    with pytest.raises(FoldCacheConfigError, match="HASTE_FOLD_CACHE_MB.*'lots'"):
        FoldCache()


def test_a_model_that_writes_into_its_input_cannot_alter_the_cached_matrices() -> None:
    from sklearn.preprocessing import StandardScaler

    X = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    cache = FoldCache(max_bytes=2**20)
    step = CachedFeatures(StandardScaler(), cache, "fold-1")
    train = step.fit_transform(X.iloc[:3])
    valid = step.transform(X.iloc[3:])
    expected = (train.copy(), valid.copy())
    train[:] = 99.0  # what an in-place model would do
    valid[:] = 99.0
    again = CachedFeatures(StandardScaler(), cache, "fold-1")
    assert np.array_equal(again.fit_transform(X.iloc[:3]), expected[0])
    assert np.array_equal(again.transform(X.iloc[3:]), expected[1])
    assert cache.hits == 1


FEATURE_CHANGES = [
    {"op": "set", "path": "numeric.missing_indicator", "value": True},
    {"op": "set", "path": "numeric.skew_threshold", "value": 2.0},
    {"op": "set", "path": "numeric.scale", "value": "none"},
    {"op": "set", "path": "text.min_df", "value": 3},
]


@pytest.mark.parametrize("name", list(CASES))
def test_a_change_is_called_inert_exactly_when_it_scores_the_incumbent_to_the_last_bit(
    name: str,
) -> None:
    case, spec = CASES[name]
    cache = FoldCache()
    answers = []
    for op in FEATURE_CHANGES:
        candidate = _patched(spec, op)
        inert = same_model_input(candidate, spec, case.problem, case.train, 0, cache)
        fresh = [cross_validate(s, case.problem, case.train, 0).fold_scores
                 for s in (candidate, spec)]
        assert inert == (fresh[0] == fresh[1]), op
        answers.append(inert)
    assert any(answers)  # a skew threshold while the skew step is off changes nothing


def test_a_missing_indicator_matters_where_values_are_missing_and_nowhere_else() -> None:
    binary, spec = CASES["binary_target_encoding"]  # has missing numeric values
    text, text_spec = CASES["text_tfidf"]  # has none
    indicator = {"op": "set", "path": "numeric.missing_indicator", "value": True}
    assert binary.train.isna().any().any() and not text.train.isna().any().any()
    cache = FoldCache()
    assert not same_model_input(_patched(spec, indicator), spec, binary.problem, binary.train,
                                0, cache)
    assert same_model_input(_patched(text_spec, indicator), text_spec, text.problem, text.train,
                            0, cache)


def test_inertness_is_unknown_without_a_cache_and_never_claimed_across_models() -> None:
    case, spec = CASES["text_tfidf"]
    skew = _patched(spec, {"op": "set", "path": "numeric.skew_threshold", "value": 2.0})
    assert not same_model_input(skew, spec, case.problem, case.train, 0, None)
    assert same_model_input(spec, spec, case.problem, case.train, 0, None)  # the same spec
    other_model = _model_variant(skew)
    assert not same_model_input(other_model, spec, case.problem, case.train, 0, FoldCache())

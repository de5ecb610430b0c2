"""Forecasting: lag features never read values inside the horizon; folds mimic the hidden test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from haste_dagster.competitions.problem import Problem
from haste_dagster.solution import synthetic
from haste_dagster.solution.compile import TARGET_COL, forecast_target_features
from haste_dagster.solution.evaluate import cross_validate, fit_predict, make_folds
from haste_dagster.solution.space import default_spec
from haste_dagster.solution.spec import Patch, SolutionSpec, apply_patch

H = 5
LAGS, ROLLING = [1, 2, 7], [3, 10]


def _panel(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = [
        pd.DataFrame(
            {
                "t": pd.date_range("2021-01-01", periods=rows, freq="D"),
                "g": name,
                TARGET_COL: rng.normal(size=rows),
            }
        )
        for name in ("a", "b")
    ]
    # shuffled rows: features must follow time order, not row order
    return pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=1)


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    return forecast_target_features(
        frame, time_column="t", group_column="g", horizon=H, lags=LAGS, rolling=ROLLING
    )


def test_no_feature_reads_a_target_inside_the_horizon() -> None:
    frame = _panel()
    base = _features(frame)
    a_rows = frame[frame["g"] == "a"].sort_values("t")
    for position in (H + 12, 30, 59):
        row = a_rows.index[position]
        inside = a_rows.index[position - H + 1 : position + 1]  # the row itself and H-1 before
        perturbed = frame.copy()
        perturbed.loc[inside, TARGET_COL] += 1000.0
        after = _features(perturbed)
        pd.testing.assert_series_equal(after.loc[row], base.loc[row])
        # ... while the newest value outside the horizon does move it: the test has power
        edge = frame.copy()
        edge.loc[a_rows.index[position - H], TARGET_COL] += 1000.0
        assert not np.allclose(_features(edge).loc[row], base.loc[row], equal_nan=True)


def test_features_stay_within_their_own_series() -> None:
    frame = _panel()
    base = _features(frame)
    other = frame.copy()
    other.loc[other["g"] == "b", TARGET_COL] += 1000.0
    a = frame["g"] == "a"
    pd.testing.assert_frame_equal(_features(other)[a], base[a])


def test_every_feature_is_at_least_one_horizon_old() -> None:
    frame = _panel()
    feats = _features(frame)
    a = frame[frame["g"] == "a"].sort_values("t")
    y = a[TARGET_COL].to_numpy()
    lag_cols = [c for c in feats.columns if c.startswith("lag_")]
    assert lag_cols and all(int(c.split("_")[1]) >= H for c in lag_cols)
    for col in lag_cols:
        lag = int(col.split("_")[1])
        np.testing.assert_allclose(feats.loc[a.index, col].to_numpy()[lag:], y[:-lag])
    roll = feats.loc[a.index, "rollmean_3"].to_numpy()
    assert roll[H + 3] == pytest.approx(y[1:4].mean())  # rows t-H-2 .. t-H


def _block_series(horizon: int = 10, blocks: int = 12) -> tuple[Problem, pd.DataFrame]:
    """A level that jumps to a fresh random value every ``horizon`` rows, aligned so that
    every validation block is one level: nothing at least ``horizon`` rows old predicts it,
    while yesterday's value would predict it almost perfectly."""
    rng = np.random.default_rng(3)
    levels = rng.normal(scale=10.0, size=blocks)
    y = np.repeat(levels, horizon)
    frame = pd.DataFrame(
        {
            "row_id": np.arange(len(y)),
            "date": pd.date_range("2022-01-01", periods=len(y), freq="D"),
            "y": y,
        }
    )
    problem = Problem(
        slug="blocks",
        task="forecast",
        metric="mae",
        target="y",
        time_column="date",
        horizon=horizon,
    )
    return problem, frame


def test_cross_validation_cannot_see_validation_targets_through_lags() -> None:
    problem, frame = _block_series()
    spec = SolutionSpec.model_validate(
        {
            "model": {"family": "ridge", "params": {"alpha": 0.01}},
            "forecast": {"lags": [1, 2, 3], "rolling": [2], "calendar": [], "trend": False},
            "validation": {"kind": "timeseries", "n_folds": 5},
        }
    )
    honest = cross_validate(spec, problem, frame, seed=0)
    # Prove the setup would expose leakage: a feature holding yesterday's target (what a
    # lag-1 computed over validation rows would hold) misses only each block's first day.
    leaky_problem = problem.model_copy(update={"numeric": ["yesterday"]})
    leaky_frame = frame.assign(yesterday=frame["y"].shift(1))
    no_lags = apply_patch(
        spec,
        Patch.model_validate(
            {"ops": [{"op": "set", "path": "forecast", "value": {"lags": [], "rolling": []}}]}
        ),
    )
    leaky = cross_validate(no_lags, leaky_problem, leaky_frame, seed=0)
    assert honest.mean > 3 * leaky.mean and honest.mean > 5.0


def test_test_rows_take_their_lags_from_the_training_history() -> None:
    # y repeats with period = horizon: lag "1" (used as lag H) is an exact predictor that
    # is only available to the hidden rows through the stored training history
    horizon, periods = 12, 14
    rng = np.random.default_rng(5)
    pattern = rng.normal(scale=5.0, size=horizon)
    y = np.tile(pattern, periods) + 0.01 * rng.normal(size=horizon * periods)
    frame = pd.DataFrame(
        {
            "row_id": np.arange(len(y)),
            "date": pd.date_range("2010-01-01", periods=len(y), freq="MS"),
            "y": y,
        }
    )
    problem = Problem(
        slug="seasonal",
        task="forecast",
        metric="rmse",
        target="y",
        time_column="date",
        horizon=horizon,
    )
    train, test = frame.iloc[:-horizon], frame.iloc[-horizon:]
    spec = SolutionSpec.model_validate(
        {
            "model": {"family": "ridge", "params": {"alpha": 0.001}},
            "forecast": {"lags": [1], "calendar": [], "trend": False},
            "validation": {"kind": "timeseries"},
        }
    )
    pred = fit_predict(spec, problem, train, test.drop(columns=["y"]), seed=0)
    assert np.sqrt(np.mean((pred - test["y"].to_numpy()) ** 2)) < 0.1
    no_lags = apply_patch(
        spec,
        Patch.model_validate(
            {
                "ops": [
                    {"op": "set", "path": "forecast.lags", "value": []},
                    {"op": "set", "path": "forecast.trend", "value": True},
                ]
            }
        ),
    )
    blind = fit_predict(no_lags, problem, train, test.drop(columns=["y"]), seed=0)
    assert np.sqrt(np.mean((blind - test["y"].to_numpy()) ** 2)) > 1.0


def test_time_folds_validate_the_next_horizon_of_every_series() -> None:
    case = synthetic.make_forecast(n=90, horizon=7, groups=3)
    spec = default_spec(case.problem)
    train = case.train.sample(frac=1.0, random_state=2)  # row order must not matter
    folds = make_folds(spec, case.problem, train, seed=0)
    assert len(folds) == 3
    previous_end = None
    for fit_idx, valid_idx in folds:
        valid, fit = train.iloc[valid_idx], train.iloc[fit_idx]
        assert valid.groupby("store").size().tolist() == [7, 7, 7]
        for store, rows in valid.groupby("store"):
            assert rows["date"].min() > fit.loc[fit["store"] == store, "date"].max()
        if previous_end is not None:
            assert valid["date"].min() > previous_end  # oldest fold first
        previous_end = valid["date"].max()


def test_panel_forecast_predicts_the_last_horizon_of_each_series() -> None:
    case = synthetic.make_forecast(n=120, horizon=7, groups=3)
    spec = apply_patch(
        default_spec(case.problem),
        Patch.model_validate(
            {
                "ops": [
                    {
                        "op": "set_model",
                        "family": "xgboost",
                        "params": {"n_estimators": 80, "max_depth": 3},
                    },
                ]
            }
        ),
    )
    pred = fit_predict(spec, case.problem, case.train, case.test_features, seed=0)
    errors = pred - case.test_target
    # the groups' levels differ by 30: knowing the series is most of the job
    assert np.sqrt(np.mean(errors**2)) < 8.0
    spread = case.test_target.std()
    assert spread > 10.0

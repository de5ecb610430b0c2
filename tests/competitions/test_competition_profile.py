"""Column roles and the data profile of tiny hand-made competitions, checked by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from haste_dagster.competitions.profile import profile_data
from haste_dagster.competitions.registry import load_competition


def _mixed_frame() -> pd.DataFrame:
    """20 rows: 12 'a' and 8 'b'; `amount` is missing on every 'b' row."""
    label = ["a"] * 12 + ["b"] * 8
    return pd.DataFrame(
        {
            "amount": [float(i) if lab == "a" else None for i, lab in enumerate(label)],
            "colour": [["red", "green", "blue"][i % 3] for i in range(20)],
            "note": [f"customer number {i} wrote a long and friendly note" for i in range(20)],
            "day": [f"2021-03-{i + 1:02d}" for i in range(20)],
            "y": label,
        }
    )


def test_profile_of_a_mixed_classification_competition(write_def, tmp_path: Path) -> None:
    write_def(
        "mixed", _mixed_frame(), drop=[], split={"test_fraction": 0.25, "seed": 0, "stratify": True}
    )
    competition = load_competition("mixed", tmp_path)
    problem = competition.problem
    assert (problem.numeric, problem.categorical, problem.text, problem.date) == (
        ["amount"],
        ["colour"],
        ["note"],
        ["day"],
    )
    assert problem.classes == ["a", "b"]
    assert str(competition.train["day"].dtype) == "datetime64[ns]"

    profile = profile_data(competition).as_dict()
    # Stratified 25 % test: round(3) of 12 'a' and round(2) of 8 'b' → train 9 'a' + 6 'b'.
    # Missing: `amount` on the 6 'b' rows out of 15 rows x 4 features = 6 / 60.
    expected = {
        "rows": 15,
        "n_features": 4,
        "n_numeric": 1,
        "n_categorical": 1,
        "n_text": 1,
        "n_date": 1,
        "missing_rate": 0.1,
        "max_cardinality": 3,
        "n_classes": 2,
        "minority_class_share": 0.4,
        "target_skew": None,
        "has_text": True,
        "has_date": True,
        "is_forecast": False,
        "horizon": None,
        "rows_per_feature": 3.75,
    }
    assert {key: profile[key] for key in expected} == expected


def test_profile_of_a_forecast_measures_target_skew_on_training_steps_only(
    write_def, tmp_path: Path
) -> None:
    # Training target: seven 1s and one 10 (the last two steps are hidden). Sample skewness
    # (adjusted Fisher-Pearson): mean 2.125, m2 = 8.859375, m3 = 59.80078125,
    # g1 = m3 / m2**1.5 = 2.2678, G1 = g1 * sqrt(8 * 7) / 6 = 2.828427 (= 2 * sqrt(2)).
    frame = pd.DataFrame(
        {
            "t": [f"2022-01-{d:02d}" for d in range(1, 11)],
            "y": [1, 1, 1, 1, 1, 1, 1, 10, 500, 500],
        }
    )
    write_def(
        "skewed",
        frame,
        domain="time_series",
        task="forecast",
        metric="mae",
        drop=[],
        medals=None,
        split={"time_column": "t", "horizon": 2},
    )
    profile = profile_data(load_competition("skewed", tmp_path))
    assert profile.rows == 8
    assert profile.target_skew == pytest.approx(2.828427, abs=1e-6)
    assert (profile.is_forecast, profile.horizon, profile.has_date) == (True, 2, True)
    assert profile.n_classes is None and profile.minority_class_share is None


def test_listed_roles_override_inference(write_def, tmp_path: Path) -> None:
    frame = _mixed_frame().assign(code=[i % 4 for i in range(20)])
    write_def(
        "overrides",
        frame,
        drop=[],
        categorical=["code"],
        text_columns=["colour"],
        split={"test_fraction": 0.25, "seed": 0, "stratify": True},
    )
    problem = load_competition("overrides", tmp_path).problem
    assert "code" in problem.categorical and "code" not in problem.numeric
    assert "colour" in problem.text and "colour" not in problem.categorical

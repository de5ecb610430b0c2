"""The 16 bundled competitions load offline as specified, and the CLI lists them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from haste_dagster.competitions.definition import load_definitions
from haste_dagster.competitions.registry import load_competition
from haste_dagster.config import competition_defs_dir

# slug: (domain, task, target, metric, rows in training + hidden test), from COMPETITIONS.md.
BUNDLED = {
    "telco_churn": ("tabular_classification", "binary", "churn", "roc_auc", 7043),
    "credit_scoring": ("tabular_classification", "binary", "Status", "roc_auc", 4454),
    "phone_churn": ("tabular_classification", "binary", "churn", "roc_auc", 5000),
    "hpc_jobs": ("tabular_classification", "multiclass", "class", "f1_macro", 4331),
    "image_segments": ("tabular_classification", "multiclass", "target", "accuracy", 2310),
    "ames_housing": ("tabular_regression", "regression", "Sale_Price", "rmsle", 2930),
    "diamonds": ("tabular_regression", "regression", "price", "rmsle", 53940),
    "delivery_time": ("tabular_regression", "regression", "time_to_delivery", "mae", 10012),
    "concrete_strength": ("tabular_regression", "regression", "compressive_strength", "rmse", 1030),
    "food_reviews": ("text", "text_classification", "score", "roc_auc", 5000),
    "tweet_source": ("text", "text_classification", "source", "f1_macro", 20761),
    "bird_strike_phase": ("text", "text_classification", "phase_of_flt", "f1_macro", 14823),
    "elec_demand": ("time_series", "forecast", "Demand", "rmse", 17520),
    "us_births": ("time_series", "forecast", "births", "mape", 7305),
    "bank_calls": ("time_series", "forecast", "Calls", "mae", 27716),
    "tx_housing_sales": ("time_series", "forecast", "sales", "rmsle", 8034),
}


def test_all_bundled_definitions_load_with_frozen_splits() -> None:
    definitions, errors = load_definitions(competition_defs_dir())
    assert errors == []
    assert {d.slug for d in definitions} == set(BUNDLED)
    for d in definitions:
        domain, task, target, metric, rows = BUNDLED[d.slug]
        assert (d.domain, d.task, d.target, d.metric) == (domain, task, target, metric), d.slug
        assert d.split.answers_sha256 is not None, f"{d.slug}: run scripts/freeze_splits.py"
        assert (d.budget.iterations, d.budget.seconds) == (20, 300)
        assert load_competition(d.slug).n_rows == rows, d.slug


@pytest.mark.parametrize(
    ("slug", "classes"),
    [
        ("tweet_source", ["android", "iphone", "other", "web"]),
        ("hpc_jobs", ["F", "L", "M", "VF"]),
        (
            "bird_strike_phase",
            ["Approach", "Climb", "Descent", "En Route", "Landing Roll", "Take-off run"],
        ),
    ],
)
def test_prepared_classes_are_the_documented_ones(slug: str, classes: list[str]) -> None:
    assert load_competition(slug).problem.classes == classes


def test_text_and_forecast_competitions_expose_their_roles() -> None:
    assert load_competition("food_reviews").problem.text == ["review"]
    births = load_competition("us_births")
    assert (births.problem.time_column, births.problem.horizon) == ("date", 365)
    assert births.test_features["date"].min() == births.train["date"].max() + __import__(
        "pandas"
    ).Timedelta(days=1)
    housing = load_competition("tx_housing_sales")
    assert housing.problem.group_column == "city"
    assert len(housing.test_features) == 46 * 12  # every city's last 12 months
    assert "volume" not in housing.train.columns  # it gives the target away


def test_cli_lists_bundled_competitions_as_json() -> None:
    from haste_dagster.cli import app

    result = CliRunner().invoke(app, ["competitions", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) >= 12
    assert len({row["domain"] for row in rows}) >= 3
    by_slug = {row["slug"]: row for row in rows}
    assert by_slug["diamonds"]["rows"] == 53940
    assert {"slug", "title", "domain", "task", "metric", "rows"} <= set(by_slug["diamonds"])


def test_cli_list_reports_a_broken_definition_on_stderr(write_def, tmp_path) -> None:
    from haste_dagster.cli import app

    write_def("fine")
    write_def("broken", metric="auc_roc")
    result = CliRunner().invoke(app, ["competitions", "list", "--json", "--defs", str(tmp_path)])
    assert result.exit_code == 0
    assert [row["slug"] for row in json.loads(result.stdout)] == ["fine"]
    assert "broken.yaml [field metric]" in result.stderr


def test_cli_show_prints_the_profile(write_def, tmp_path) -> None:
    from haste_dagster.cli import app

    write_def("shown")
    result = CliRunner().invoke(
        app, ["competitions", "show", "shown", "--json", "--defs", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    detail = json.loads(result.stdout)
    assert detail["profile"]["rows"] == 30
    assert detail["thresholds"]["gold"] == 0.95

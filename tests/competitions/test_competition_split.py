"""Hidden split: reproducible, disjoint, stratified; forecasts hide the final steps; the
answers checksum detects changed data."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from haste_dagster.competitions.registry import clear_cache, freeze_split, load_competition
from haste_dagster.errors import CompetitionDefError

ROOT = Path(__file__).resolve().parents[2]


def _test_ids(slug: str, folder: Path) -> list[int]:
    return load_competition(slug, folder).test_features["row_id"].tolist()


def test_same_seed_gives_the_same_split_and_another_seed_a_different_one(write_def, tmp_path):
    write_def("seeded")
    first = _test_ids("seeded", tmp_path)
    clear_cache()
    assert _test_ids("seeded", tmp_path) == first

    write_def("reseeded", split={"test_fraction": 0.25, "seed": 4, "stratify": True})
    assert _test_ids("reseeded", tmp_path) != first


def test_train_and_test_are_disjoint_cover_all_rows_and_hide_the_target(write_def, tmp_path):
    write_def("disjoint")
    competition = load_competition("disjoint", tmp_path)
    train_ids = set(competition.train["row_id"])
    test_ids = set(competition.test_features["row_id"])
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(range(40))
    assert "y" not in competition.test_features.columns
    assert "id" not in competition.train.columns  # dropped in the definition
    assert list(competition.test_features.columns) == ["row_id", "x", "colour"]


def test_stratified_split_keeps_class_shares(write_def, tmp_path: Path) -> None:
    write_def("strata")  # 24 'a' and 16 'b', test_fraction 0.25
    competition = load_competition("strata", tmp_path)
    test_labels = competition._answers.value_counts().to_dict()
    assert test_labels == {"a": 6, "b": 4}


def test_row_ids_follow_source_rows_even_when_target_rows_are_dropped(write_def, tmp_path):
    frame = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "y": [1.0, None, 3.0, 4.0, 5.0, 6.0]}
    )
    write_def(
        "gappy",
        frame,
        task="regression",
        metric="rmse",
        drop=[],
        medals=None,
        split={"test_fraction": 0.5, "seed": 0},
    )
    competition = load_competition("gappy", tmp_path)
    ids = sorted([*competition.train["row_id"], *competition.test_features["row_id"]])
    assert ids == [0, 2, 3, 4, 5]  # row 1 had no target; the others keep their position


def _panel() -> pd.DataFrame:
    months = pd.date_range("2020-01-01", periods=10, freq="MS")
    north = pd.DataFrame({"region": "north", "month": months, "y": range(10)})
    # The south series stops two months earlier: its own last 3 months are hidden.
    south = pd.DataFrame({"region": "south", "month": months[:8], "y": range(100, 108)})
    frame = pd.concat([north, south], ignore_index=True)
    frame["month"] = frame["month"].dt.strftime("%Y-%m-%d")
    return frame


def test_forecast_hides_the_last_horizon_steps_of_every_group(write_def, tmp_path: Path) -> None:
    write_def(
        "panel",
        _panel(),
        domain="time_series",
        task="forecast",
        metric="mae",
        drop=[],
        medals=None,
        split={"time_column": "month", "group_column": "region", "horizon": 3},
    )
    competition = load_competition("panel", tmp_path)
    test = competition.test_features
    hidden = test.groupby("region")["month"].agg(["min", "max", "count"])
    assert hidden.loc["north"].tolist() == [
        pd.Timestamp("2020-08-01"),
        pd.Timestamp("2020-10-01"),
        3,
    ]
    assert hidden.loc["south"].tolist() == [
        pd.Timestamp("2020-06-01"),
        pd.Timestamp("2020-08-01"),
        3,
    ]
    train = competition.train
    for region in ("north", "south"):
        assert train.loc[train.region == region, "month"].max() < hidden.loc[region, "min"]
    assert train["month"].is_monotonic_increasing  # forecasts come in time order
    assert competition.problem.time_column == "month"
    assert competition.problem.group_column == "region"
    assert competition.problem.horizon == 3


def test_forecast_horizon_longer_than_a_series_is_an_error(write_def, tmp_path: Path) -> None:
    write_def(
        "short",
        _panel(),
        domain="time_series",
        task="forecast",
        metric="mae",
        drop=[],
        medals=None,
        split={"time_column": "month", "group_column": "region", "horizon": 8},
    )
    with pytest.raises(CompetitionDefError) as caught:
        load_competition("short", tmp_path)
    assert caught.value.field == "split"
    assert "south" in caught.value.message


def test_checksum_detects_changed_hidden_answers(write_def, tmp_path: Path) -> None:
    path = write_def("frozen")
    sha, changed = freeze_split(path)
    assert changed
    assert yaml.safe_load(path.read_text())["split"]["answers_sha256"] == sha
    competition = load_competition("frozen", tmp_path)  # verifies and passes
    assert competition.answers_sha256 == sha

    hidden_row = int(competition.test_features["row_id"].iloc[0])
    csv = tmp_path / "frozen.csv"
    frame = pd.read_csv(csv)
    frame.loc[hidden_row, "y"] = "b" if frame.loc[hidden_row, "y"] == "a" else "a"
    frame.to_csv(csv, index=False)
    stat = csv.stat()
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    with pytest.raises(CompetitionDefError) as caught:
        load_competition("frozen", tmp_path)
    assert caught.value.field == "split.answers_sha256"
    assert "frozen.yaml" in str(caught.value)
    assert "freeze_splits.py" in caught.value.message


def test_freeze_script_writes_checksums_and_keeps_comments(write_def, tmp_path: Path) -> None:
    path = write_def("scripted")
    path.write_text("# a comment worth keeping\n" + path.read_text())
    script = runpy.run_path(str(ROOT / "scripts" / "freeze_splits.py"))

    assert script["main"](["--defs", str(tmp_path)]) == 0
    text = path.read_text()
    assert text.startswith("# a comment worth keeping\n")
    assert (
        yaml.safe_load(text)["split"]["answers_sha256"]
        == load_competition("scripted", tmp_path).answers_sha256
    )
    assert script["main"](["--defs", str(tmp_path), "--check"]) == 0

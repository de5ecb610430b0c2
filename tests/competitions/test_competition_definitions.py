"""A broken definition is reported with its file and field; the others still load."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from haste_dagster.competitions.definition import load_definitions
from haste_dagster.competitions.registry import load_competition
from haste_dagster.errors import CompetitionDefError


def _set_field(dotted: str, value: object) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        data = yaml.safe_load(path.read_text())
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return mutate


def _forecast_without_time_column(path: Path) -> None:
    _set_field("task", "forecast")(path)
    _set_field("metric", "rmse")(path)
    _set_field("split", {"horizon": 3})(path)


def _malformed_yaml(path: Path) -> None:
    path.write_text("slug: broken\ntitle: [unclosed\n  target: y\n")


def _delete_csv(path: Path) -> None:
    path.with_suffix(".csv").unlink()


def _header_only_csv(path: Path) -> None:
    path.with_suffix(".csv").write_text("id,x,colour,y\n")


# (what is wrong, how to break the file, the field the error must name)
BROKEN = [
    ("malformed yaml", _malformed_yaml, None),
    ("wrong type", _set_field("budget.iterations", "many"), "budget.iterations"),
    ("list given a string", _set_field("drop", 5), "drop"),
    ("unknown field", _set_field("targte", "y"), "targte"),
    ("unknown source scheme", _set_field("source", "ftp:data.csv"), "source"),
    ("missing csv file", _delete_csv, "source"),
    ("target not in data", _set_field("target", "label"), "target"),
    ("unknown metric", _set_field("metric", "auc_roc"), "metric"),
    ("empty dataset", _header_only_csv, "source"),
    ("slug differs from file name", _set_field("slug", "other"), "slug"),
    ("unknown preparation", _set_field("prepare", "no_such_step"), "prepare"),
    ("regression metric on classes", _set_field("metric", "rmse"), "metric"),
    ("forecast without time column", _forecast_without_time_column, "split.time_column"),
    ("dropped column not in data", _set_field("drop", ["id", "nope"]), "drop"),
]


@pytest.mark.parametrize(("case", "breaker", "field"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_definition_names_file_and_field_while_others_load(
    case: str, breaker: Callable[[Path], None], field: str | None, write_def, tmp_path: Path
) -> None:
    write_def("good_one")
    broken = write_def("bad_one")
    breaker(broken)

    loaded, errors = load_definitions(tmp_path)

    assert [d.slug for d in loaded] == ["good_one"]
    assert len(errors) == 1, [str(e) for e in errors]
    error = errors[0]
    assert error.path.endswith("bad_one.yaml")
    assert error.field == field
    assert "bad_one.yaml" in str(error)
    if field is not None:
        assert field in str(error)
    else:
        assert "malformed YAML" in str(error)


def test_loading_a_broken_competition_by_slug_raises_the_same_error(write_def, tmp_path) -> None:
    path = write_def("bad_target")
    _set_field("target", "label")(path)
    with pytest.raises(CompetitionDefError) as caught:
        load_competition("bad_target", tmp_path)
    assert caught.value.field == "target"
    assert "'label' is not in the data" in caught.value.message


def test_unknown_slug_lists_the_known_ones(write_def, tmp_path: Path) -> None:
    write_def("known")
    with pytest.raises(CompetitionDefError, match="known: known"):
        load_competition("unknown", tmp_path)


def test_edited_data_file_is_read_again_not_served_from_cache(write_def, tmp_path) -> None:
    path = write_def("editable", split={"test_fraction": 0.25, "seed": 3, "stratify": True})
    first = load_competition("editable", tmp_path)
    assert load_competition("editable", tmp_path) is first  # cached while nothing changed

    frame = pd.read_csv(tmp_path / "editable.csv")
    frame["x"] = frame["x"] * 2
    frame.to_csv(tmp_path / "editable.csv", index=False)
    csv = path.with_suffix(".csv")
    stat = csv.stat()
    # Make the mtime change visible even on filesystems with coarse timestamps.
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    second = load_competition("editable", tmp_path)
    assert second is not first
    assert second.train["x"].sum() == 2 * first.train["x"].sum()


def test_changing_a_returned_frame_does_not_change_the_cached_competition(
    write_def, tmp_path: Path
) -> None:
    write_def("mutable")
    competition = load_competition("mutable", tmp_path)
    train = competition.train
    train.loc[0, "x"] = -1
    assert load_competition("mutable", tmp_path).train.loc[0, "x"] != -1

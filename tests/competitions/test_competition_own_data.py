"""A user's own competition: freezing inline split mappings, warnings that suggest
`categorical:`, and pre-split definitions checked before any data is used."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from haste_dagster.competitions.definition import load_definition
from haste_dagster.competitions.registry import load_competition
from haste_dagster.config import PROJECT_ROOT
from haste_dagster.errors import CompetitionDefError

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
import freeze_splits  # noqa: E402


def _inline_yaml(tmp_path: Path, split: str) -> Path:
    pd.DataFrame(
        {"x": range(40), "y": ["a", "b"] * 20, "colour": ["red", "blue", "green", "red"] * 10}
    ).to_csv(tmp_path / "mine.csv", index=False)
    path = tmp_path / "mine.yaml"
    path.write_text(
        "slug: mine\ntitle: Mine\ndomain: tabular_classification\ntask: binary\n"
        "source: csv:mine.csv\ntarget: y\nmetric: roc_auc\n"
        f"{split}\n"
        "budget: {iterations: 2, seconds: 60}   # flow style elsewhere is left alone\n"
    )
    return path


def test_freeze_writes_the_checksum_into_an_inline_split_mapping(tmp_path: Path, capsys) -> None:
    path = _inline_yaml(tmp_path, "split: {test_fraction: 0.25, seed: 0, stratify: true}  # mine")
    assert freeze_splits.main(["--defs", str(tmp_path)]) == 0
    text = path.read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("split:")]
    assert line.startswith("split: {test_fraction: 0.25, seed: 0, stratify: true, answers_sha256: ")
    assert line.endswith("# mine")
    split = yaml.safe_load(text)["split"]
    assert split["seed"] == 0 and len(split["answers_sha256"]) == 64
    assert load_competition("mine", tmp_path).frozen
    # Running again finds the same checksum and leaves the file as it is.
    assert freeze_splits.main(["--defs", str(tmp_path)]) == 0
    assert path.read_text() == text and "unchanged" in capsys.readouterr().out


def test_freeze_explains_how_to_write_a_multi_line_flow_mapping(tmp_path: Path, capsys) -> None:
    path = _inline_yaml(tmp_path, "split: {test_fraction: 0.25,\n        seed: 0}")
    before = path.read_text()
    assert freeze_splits.main(["--defs", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "block mapping" in err and "split:\n  test_fraction: 0.25" in err
    assert "Traceback" not in err
    assert path.read_text() == before


def test_numeric_codes_and_few_distinct_values_warn_to_list_them_categorical(
    write_def, caplog
) -> None:
    rng = np.random.default_rng(0)
    rows = 80
    frame = pd.DataFrame(
        {
            "zip": rng.choice([10115, 20095, 80331, 50667, 1067, 70173], rows),
            "store_id": rng.integers(1, 40, rows),
            "region": rng.choice([3, 17, 42, 96], rows),  # few whole numbers, far apart
            "bathrooms": rng.integers(0, 5, rows),  # a count: dense small range, no warning
            "paid": rng.normal(size=rows).round(3),  # ends in "id" but is no id
            "y": ["a", "b"] * (rows // 2),
        }
    )
    path = write_def("codes", frame=frame, drop=[])
    with caplog.at_level(logging.WARNING):
        competition = load_competition("codes", path.parent)
    flagged = {note.split("'")[1] for note in competition.warnings}
    assert flagged == {"zip", "store_id", "region"}
    assert all("categorical:" in note for note in competition.warnings)
    assert "region" in caplog.text
    # Listing them as categorical silences the warning (and changes their role).
    path = write_def("codes_ok", frame=frame, drop=[], categorical=["zip", "store_id", "region"])
    listed = load_competition("codes_ok", path.parent)
    assert listed.warnings == []
    assert set(listed.problem.categorical) >= {"zip", "store_id", "region"}


def test_presplit_definition_needs_answers_and_id_and_takes_no_split_fraction(
    write_def, tmp_path: Path
) -> None:
    path = write_def("pre", split={"test": "csv:pre.csv"})
    with pytest.raises(CompetitionDefError) as caught:
        load_definition(path)
    assert caught.value.field == "split.answers"
    path = write_def(
        "pre", split={"test": "csv:pre.csv", "answers": "csv:pre.csv", "id_column": "id",
                      "seed": 3}
    )
    with pytest.raises(CompetitionDefError) as caught:
        load_definition(path)
    assert caught.value.field == "split.seed" and "not re-split" in caught.value.message
    path = write_def(
        "pre", split={"test": "csv:missing.csv", "answers": "csv:pre.csv", "id_column": "id"}
    )
    with pytest.raises(CompetitionDefError) as caught:
        load_definition(path)
    assert caught.value.field == "split.test" and "not found" in caught.value.message


def test_unknown_slug_error_points_at_defs(tmp_path: Path) -> None:
    with pytest.raises(CompetitionDefError, match="pass --defs DIR"):
        load_competition("nowhere", tmp_path)

"""`import_mlebench` on synthetic competitions in MLE-bench's on-disk layout; submission files;
the multi-target metrics; and every bad input refused with a named error, writing nothing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlebench_layout import write_layout
from sklearn import metrics as skm

from haste_dagster.competitions.grading import PredictionError, grade
from haste_dagster.competitions.leaderboard import LeaderboardError
from haste_dagster.competitions.metrics import get_metric
from haste_dagster.competitions.mlebench import MLEBenchImportError, import_mlebench
from haste_dagster.competitions.registry import check_solvable, load_competition
from haste_dagster.competitions.submission_file import (
    SubmissionError,
    read_submission,
    write_submission,
)
from haste_dagster.errors import CompetitionDefError


def _import(tmp_path: Path, kind: str = "binary", **layout_args):
    layout = write_layout(tmp_path, kind, **layout_args)
    out = tmp_path / "defs"
    result = import_mlebench(layout.data_dir, out, registry=layout.registry)
    return layout, out, result


def test_import_writes_a_presplit_definition_that_copies_nothing(tmp_path: Path) -> None:
    layout, out, result = _import(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == [
        "synthetic-playground.leaderboard.csv",
        "synthetic-playground.yaml",
    ]
    definition = yaml.safe_load(result.definition.read_text())
    assert definition["split"]["test"] == f"csv:{layout.public / 'test.csv'}"
    assert definition["split"]["answers"] == f"csv:{layout.private / 'test.csv'}"
    assert (definition["split"]["id_column"], definition["metric"]) == ("id", "roc_auc")
    assert (definition["task"], definition["target"]) == ("binary", "target")
    # The private answers appear in no file the import wrote, only as a path.
    answers_text = (layout.private / "test.csv").read_text()
    for written in out.iterdir():
        assert answers_text not in written.read_text()

    competition = load_competition(result.slug, out)
    train = pd.read_csv(layout.public / "train.csv")
    assert len(competition.train) == len(train) and len(competition.test_features) == 60
    assert "target" not in competition.test_features.columns
    assert "id" not in competition.problem.feature_columns  # carried, not learnt from
    assert competition.test_ids.astype(int).tolist() == layout.test["id"].tolist()
    assert competition._answers.tolist() == layout.answers["target"].tolist()
    # The Kaggle board (best first) converted with its order and size.
    board = pd.read_csv(result.leaderboard)
    assert len(board) == 20 and board["score"].is_monotonic_decreasing


def test_submission_round_trips_in_the_sample_format_and_grades(tmp_path: Path) -> None:
    layout, out, result = _import(tmp_path)
    competition = load_competition(result.slug, out)
    predictions = competition.test_features["x1"].to_numpy()
    path = write_submission(competition, predictions, tmp_path / "submission.csv")
    written = pd.read_csv(path)
    sample = pd.read_csv(layout.public / "sample_submission.csv")
    assert list(written.columns) == list(sample.columns)
    assert written["id"].tolist() == sample["id"].tolist()
    direct = grade(competition, predictions)
    from_file = grade(competition, read_submission(competition, path))
    assert from_file.score == direct.score
    expected = skm.roc_auc_score(layout.answers["target"], layout.test["x1"])
    assert from_file.score == pytest.approx(expected)


def test_multiclass_one_hot_answers_decode_to_labels(tmp_path: Path) -> None:
    layout, out, result = _import(tmp_path, "multiclass")
    competition = load_competition(result.slug, out)
    assert competition.problem.classes == ["EAP", "HPL", "MWS"]
    assert competition.metric.name == "log_loss"
    onehot = layout.answers[["EAP", "HPL", "MWS"]].to_numpy()
    labels = np.array(["EAP", "HPL", "MWS"])[onehot.argmax(axis=1)]
    assert competition._answers.tolist() == labels.tolist()
    # The sample's uniform probabilities score log(3), as Kaggle's multi-class log loss does.
    uniform = read_submission(competition, layout.public / "sample_submission.csv")
    assert grade(competition, uniform).score == pytest.approx(math.log(3))


def test_multi_target_competition_grades_and_one_target_paths_refuse_it(
    tmp_path: Path,
) -> None:
    layout, out, result = _import(tmp_path, "multitarget")
    competition = load_competition(result.slug, out)
    assert competition.definition.targets == ["energy", "bandgap"]
    answers = layout.answers.rename(columns=str)
    perfect = tmp_path / "perfect.csv"
    answers.to_csv(perfect, index=False)
    assert grade(competition, read_submission(competition, perfect)).score == 0.0
    check_solvable(competition, per_target=True)  # `haste solve` solves it per target
    with pytest.raises(CompetitionDefError, match="one target at a time"):
        check_solvable(competition)


def test_new_metrics_match_their_definitions() -> None:
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    p = np.array([0, 2, 2, 1, 1, 0, 0])
    expected = skm.cohen_kappa_score(y, p, weights="quadratic")
    assert get_metric("qwk")(y, p) == pytest.approx(expected)
    assert get_metric("qwk")(y, y) == 1.0
    labels = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])
    proba = np.array([[0.1, 0.9], [0.8, 0.3], [0.7, 0.6], [0.2, 0.1]])
    auc = get_metric("mean_columnwise_roc_auc")(labels, proba)
    per_label = [skm.roc_auc_score(labels[:, j], proba[:, j]) for j in (0, 1)]
    assert auc == pytest.approx(np.mean(per_label))
    truth = np.array([[1.0, 2.0], [3.0, 4.0]])
    guess = np.array([[1.5, 2.0], [3.0, 5.0]])
    per_column = [
        np.sqrt(np.mean((np.log1p(guess[:, j]) - np.log1p(truth[:, j])) ** 2)) for j in (0, 1)
    ]
    rmsle = get_metric("mean_columnwise_rmsle")(truth, guess)
    assert rmsle == pytest.approx(np.mean(per_column))
    assert get_metric("mean_columnwise_rmsle").higher_is_better is False


# --- bad input: a named error, and nothing written ---------------------------------------


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())


def test_lfs_pointer_leaderboard_is_refused(tmp_path: Path) -> None:
    layout = write_layout(tmp_path)
    (layout.registry / "leaderboard.csv").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"
    )
    with pytest.raises(LeaderboardError, match="Git LFS pointer"):
        import_mlebench(layout.data_dir, tmp_path / "defs", registry=layout.registry)
    _assert_nothing_written(tmp_path / "defs")


def test_nan_leaderboard_score_is_refused(tmp_path: Path) -> None:
    layout = write_layout(tmp_path)
    board = pd.read_csv(layout.registry / "leaderboard.csv")
    board.loc[3, "score"] = np.nan
    board.to_csv(layout.registry / "leaderboard.csv", index=False)
    with pytest.raises(LeaderboardError, match="row 5 has no finite score"):
        import_mlebench(layout.data_dir, tmp_path / "defs", registry=layout.registry)
    _assert_nothing_written(tmp_path / "defs")


def test_missing_private_answers_are_refused(tmp_path: Path) -> None:
    layout = write_layout(tmp_path)
    (layout.private / "test.csv").unlink()
    with pytest.raises(MLEBenchImportError, match="missing private answers"):
        import_mlebench(layout.data_dir, tmp_path / "defs", registry=layout.registry)
    _assert_nothing_written(tmp_path / "defs")


def test_unknown_metric_in_config_is_refused(tmp_path: Path) -> None:
    layout = write_layout(tmp_path)
    config = yaml.safe_load((layout.registry / "config.yaml").read_text())
    config["grader"]["name"] = "dice-coefficient"
    (layout.registry / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(MLEBenchImportError, match="grader.name: unknown metric 'dice-coefficient'"):
        import_mlebench(layout.data_dir, tmp_path / "defs", registry=layout.registry)
    _assert_nothing_written(tmp_path / "defs")


def test_answers_whose_ids_differ_from_the_test_are_refused(tmp_path: Path) -> None:
    layout = write_layout(tmp_path)
    answers = layout.answers.copy()
    answers.loc[0, "id"] = 99_999
    answers.to_csv(layout.private / "test.csv", index=False)
    with pytest.raises(MLEBenchImportError, match="only one of the test features and the answers"):
        import_mlebench(layout.data_dir, tmp_path / "defs", registry=layout.registry)
    _assert_nothing_written(tmp_path / "defs")


@pytest.fixture
def imported(tmp_path: Path):
    layout, out, result = _import(tmp_path)
    competition = load_competition(result.slug, out)
    good = write_submission(
        competition, competition.test_features["x1"].to_numpy(), tmp_path / "good.csv"
    )
    return competition, pd.read_csv(good), tmp_path


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


def test_submission_ids_not_matching_the_answers_are_refused(imported) -> None:
    competition, frame, tmp_path = imported
    frame.loc[0, "id"] = 123_456
    with pytest.raises(SubmissionError, match="1 unknown .*1 missing"):
        read_submission(competition, _write(tmp_path, frame))
    with pytest.raises(SubmissionError, match="appears twice"):
        read_submission(competition, _write(tmp_path, pd.concat([frame, frame.head(1)])))


def test_submission_with_missing_or_wrong_columns_is_refused(imported) -> None:
    competition, frame, tmp_path = imported
    with pytest.raises(SubmissionError, match=r"missing column\(s\) \['target'\]"):
        read_submission(competition, _write(tmp_path, frame.rename(columns={"target": "p"})))
    with pytest.raises(SubmissionError, match=r"missing column\(s\) \['id'\]"):
        read_submission(competition, _write(tmp_path, frame.drop(columns="id")))
    with pytest.raises(SubmissionError, match=r"unexpected column\(s\) \['extra'\]"):
        read_submission(competition, _write(tmp_path, frame.assign(extra=1)))
    with pytest.raises(SubmissionError, match="must be a .csv"):
        read_submission(competition, tmp_path / "defs" / "synthetic-playground.yaml")


def test_submission_with_nan_scores_is_refused(imported) -> None:
    competition, frame, tmp_path = imported
    frame.loc[5, "target"] = np.nan
    predictions = read_submission(competition, _write(tmp_path, frame))
    with pytest.raises(PredictionError, match="NaN"):
        grade(competition, predictions)


def test_prepared_files_that_differ_from_checksums_yaml_are_refused(tmp_path: Path) -> None:
    import hashlib

    layout = write_layout(tmp_path)
    prepared = layout.data_dir / "prepared"
    sums = {
        section: {
            name: hashlib.md5((prepared / section / name).read_bytes()).hexdigest()
            for name in names
        }
        for section, names in (("public", ["train.csv", "test.csv"]), ("private", ["test.csv"]))
    }
    (layout.registry / "checksums.yaml").write_text(yaml.safe_dump(sums))
    import_mlebench(layout.data_dir, tmp_path / "ok", registry=layout.registry)  # they match
    with (layout.public / "train.csv").open("a") as stream:
        stream.write("1,0.1,0.2,red,1\n")
    with pytest.raises(MLEBenchImportError, match="MD5 differs"):
        import_mlebench(layout.data_dir, tmp_path / "defs", registry=layout.registry)
    _assert_nothing_written(tmp_path / "defs")

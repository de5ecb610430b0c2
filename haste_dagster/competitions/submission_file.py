"""Submission CSV files: written in the sample submission's format, read back for grading.

A submission names each hidden-test row by the competition's id column (``split.id_column``
for a pre-split competition, else ``row_id``) and holds the predictions in the columns the
metric scores: one column (a value, a label, or the probability of the positive class), one
probability column per class (multi-class probabilities), or one column per target
(multi-target). With a ``sample_submission`` in the definition its header and row order are
followed, as Kaggle and MLE-bench expect.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from haste_dagster.competitions.grading import PredictionError
from haste_dagster.competitions.registry import ROW_ID, Competition
from haste_dagster.errors import CompetitionDefError


class SubmissionError(PredictionError):
    """A submission file cannot be graded: missing, not CSV, wrong columns or ids."""


def _sample(competition: Competition) -> pd.DataFrame | None:
    path = competition.definition.sample_submission_path
    if path is None:
        return None
    try:
        return pd.read_csv(path, dtype={competition.definition.id_column: str})
    except (OSError, ValueError) as exc:
        raise CompetitionDefError(
            str(competition.definition.path), "sample_submission", f"cannot read {path}: {exc}"
        ) from None


def submission_columns(competition: Competition) -> tuple[str, list[str]]:
    """(id column, prediction columns) of the competition's submission files."""
    d = competition.definition
    metric = competition.metric
    classes = competition.problem.classes
    if metric.multi_target:
        wanted = list(d.targets)
    elif metric.prediction == "proba" and classes is not None and len(classes) > 2:
        wanted = [str(c) for c in classes]
    else:
        wanted = [d.targets[0]]
    sample = _sample(competition)
    if sample is None:
        return d.id_column, wanted
    if d.id_column not in sample.columns:
        raise CompetitionDefError(
            str(d.path), "sample_submission", f"the sample has no id column {d.id_column!r}"
        )
    given = [str(c) for c in sample.columns if c != d.id_column]
    if len(wanted) == 1 and len(given) == 1:
        return d.id_column, given  # one prediction column, whatever the sample calls it
    if set(given) != set(wanted):
        raise CompetitionDefError(
            str(d.path),
            "sample_submission",
            f"the sample's columns {given} do not match what {d.metric} scores: {wanted}",
        )
    return d.id_column, given


def write_submission(competition: Competition, predictions: np.ndarray, path: Path | str) -> Path:
    """Write ``predictions`` (in ``test_features`` order, the metric's kind) as a CSV."""
    id_column, columns = submission_columns(competition)
    values = np.asarray(predictions)
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if competition.metric.prediction == "proba" and values.shape[1] != len(columns):
        raise SubmissionError(f"{values.shape[1]} prediction column(s) for columns {columns}")
    classes = competition.problem.classes
    if len(columns) > 1 and not competition.metric.multi_target and classes is not None:
        order = [str(c) for c in classes]  # probability columns come in classes order
        values = values[:, [order.index(c) for c in columns]]
    elif len(columns) > 1:
        targets = competition.definition.targets
        values = values[:, [targets.index(c) for c in columns]]
    frame = pd.DataFrame(values, columns=columns)
    frame.insert(0, id_column, competition.test_ids.to_numpy())
    sample = _sample(competition)
    if sample is not None and set(sample[id_column]) == set(frame[id_column].astype(str)):
        position = {v: i for i, v in enumerate(frame[id_column].astype(str))}
        frame = frame.iloc[[position[v] for v in sample[id_column]]]
    path = Path(path)
    frame.to_csv(path, index=False)
    return path


def read_submission(competition: Competition, path: Path | str) -> pd.Series | pd.DataFrame:
    """The predictions of a submission CSV, indexed by row_id, for
    :func:`~haste_dagster.competitions.grading.grade`; every problem a
    :class:`SubmissionError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such submission file")
    if path.suffix.lower() != ".csv":
        raise SubmissionError(f"{path}: a submission must be a .csv file")
    id_column, columns = submission_columns(competition)
    try:
        with warnings.catch_warnings():
            # As `mlebench grade-sample` reads it: floats exactly as written. pandas 3
            # deprecates the option, but its default parser is not exact (measured).
            warnings.filterwarnings("ignore", message=".*float_precision.*")
            frame = pd.read_csv(path, float_precision="round_trip", dtype={id_column: str})
    except (OSError, ValueError) as exc:
        raise SubmissionError(f"{path}: cannot read as CSV: {exc}") from None
    expected = [id_column, *columns]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise SubmissionError(f"{path}: missing column(s) {missing}; expected {expected}")
    extra = [str(c) for c in frame.columns if c not in expected]
    if extra:
        raise SubmissionError(f"{path}: unexpected column(s) {extra}; expected {expected}")
    ids = frame[id_column].astype(str)
    if ids.duplicated().any():
        raise SubmissionError(f"{path}: id {ids[ids.duplicated()].iloc[0]!r} appears twice")
    test_ids = competition.test_ids
    row_of = pd.Series(test_ids.index.to_numpy(), index=test_ids.astype(str).to_numpy())
    unknown = ids[~ids.isin(row_of.index)]
    absent = row_of.index.difference(pd.Index(ids))
    if len(unknown) or len(absent):
        raise SubmissionError(
            f"{path}: ids do not match the hidden answers: {len(unknown)} unknown "
            f"(e.g. {unknown.head(3).tolist()}), {len(absent)} missing (e.g. {absent[:3].tolist()})"
        )
    index = pd.Index(row_of.loc[ids].to_numpy(), name=ROW_ID)
    if len(columns) == 1:
        return pd.Series(frame[columns[0]].to_numpy(), index=index)
    values = frame[columns].set_axis(index)
    classes = competition.problem.classes
    if classes is not None and not competition.metric.multi_target:
        values = values.rename(columns={str(c): c for c in classes})
    return values

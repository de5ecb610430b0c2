"""Build a :class:`Competition` from its definition: data, column roles, hidden split.

Loaded competitions are cached in-process, keyed by the YAML path and the modification
times of the YAML and of any csv/parquet file it reads, so repeated loads are cheap and an
edited file is picked up. The frames handed out are copies (cheap under pandas
copy-on-write), so a caller that changes them cannot corrupt the cache.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from haste_dagster.competitions.columns import infer_roles, to_datetime
from haste_dagster.competitions.definition import (
    CompetitionDef,
    definition_paths,
    load_definition,
    load_definitions,
    write_answers_sha256,
)
from haste_dagster.competitions.metrics import Metric, get_metric
from haste_dagster.competitions.prepare import get_prepare
from haste_dagster.competitions.problem import Problem
from haste_dagster.competitions.sources import SourceError, load_source, source_version
from haste_dagster.competitions.split import (
    SplitError,
    answers_checksum,
    forecast_split,
    random_split,
    sorted_labels,
)
from haste_dagster.config import competition_defs_dir
from haste_dagster.errors import CompetitionDefError

__all__ = [
    "Competition",
    "build_competition",
    "freeze_split",
    "load_competition",
    "load_competition_path",
    "load_definitions",
]

ROW_ID = "row_id"


class Competition:
    """A definition with its data: training frame, hidden test features, metric.

    ``train`` has ``row_id``, the features and the target; ``test_features`` has ``row_id``
    and the features only. The hidden answers live in ``_answers`` and are read only by
    :mod:`haste_dagster.competitions.grading`.
    """

    def __init__(
        self,
        definition: CompetitionDef,
        problem: Problem,
        train: pd.DataFrame,
        test_features: pd.DataFrame,
        answers: pd.Series,
        answers_sha256: str,
    ) -> None:
        self.definition = definition
        self.problem = problem
        self._train = train
        self._test_features = test_features
        self._answers = answers  # indexed by row_id, in test_features order
        self.answers_sha256 = answers_sha256

    @property
    def slug(self) -> str:
        return self.definition.slug

    @property
    def metric(self) -> Metric:
        return get_metric(self.definition.metric)

    @property
    def train(self) -> pd.DataFrame:
        return self._train.copy(deep=False)

    @property
    def test_features(self) -> pd.DataFrame:
        return self._test_features.copy(deep=False)

    @property
    def n_rows(self) -> int:
        """Training plus hidden test rows."""
        return len(self._train) + len(self._test_features)

    @property
    def frozen(self) -> bool:
        """True when the YAML carries the answers checksum (and it was verified)."""
        return self.definition.split.answers_sha256 is not None

    def __repr__(self) -> str:
        return (
            f"Competition({self.slug!r}, task={self.problem.task}, "
            f"metric={self.definition.metric}, train={len(self._train)}, "
            f"test={len(self._test_features)})"
        )


def _fail(definition: CompetitionDef, field: str | None, message: str) -> CompetitionDefError:
    return CompetitionDefError(str(definition.path), field, message)


def _check_columns(d: CompetitionDef, columns: pd.Index) -> None:
    present = set(columns)
    if ROW_ID in present:
        raise _fail(
            d, "source", f"the data has a column named {ROW_ID!r}, a name reserved for row ids"
        )
    if d.target not in present:
        raise _fail(
            d,
            "target",
            f"column {d.target!r} is not in the data; columns: {', '.join(map(str, columns))}",
        )
    listed = {
        "drop": d.drop,
        "features": d.features or [],
        "text_columns": d.text_columns,
        "date_columns": d.date_columns,
        "categorical": d.categorical,
        "split.time_column": [d.split.time_column] if d.split.time_column else [],
        "split.group_column": [d.split.group_column] if d.split.group_column else [],
    }
    for field, names in listed.items():
        missing = [n for n in names if n not in present]
        if missing:
            raise _fail(d, field, f"column(s) {missing} are not in the data")
    dropped = set(d.drop)
    for field in ("features", "text_columns", "date_columns", "categorical"):
        clash = [n for n in listed[field] if n in dropped or n == d.target]
        if clash:
            raise _fail(d, field, f"column(s) {clash} are dropped or the target")


def _feature_columns(d: CompetitionDef, columns: pd.Index) -> list[str]:
    if d.features is not None:
        features = list(d.features)
    else:
        excluded = {d.target, ROW_ID, *d.drop}
        features = [c for c in columns if c not in excluded]
    # A forecaster needs to see time and series identity whatever the feature list says.
    for name in (d.split.time_column, d.split.group_column):
        if name is not None and name not in features:
            features.append(name)
    if not features:
        raise _fail(d, "features", "no feature columns left after drop")
    return features


def _prepare_target(d: CompetitionDef, target: pd.Series) -> tuple[pd.Series, list | None]:
    if d.is_classification:
        classes = [
            v.item() if isinstance(v, np.generic) else v for v in sorted_labels(target.unique())
        ]
        if len(classes) < 2:
            raise _fail(
                d, "target", f"a classification target needs at least 2 classes, found {classes}"
            )
        if d.task == "binary" and len(classes) != 2:
            raise _fail(
                d, "task", f"binary needs exactly 2 classes; {d.target!r} has {len(classes)}"
            )
        if d.task == "multiclass" and len(classes) < 3:
            raise _fail(
                d, "task", f"multiclass needs at least 3 classes; {d.target!r} has 2 (use binary)"
            )
        return target, classes
    if not ptypes.is_numeric_dtype(target) or ptypes.is_bool_dtype(target):
        raise _fail(
            d, "target", f"task {d.task} needs a numeric target; {d.target!r} is {target.dtype}"
        )
    return target.astype(float), None


def _check_finite(d: CompetitionDef, frame: pd.DataFrame, columns: list[str]) -> None:
    """Refuse ±inf in numeric columns, naming the column: models and metrics would fail on it
    later with a message that names neither the column nor the row."""
    for name in columns:
        values = frame[name]
        if not ptypes.is_numeric_dtype(values) or ptypes.is_bool_dtype(values):
            continue
        infinite = np.isinf(values.to_numpy(dtype=float, na_value=np.nan))
        if infinite.any():
            first = int(frame.loc[infinite, ROW_ID].iloc[0])
            raise _fail(
                d,
                "target" if name == d.target else "source",
                f"column {name!r} has {int(infinite.sum())} infinite value(s) (the first in "
                f"row {first} of the data); use finite numbers, or an empty cell for a "
                "missing value",
            )


def build_competition(definition: CompetitionDef, verify: bool = True) -> Competition:
    """Read, shape, split and check one competition (uncached; see :func:`load_competition`)."""
    d = definition
    try:
        frame = load_source(d.source, d.base_dir)
    except SourceError as exc:
        raise _fail(d, "source", str(exc)) from None
    if d.prepare is not None:
        try:
            frame = get_prepare(d.prepare)(frame)
        except (KeyError, ValueError, TypeError) as exc:
            raise _fail(d, "prepare", f"{d.prepare!r} failed: {exc}") from None
    if frame.empty or len(frame.columns) == 0:
        raise _fail(d, "source", "the data set is empty")
    _check_columns(d, frame.columns)

    # row_id is the position in the shaped source data, assigned before any row is
    # dropped, so it stays the same as long as the data does.
    frame = frame.reset_index(drop=True)
    frame.insert(0, ROW_ID, np.arange(len(frame), dtype=np.int64))
    frame = frame.loc[frame[d.target].notna()].reset_index(drop=True)
    if len(frame) < 2:
        raise _fail(d, "target", f"only {len(frame)} row(s) have a value for {d.target!r}")
    target, classes = _prepare_target(d, frame[d.target])
    frame[d.target] = target

    features = _feature_columns(d, frame.columns)
    date_listed = [*d.date_columns, *([d.split.time_column] if d.split.time_column else [])]
    roles = infer_roles(
        frame,
        features,
        text=d.text_columns,
        date=date_listed,
        # A panel's series id is a label, even when it is stored as a number.
        categorical=[*d.categorical, *([d.split.group_column] if d.split.group_column else [])],
    )
    _check_finite(d, frame, [d.target, *roles.numeric])
    for name in list(roles.date):
        try:
            frame[name] = to_datetime(frame[name])
        except ValueError as exc:
            if name not in date_listed:
                # Only guessed to be dates from a sample: treat as a label instead.
                roles.date.remove(name)
                roles.categorical.append(name)
                continue
            field = "split.time_column" if name == d.split.time_column else "date_columns"
            raise _fail(d, field, f"column {name!r}: {exc}") from None

    try:
        if d.is_forecast:
            groups = frame[d.split.group_column] if d.split.group_column else None
            is_test = forecast_split(frame[d.split.time_column], d.split.horizon or 0, groups)
        else:
            strata = frame[d.target] if d.split.stratify else None
            is_test = random_split(len(frame), d.split.test_fraction, d.split.seed, strata)
    except SplitError as exc:
        raise _fail(d, "split", str(exc)) from None

    if d.is_forecast:
        # Time order (stable, so panel rows keep their source order within a time step).
        frame = frame.iloc[np.argsort(frame[d.split.time_column].to_numpy(), kind="stable")]
        is_test = is_test[frame.index.to_numpy()]
        frame = frame.reset_index(drop=True)
    train = frame.loc[~is_test, [ROW_ID, *features, d.target]].reset_index(drop=True)
    test = frame.loc[is_test, [ROW_ID, *features, d.target]].reset_index(drop=True)
    answers = pd.Series(
        test[d.target].to_numpy(), index=pd.Index(test[ROW_ID], name=ROW_ID), name=d.target
    )
    test_features = test.drop(columns=[d.target])

    checksum = answers_checksum(answers)
    expected = d.split.answers_sha256
    if verify and expected is not None and expected != checksum:
        raise _fail(
            d,
            "split.answers_sha256",
            f"the hidden answers changed (expected {expected[:12]}…, got {checksum[:12]}…): "
            "the data, preparation or split differ from when the split was frozen; "
            "if that is intended, run scripts/freeze_splits.py",
        )

    problem = Problem(
        slug=d.slug,
        task=d.task,
        metric=d.metric,
        target=d.target,
        numeric=roles.numeric,
        categorical=roles.categorical,
        text=roles.text,
        date=roles.date,
        time_column=d.split.time_column,
        group_column=d.split.group_column,
        horizon=d.split.horizon,
        classes=classes,
    )
    return Competition(d, problem, train, test_features, answers, checksum)


def _mtime_ns(path: Path) -> int:
    return os.stat(path).st_mtime_ns


@functools.lru_cache(maxsize=64)
def _cached_build(
    path: str, yaml_mtime: int, data_version: tuple[int, ...], verify: bool
) -> Competition:
    # The mtimes are only part of the key: an edited YAML or data file is built again.
    return build_competition(load_definition(path), verify=verify)


def load_competition_path(path: Path | str, verify: bool = True) -> Competition:
    """The competition defined by the YAML at ``path`` (cached)."""
    path = Path(path).resolve()
    definition = load_definition(path)
    version = source_version(definition.source, definition.base_dir)
    return _cached_build(str(path), _mtime_ns(path), version, verify)


def load_competition(slug: str, defs_dir: Path | str | None = None) -> Competition:
    """The competition ``slug`` from ``defs_dir`` (default: the configured definitions folder)."""
    folder = Path(defs_dir) if defs_dir is not None else competition_defs_dir()
    path = folder / f"{slug}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in definition_paths(folder)) or "none"
        raise CompetitionDefError(
            str(path), "slug", f"no definition for {slug!r} in {folder}; known: {known}"
        )
    return load_competition_path(path)


def freeze_split(path: Path | str) -> tuple[str, bool]:
    """(Re)compute the answers checksum and write it into the YAML: (sha256, changed)."""
    competition = load_competition_path(path, verify=False)
    changed = write_answers_sha256(path, competition.answers_sha256)
    return competition.answers_sha256, changed


def clear_cache() -> None:
    """Forget every loaded competition and source frame (tests; long-lived processes)."""
    from haste_dagster.competitions import sources

    _cached_build.cache_clear()
    sources.clear_cache()

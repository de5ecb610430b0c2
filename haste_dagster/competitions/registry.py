"""Build a :class:`Competition` from its definition: data, column roles, hidden split.

Loaded competitions are cached in-process, keyed by the YAML path and the modification
times of the YAML and of any csv/parquet file it reads, so repeated loads are cheap and an
edited file is picked up. The frames handed out are copies (cheap under pandas
copy-on-write), so a caller that changes them cannot corrupt the cache.
"""

from __future__ import annotations

import functools
import logging
import os
import re
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
    "check_solvable",
    "freeze_split",
    "load_competition",
    "load_competition_path",
    "load_definitions",
    "target_view",
]

ROW_ID = "row_id"
log = logging.getLogger(__name__)


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
        answers: pd.Series | pd.DataFrame,
        answers_sha256: str,
        test_ids: pd.Series | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.definition = definition
        self.problem = problem
        self._train = train
        self._test_features = test_features
        # Indexed by row_id, in test_features order; a frame (one column a target) when the
        # metric scores several targets.
        self._answers = answers
        self.answers_sha256 = answers_sha256
        # The id a submission file names each test row by (split.id_column), by row_id.
        ids = test_features[ROW_ID] if test_ids is None else test_ids
        self.test_ids = pd.Series(
            ids.to_numpy(), index=pd.Index(test_features[ROW_ID], name=ROW_ID), name="id"
        )
        self.warnings = list(warnings or [])

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
    for target in d.targets:
        if target not in present:
            raise _fail(
                d,
                "target",
                f"column {target!r} is not in the data; columns: {', '.join(map(str, columns))}",
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
        clash = [n for n in listed[field] if n in dropped or n in d.targets]
        if clash:
            raise _fail(d, field, f"column(s) {clash} are dropped or the target")


def _feature_columns(d: CompetitionDef, columns: pd.Index) -> list[str]:
    if d.features is not None:
        features = list(d.features)
    else:
        # The id column names rows; it is carried beside the features, never learnt from.
        id_column = [d.split.id_column] if d.split.id_column else []
        excluded = {*d.targets, ROW_ID, *d.drop, *id_column}
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
                d, "task", f"binary needs exactly 2 classes; {target.name!r} has {len(classes)}"
            )
        if d.task == "multiclass" and len(classes) < 3:
            raise _fail(
                d, "task", f"multiclass needs 3+ classes; {target.name!r} has 2 (use binary)"
            )
        if d.is_multi_target and not set(classes) <= {0, 1}:
            raise _fail(d, "target", f"{target.name!r} must hold 0/1 labels, has {classes[:5]}")
        return target, classes
    if not ptypes.is_numeric_dtype(target) or ptypes.is_bool_dtype(target):
        raise _fail(
            d, "target", f"task {d.task} needs a numeric target; {target.name!r} is {target.dtype}"
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
                "target" if name in d.targets else "source",
                f"column {name!r} has {int(infinite.sum())} infinite value(s) (the first in "
                f"row {first} of the data); use finite numbers, or an empty cell for a "
                "missing value",
            )


def _load(d: CompetitionDef, field: str, source: str) -> pd.DataFrame:
    try:
        frame = load_source(source, d.base_dir)
    except SourceError as exc:
        raise _fail(d, field, str(exc)) from None
    if frame.empty or len(frame.columns) == 0:
        raise _fail(d, field, "the data set is empty")
    return frame


def _ids(d: CompetitionDef, frame: pd.DataFrame, field: str) -> pd.Series:
    name = d.split.id_column
    assert name is not None
    if name not in frame.columns:
        raise _fail(d, field, f"column {name!r} (split.id_column) is not in the file")
    ids = frame[name].astype(str)
    if ids.duplicated().any():
        raise _fail(d, field, f"id {ids[ids.duplicated()].iloc[0]!r} appears twice")
    return ids


def _decoded_answers(d: CompetitionDef, answers: pd.DataFrame, classes: list) -> pd.DataFrame:
    """Answers given one-hot (one 0/1 column per class, as Kaggle's log-loss answers are)
    decoded into the label column the training data has."""
    target = d.targets[0]
    names = {str(c): c for c in classes}
    columns = [c for c in answers.columns if c != d.split.id_column]
    if target in columns or not columns or not set(columns) <= set(names):
        return answers
    onehot = answers[columns].to_numpy(dtype=float)
    if not np.isin(onehot, (0.0, 1.0)).all() or not (onehot.sum(axis=1) == 1).all():
        raise _fail(d, "split.answers", "class columns must hold exactly one 1 per row")
    out = answers[[d.split.id_column]].copy()
    out[target] = [names[columns[j]] for j in onehot.argmax(axis=1)]
    return out


def _presplit_frame(d: CompetitionDef) -> tuple[pd.DataFrame, np.ndarray, pd.Series]:
    """(training rows then test rows with their answers, test mask, test ids) of a
    pre-split competition; row_id is the position in that order."""
    assert d.split.test is not None and d.split.answers is not None
    train = _load(d, "source", d.source)
    test = _load(d, "split.test", d.split.test)
    answers = _load(d, "split.answers", d.split.answers)
    if d.split.id_column in train.columns:
        _ids(d, train, "source")
    test_ids = _ids(d, test, "split.test")
    present = [t for t in d.targets if t in test.columns]
    if present:
        raise _fail(d, "split.test", f"the test features hold the target(s) {present}")
    if d.is_classification and not d.is_multi_target and d.targets[0] in train.columns:
        labels = sorted_labels(pd.unique(train[d.targets[0]].dropna()))
        answers = _decoded_answers(d, answers, labels)
    missing = [t for t in d.targets if t not in answers.columns]
    if missing:
        raise _fail(d, "split.answers", f"the answers lack the target column(s) {missing}")
    answer_ids = _ids(d, answers, "split.answers")
    unknown = sorted(set(answer_ids) ^ set(test_ids))
    if unknown:
        raise _fail(
            d,
            "split.answers",
            f"{len(unknown)} id(s) are in only one of the test features and the answers "
            f"(e.g. {unknown[:3]})",
        )
    lookup = answers.set_index(answer_ids)[d.targets]
    test = test.copy()
    for target in d.targets:
        values = lookup[target].reindex(test_ids.to_numpy()).to_numpy()
        if pd.isna(values).any():
            gaps = int(pd.isna(values).sum())
            raise _fail(d, "split.answers", f"{gaps} answer(s) of {target!r} are missing")
        test[target] = values
    extra = [c for c in test.columns if c not in train.columns and c != d.split.id_column]
    if extra:
        raise _fail(d, "split.test", f"column(s) {extra} are not in the training data")
    # Columns only the training file has (often leaky by-products of the target) cannot be
    # features: the test rows do not have them.
    train_only = [c for c in train.columns if c not in test.columns and c not in d.targets]
    if train_only:
        log.warning("%s: training-only column(s) %s are not used", d.path, train_only)
        train = train.drop(columns=train_only)
    shared = [c for c in train.columns if c in test.columns]
    frame = pd.concat([train, test[shared]], ignore_index=True)
    is_test = np.r_[np.zeros(len(train), dtype=bool), np.ones(len(test), dtype=bool)]
    return frame, is_test, pd.Series(test_ids.to_numpy(), index=np.flatnonzero(is_test))


# Names that say a number is a code, not a quantity (zip codes, ids, product codes).
_CODE_NAME = re.compile(r"(^|_)(id|zip|zipcode|postcode|postal|code|fips)$|_(id|code)$", re.I)
_CODE_CAMEL = re.compile(r"[a-z0-9](Id|ID|Code)$")  # customerId, PassengerID, RegionCode
FEW_DISTINCT = 10


def categorical_warnings(frame: pd.DataFrame, numeric: list[str]) -> list[str]:
    """Numeric columns that are probably labels: an id-like name, or a few distinct whole
    numbers spread over a range with gaps (10115, 20095, 80331: codes), unlike the dense
    small ranges of counts (0–4 bathrooms). A warning only: ``categorical:`` decides."""
    out = []
    for name in numeric:
        values = frame[name].dropna()
        if ptypes.is_bool_dtype(values) or values.empty:
            continue
        numbers = values.to_numpy(dtype=float)
        whole = bool(np.all(np.mod(numbers, 1) == 0))
        distinct = int(values.nunique())
        span = float(numbers.max() - numbers.min()) + 1
        if _CODE_NAME.search(str(name)) or _CODE_CAMEL.search(str(name)):
            why = "its name looks like a code or an id"
        elif whole and 2 < distinct <= FEW_DISTINCT and span > 2 * distinct:
            why = f"it has only {distinct} distinct whole numbers, spread like codes"
        else:
            continue
        out.append(
            f"column {name!r} is read as a number but {why}; if it is a label, list it under "
            "`categorical:` in the YAML"
        )
    return out


def build_competition(definition: CompetitionDef, verify: bool = True) -> Competition:
    """Read, shape, split and check one competition (uncached; see :func:`load_competition`)."""
    d = definition
    if d.split.presplit:
        if d.prepare is not None:
            raise _fail(d, "prepare", "a pre-split competition takes no preparation")
        frame, presplit_test, presplit_ids = _presplit_frame(d)
    else:
        frame = _load(d, "source", d.source)
        presplit_test = presplit_ids = None
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
    labelled = frame[d.targets].notna().all(axis=1)
    if presplit_test is not None:
        presplit_test = presplit_test[labelled.to_numpy()]
    frame = frame.loc[labelled].reset_index(drop=True)
    if len(frame) < 2:
        raise _fail(d, "target", f"only {len(frame)} row(s) have a value for {d.target!r}")
    classes = None
    for target in d.targets:
        frame[target], classes = _prepare_target(d, frame[target])
    if d.is_multi_target:
        classes = None  # each 0/1 column is scored on its own

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
    _check_finite(d, frame, [*d.targets, *roles.numeric])
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
    notes = categorical_warnings(frame, roles.numeric)
    for note in notes:
        log.warning("%s: %s", d.path, note)

    try:
        if presplit_test is not None:
            is_test = presplit_test
        elif d.is_forecast:
            groups = frame[d.split.group_column] if d.split.group_column else None
            is_test = forecast_split(frame[d.split.time_column], d.split.horizon or 0, groups)
        else:
            target = frame[d.targets[0]]
            strata = target if d.split.stratify else None
            is_test = random_split(len(frame), d.split.test_fraction, d.split.seed, strata)
    except SplitError as exc:
        raise _fail(d, "split", str(exc)) from None

    if d.is_forecast:
        # Time order (stable, so panel rows keep their source order within a time step).
        frame = frame.iloc[np.argsort(frame[d.split.time_column].to_numpy(), kind="stable")]
        is_test = is_test[frame.index.to_numpy()]
        frame = frame.reset_index(drop=True)
    train = frame.loc[~is_test, [ROW_ID, *features, *d.targets]].reset_index(drop=True)
    test = frame.loc[is_test, [ROW_ID, *features, *d.targets]].reset_index(drop=True)
    index = pd.Index(test[ROW_ID], name=ROW_ID)
    answers: pd.Series | pd.DataFrame
    if d.is_multi_target:
        answers = test[d.targets].set_axis(index)
    else:
        answers = pd.Series(test[d.target].to_numpy(), index=index, name=d.target)
    test_features = test.drop(columns=d.targets)
    test_ids = None
    if presplit_ids is not None:
        test_ids = pd.Series(presplit_ids.reindex(test[ROW_ID]).to_numpy(), index=index)

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
        target=d.targets[0],
        targets=d.targets if d.is_multi_target else None,
        numeric=roles.numeric,
        categorical=roles.categorical,
        text=roles.text,
        date=roles.date,
        time_column=d.split.time_column,
        group_column=d.split.group_column,
        horizon=d.split.horizon,
        classes=classes,
    )
    return Competition(d, problem, train, test_features, answers, checksum, test_ids, notes)


def check_solvable(competition: Competition, *, per_target: bool = False) -> None:
    """Refuse, before any compute, what the solver cannot do.

    A multi-target competition is solved one target at a time
    (:mod:`haste_dagster.agents.multitarget`, through ``haste solve``) when its metric is the
    mean of a single-column metric (``Metric.per_column``); callers that solve per target
    pass ``per_target=True``. Paths that run one attempt on one target (the Dagster
    ``attempt`` asset, distributed rounds) refuse it here instead of failing mid-budget.
    """
    d = competition.definition
    if not d.is_multi_target:
        return
    if competition.metric.per_column is None:
        raise _fail(
            d,
            "metric",
            f"{len(d.targets)} targets ({d.metric}): only multi-target metrics that average a "
            "per-column metric can be solved (mean_columnwise_rmsle, mean_columnwise_roc_auc); "
            "this one can be imported and graded (`haste grade`)",
        )
    if not per_target:
        raise _fail(
            d,
            "target",
            f"{len(d.targets)} targets ({d.metric}): multi-target competitions are solved one "
            "target at a time by `haste solve`; this path runs one attempt on one target",
        )


def target_view(competition: Competition, target: str) -> Competition:
    """The single-target competition of one column of a multi-target one: the same training
    rows and features, ``target`` alone, scored by the metric the multi-target metric
    averages (``Metric.per_column``). Ungraded (no medals, no sample submission): the
    multi-target grade is the only one with a leaderboard."""
    d = competition.definition
    metric = competition.metric.per_column
    if not d.is_multi_target or metric is None or target not in d.targets:
        raise _fail(d, "target", f"no single-target view of {target!r} ({d.metric})")
    others = [t for t in d.targets if t != target]
    train = competition.train.drop(columns=others)
    classes = None
    if d.is_classification:
        classes = [
            v.item() if isinstance(v, np.generic) else v
            for v in sorted_labels(train[target].unique())
        ]
        if len(classes) != 2:
            raise _fail(
                d, "target", f"{target!r} has the classes {classes} in the training data; "
                f"{metric} per column needs both 0 and 1"
            )
    view = d.model_copy(
        update={"target": target, "metric": metric, "medals": None, "sample_submission": None}
    )
    problem = competition.problem.model_copy(
        update={"target": target, "targets": None, "metric": metric, "classes": classes}
    )
    answers = competition._answers[target]
    return Competition(
        view,
        problem,
        train,
        competition.test_features,
        answers,
        answers_checksum(answers),
        competition.test_ids,
    )


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
    for extra in (definition.split.test, definition.split.answers):
        if extra is not None:
            version += source_version(extra, definition.base_dir)
    return _cached_build(str(path), _mtime_ns(path), version, verify)


def load_competition(slug: str, defs_dir: Path | str | None = None) -> Competition:
    """The competition ``slug`` from ``defs_dir`` (default: the configured definitions folder)."""
    folder = Path(defs_dir) if defs_dir is not None else competition_defs_dir()
    path = folder / f"{slug}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in definition_paths(folder)) or "none"
        raise CompetitionDefError(
            str(path),
            "slug",
            f"no definition for {slug!r} in {folder}; known: {known} (competitions elsewhere: "
            "pass --defs DIR, or set HASTE_COMPETITION_DEFS)",
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

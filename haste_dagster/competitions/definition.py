"""Competition definitions: ``competition_defs/<slug>.yaml`` → validated :class:`CompetitionDef`.

Validation here covers the file itself (YAML syntax, field types, known metric, source
scheme and preparation, files the source names). Checks that need the data (target
column present, non-empty, split checksum) run when the competition is built
(:mod:`haste_dagster.competitions.registry`); :func:`load_definitions` runs both so a
listing reports every broken definition with its file and field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from haste_dagster.competitions.metrics import METRICS
from haste_dagster.competitions.prepare import PREPARE
from haste_dagster.competitions.problem import Task
from haste_dagster.competitions.sources import (
    FILE_SCHEMES,
    SourceError,
    source_files,
    split_source,
)
from haste_dagster.config import competition_defs_dir
from haste_dagster.errors import CompetitionDefError

CLASSIFICATION_TASKS = ("binary", "multiclass", "text_classification")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
MAX_DEFINITION_BYTES = 1_000_000  # the bundled definitions are about 1 kB


class SplitDef(BaseModel):
    """How the hidden test split is cut, and the checksum of its answers.

    Pre-split mode (``test`` given, e.g. an imported MLE-bench competition): ``source`` is
    the training data, ``test`` the hidden-test features and ``answers`` the hidden answers,
    matched by ``id_column``; nothing is re-split, so ``test_fraction``/``seed``/``stratify``
    do not apply.
    """

    model_config = ConfigDict(extra="forbid")

    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 0
    stratify: bool = False
    # Forecast only: the last `horizon` distinct values of `time_column` (per group) are hidden.
    time_column: str | None = None
    horizon: int | None = Field(None, gt=0)
    group_column: str | None = None
    answers_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    test: str | None = None
    answers: str | None = None
    id_column: str | None = None

    @field_validator("test", "answers")
    @classmethod
    def _file_source(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                scheme, _ = split_source(value)
            except SourceError as exc:
                raise ValueError(str(exc)) from None
            if scheme not in FILE_SCHEMES:
                raise ValueError(f"must be a csv: or parquet: file, got {value!r}")
        return value

    @property
    def presplit(self) -> bool:
        return self.test is not None


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(20, ge=1)
    seconds: float = Field(300.0, gt=0)


class Medals(BaseModel):
    """Explicit medal thresholds (scores in the metric's own units)."""

    model_config = ConfigDict(extra="forbid")

    gold: float
    silver: float
    bronze: float


class CompetitionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str
    title: str
    domain: str = Field(min_length=1)
    task: Task
    source: str
    prepare: str | None = None
    target: str | list[str] = Field(union_mode="left_to_right")
    features: list[str] | None = None
    drop: list[str] = Field(default_factory=list)
    text_columns: list[str] = Field(default_factory=list)
    date_columns: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    metric: str
    split: SplitDef = Field(default_factory=SplitDef)
    budget: Budget = Field(default_factory=Budget)
    medals: Medals | None = None
    # A CSV whose header (id column, then prediction columns) `haste solve --submission`
    # writes and `haste grade` reads; relative paths are resolved beside the YAML.
    sample_submission: str | None = None
    description: str = ""

    # Where the YAML lives: csv/parquet sources and the leaderboard are resolved beside it.
    _path: Path | None = PrivateAttr(default=None)

    @field_validator("slug")
    @classmethod
    def _slug_format(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("slug must be lower-case letters, digits, '_' or '-'")
        return value

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        try:
            split_source(value)
        except SourceError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(sorted(METRICS))}")
        return value

    @field_validator("prepare")
    @classmethod
    def _known_prepare(cls, value: str | None) -> str | None:
        if value is not None and value not in PREPARE:
            raise ValueError(f"unknown preparation {value!r}; known: {', '.join(sorted(PREPARE))}")
        return value

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def base_dir(self) -> Path:
        """Folder that relative csv/parquet sources and the leaderboard are resolved in."""
        return self._path.parent if self._path is not None else competition_defs_dir()

    @property
    def leaderboard_path(self) -> Path:
        return self.base_dir / f"{self.slug}.leaderboard.csv"

    @property
    def targets(self) -> list[str]:
        """The target column(s): one, or several for a multi-target metric."""
        return list(self.target) if isinstance(self.target, list) else [self.target]

    @property
    def is_multi_target(self) -> bool:
        return isinstance(self.target, list)

    @property
    def id_column(self) -> str:
        """The column that names a test row in submission files."""
        return self.split.id_column or "row_id"

    @property
    def sample_submission_path(self) -> Path | None:
        if self.sample_submission is None:
            return None
        return (self.base_dir / self.sample_submission).resolve()

    @property
    def is_classification(self) -> bool:
        return self.task in CLASSIFICATION_TASKS

    @property
    def is_forecast(self) -> bool:
        return self.task == "forecast"


def _consistency_problem(d: CompetitionDef) -> tuple[str, str] | None:
    """First cross-field inconsistency as (field, message), or None."""
    metric = METRICS[d.metric]
    if isinstance(d.target, list) and len(d.target) < 2:
        return "target", "a list of targets needs at least 2 columns (else give one name)"
    if isinstance(d.target, list) and (
        not all(name.strip() for name in d.target) or len(set(d.target)) < len(d.target)
    ):
        return "target", f"target columns must be distinct, non-empty names, not {d.target}"
    if metric.multi_target != d.is_multi_target:
        if metric.multi_target:
            return "target", f"{d.metric} scores several targets: give target as a list"
        return (
            "target",
            f"{d.metric} scores one target: give target as one column name, or use a "
            "multi-target metric for a list",
        )
    if metric.prediction == "multilabel" and d.task != "binary":
        return "task", f"{d.metric} scores 0/1 targets: task must be binary"
    if d.is_classification and metric.prediction in ("value", "values"):
        return (
            "metric",
            f"{d.metric} scores numeric values; task {d.task} needs a classification metric",
        )
    if not d.is_classification and metric.prediction not in ("value", "values"):
        return (
            "metric",
            f"{d.metric} scores class predictions; task {d.task} needs a regression metric",
        )
    s = d.split
    if s.presplit:
        if s.answers is None:
            return "split.answers", "a pre-split competition (split.test) needs its answers file"
        if s.id_column is None:
            return "split.id_column", "a pre-split competition needs the column that ids a row"
        given = {"test_fraction", "seed", "stratify", "time_column", "horizon", "group_column"}
        clash = sorted(given & s.model_fields_set)
        if clash:
            return f"split.{clash[0]}", "a pre-split competition (split.test) is not re-split"
        if d.is_forecast:
            return "split.test", "forecast competitions are split by time, not pre-split"
    elif s.answers is not None or s.id_column is not None:
        field = "split.answers" if s.answers is not None else "split.id_column"
        return field, "only a pre-split competition (with split.test) takes this field"
    elif d.is_forecast:
        if s.time_column is None:
            return "split.time_column", "a forecast needs the column that orders time"
        if s.horizon is None:
            return "split.horizon", "a forecast needs the number of final time steps to hide"
        if s.stratify:
            return "split.stratify", "a forecast split is by time; stratify does not apply"
    else:
        for name in ("time_column", "horizon", "group_column"):
            if getattr(s, name) is not None:
                return f"split.{name}", f"only forecast competitions take {name} (task is {d.task})"
        if s.stratify and not d.is_classification:
            return "split.stratify", f"stratify needs classes; task {d.task} has none"
    for target in d.targets:
        if target in d.drop:
            return "drop", f"the target {target!r} cannot be dropped"
        if d.features is not None and target in d.features:
            return "features", f"the target {target!r} cannot be a feature"
    if d.medals is not None:
        m = d.medals
        ordered = (
            (m.gold >= m.silver >= m.bronze)
            if metric.higher_is_better
            else (m.gold <= m.silver <= m.bronze)
        )
        if not ordered:
            direction = "higher" if metric.higher_is_better else "lower"
            return (
                "medals",
                f"{d.metric} is better when {direction}: need gold ≥ silver ≥ bronze in that sense",
            )
    return None


def _field_of(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def parse_definition(data: Any, path: Path) -> CompetitionDef:
    """Validate an already-parsed YAML document; errors name ``path`` and the field."""
    where = str(path)
    if not isinstance(data, dict):
        raise CompetitionDefError(
            where, None, f"expected a mapping of fields, got {type(data).__name__}"
        )
    try:
        definition = CompetitionDef.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = exc.error_count() - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        message = first["msg"].removeprefix("Value error, ")
        raise CompetitionDefError(where, _field_of(first), f"{message}{tail}") from None
    if definition.slug != path.stem:
        raise CompetitionDefError(
            where, "slug", f"slug {definition.slug!r} must equal the file name {path.stem!r}"
        )
    problem = _consistency_problem(definition)
    if problem is not None:
        raise CompetitionDefError(where, *problem)
    definition._path = path.resolve()
    checks = [("source", definition.source), ("split.test", definition.split.test)]
    checks.append(("split.answers", definition.split.answers))
    for field, source in checks:
        if source is None:
            continue
        for file in source_files(source, definition.base_dir):
            if not file.is_file():
                raise CompetitionDefError(where, field, f"data file not found: {file}")
    sample = definition.sample_submission_path
    if sample is not None and not sample.is_file():
        raise CompetitionDefError(where, "sample_submission", f"file not found: {sample}")
    return definition


def load_definition(path: Path | str) -> CompetitionDef:
    """Read and validate one YAML file (no data is read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_DEFINITION_BYTES:
            # PyYAML parses about 2 MB/s: refuse before spending minutes on a wrong file.
            raise CompetitionDefError(
                str(path), None,
                f"the file is {size / 1e6:.1f} MB; a competition definition is a small YAML "
                f"file (at most {MAX_DEFINITION_BYTES // 1_000_000} MB): keep data in its "
                "csv/parquet source",
            )
        # safe_load: a definition is data; no YAML tag may construct Python objects. Reading
        # from the open file lets YAML errors name it with line and column.
        with path.open(encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise CompetitionDefError(str(path), None, f"cannot read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise CompetitionDefError(
            str(path), None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except yaml.YAMLError as exc:
        raise CompetitionDefError(str(path), None, f"malformed YAML: {exc}") from None
    except RecursionError:
        raise CompetitionDefError(
            str(path), None, "malformed YAML: nested too deeply for a competition definition"
        ) from None
    return parse_definition(data, path)


def definition_paths(defs_dir: Path | str | None = None) -> list[Path]:
    folder = Path(defs_dir) if defs_dir is not None else competition_defs_dir()
    return sorted(p for p in folder.glob("*.yaml") if not p.name.startswith((".", "_")))


def load_definitions(
    defs_dir: Path | str | None = None, check_data: bool = True
) -> tuple[list[CompetitionDef], list[CompetitionDefError]]:
    """All definitions in ``defs_dir``: (loaded, errors). A broken file never hides the rest.

    With ``check_data`` each competition is also built (data read, split, checksum
    verified; cached in-process), so data problems are reported here too.
    """
    # Imported here: the registry imports this module, and building needs the registry.
    from haste_dagster.competitions.registry import load_competition_path

    loaded: list[CompetitionDef] = []
    errors: list[CompetitionDefError] = []
    for path in definition_paths(defs_dir):
        try:
            definition = load_definition(path)
            if check_data:
                definition = load_competition_path(path).definition
        except CompetitionDefError as exc:
            errors.append(exc)
            continue
        loaded.append(definition)
    return loaded, errors


_SPLIT_LINE = re.compile(r"^split:\s*(#.*)?$", re.M)
_SHA_LINE = re.compile(r"^(?P<indent>[ \t]+)answers_sha256:[^\n]*$", re.M)
# `split: {test_fraction: 0.25, seed: 0}` on one line, optionally followed by a comment.
_FLOW_SPLIT = re.compile(r"^split:[ \t]*\{(?P<body>[^{}\n]*)\}[ \t]*(?P<tail>#[^\n]*)?$", re.M)
_FLOW_SHA = re.compile(r"answers_sha256:\s*[0-9a-fA-F]*")
_BLOCK_HINT = (
    "write `split:` as a block mapping to freeze its checksum, one field a line, e.g.\n"
    "split:\n  test_fraction: 0.25\n  seed: 0"
)


def _with_flow_sha(text: str, sha256: str) -> str | None:
    """The text with ``answers_sha256`` set inside a one-line ``split: {...}``, or None."""
    match = _FLOW_SPLIT.search(text)
    if match is None:
        return None
    body = match.group("body")
    if _FLOW_SHA.search(body):
        body = _FLOW_SHA.sub(f"answers_sha256: {sha256}", body, count=1)
    else:
        body = f"{body.rstrip()}, answers_sha256: {sha256}" if body.strip() else (
            f"answers_sha256: {sha256}"
        )
    tail = f"  {match.group('tail')}" if match.group("tail") else ""
    return text[: match.start()] + f"split: {{{body.strip()}}}{tail}" + text[match.end() :]


def write_answers_sha256(path: Path | str, sha256: str) -> bool:
    """Set ``split.answers_sha256`` in the YAML text, keeping comments and layout.

    Block and one-line flow mappings (``split: {seed: 1}``) are edited in place; any other
    layout raises :class:`CompetitionDefError` saying how to write it. Returns True when
    the file changed.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if re.search(r"^split:[ \t]*[^\s#]", text, re.M):
        new = _with_flow_sha(text, sha256)
        if new is None:
            raise CompetitionDefError(str(path), "split", _BLOCK_HINT)
    elif _SHA_LINE.search(text):
        new = _SHA_LINE.sub(lambda m: f"{m.group('indent')}answers_sha256: {sha256}", text, count=1)
    else:
        match = _SPLIT_LINE.search(text)
        if match is None:
            new = text.rstrip("\n") + f"\nsplit:\n  answers_sha256: {sha256}\n"
        else:
            rest = text[match.end() :]
            indent = re.match(r"\n([ \t]+)", rest)
            pad = indent.group(1) if indent else "  "
            new = text[: match.end()] + f"\n{pad}answers_sha256: {sha256}" + rest
    # The edit is textual: prove it changed nothing but the checksum before writing it.
    before, after = yaml.safe_load(text) or {}, yaml.safe_load(new) or {}
    expected = {**before, "split": {**(before.get("split") or {}), "answers_sha256": sha256}}
    if after != expected:
        raise CompetitionDefError(str(path), "split", _BLOCK_HINT)
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True

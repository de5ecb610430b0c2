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
from haste_dagster.competitions.sources import SourceError, source_files, split_source
from haste_dagster.config import competition_defs_dir
from haste_dagster.errors import CompetitionDefError

CLASSIFICATION_TASKS = ("binary", "multiclass", "text_classification")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
MAX_DEFINITION_BYTES = 1_000_000  # the bundled definitions are about 1 kB


class SplitDef(BaseModel):
    """How the hidden test split is cut, and the checksum of its answers."""

    model_config = ConfigDict(extra="forbid")

    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 0
    stratify: bool = False
    # Forecast only: the last `horizon` distinct values of `time_column` (per group) are hidden.
    time_column: str | None = None
    horizon: int | None = Field(None, gt=0)
    group_column: str | None = None
    answers_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


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
    target: str
    features: list[str] | None = None
    drop: list[str] = Field(default_factory=list)
    text_columns: list[str] = Field(default_factory=list)
    date_columns: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    metric: str
    split: SplitDef = Field(default_factory=SplitDef)
    budget: Budget = Field(default_factory=Budget)
    medals: Medals | None = None
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
    def is_classification(self) -> bool:
        return self.task in CLASSIFICATION_TASKS

    @property
    def is_forecast(self) -> bool:
        return self.task == "forecast"


def _consistency_problem(d: CompetitionDef) -> tuple[str, str] | None:
    """First cross-field inconsistency as (field, message), or None."""
    metric = METRICS[d.metric]
    if d.is_classification and metric.prediction == "value":
        return (
            "metric",
            f"{d.metric} scores numeric values; task {d.task} needs a classification metric",
        )
    if not d.is_classification and metric.prediction != "value":
        return (
            "metric",
            f"{d.metric} scores class predictions; task {d.task} needs a regression metric",
        )
    s = d.split
    if d.is_forecast:
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
    if d.target in d.drop:
        return "drop", f"the target {d.target!r} cannot be dropped"
    if d.features is not None and d.target in d.features:
        return "features", f"the target {d.target!r} cannot be a feature"
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
    for file in source_files(definition.source, definition.base_dir):
        if not file.is_file():
            raise CompetitionDefError(where, "source", f"data file not found: {file}")
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


def write_answers_sha256(path: Path | str, sha256: str) -> bool:
    """Set ``split.answers_sha256`` in the YAML text, keeping comments and layout.

    Returns True when the file changed.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if _SHA_LINE.search(text):
        new = _SHA_LINE.sub(lambda m: f"{m.group('indent')}answers_sha256: {sha256}", text, count=1)
    else:
        match = _SPLIT_LINE.search(text)
        if match is None and re.search(r"^split:", text, re.M):
            # Flow style (`split: {seed: 1}`): a text edit could break it; ask for block style.
            raise ValueError(f"{path}: write `split:` as a block mapping to freeze its checksum")
        if match is None:
            new = text.rstrip("\n") + f"\nsplit:\n  answers_sha256: {sha256}\n"
        else:
            rest = text[match.end() :]
            indent = re.match(r"\n([ \t]+)", rest)
            pad = indent.group(1) if indent else "  "
            new = text[: match.end()] + f"\n{pad}answers_sha256: {sha256}" + rest
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True

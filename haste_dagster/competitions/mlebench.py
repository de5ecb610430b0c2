"""Import a competition prepared by MLE-bench as a pre-split definition.

Reads ``<data-dir>/<id>/prepared/public/`` (train, test, sample submission, description),
checks ``prepared/private/`` holds the answers, and, from the registry folder
``mle-bench/mlebench/competitions/<id>/``, ``config.yaml`` (metric from ``grader.name``, the
answers and sample submission files), ``checksums.yaml`` (MD5 of the prepared files) and
``leaderboard.csv``. It writes
``<out>/<id>.yaml`` (public train = training data, public test = hidden-test features,
private answers = hidden answers, matched by the sample submission's id column; nothing is
re-split) and ``<out>/<id>.leaderboard.csv``.

The YAML points at the files where MLE-bench keeps them: nothing is copied, so nothing
from ``private/`` lands anywhere an agent reads; the answers are read only when the
competition is built, into the part only grading reads. Every check runs before anything
is written, so a bad input leaves no file behind.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from haste_dagster.competitions.columns import looks_like_text
from haste_dagster.competitions.leaderboard import read_leaderboard, write_leaderboard
from haste_dagster.competitions.metrics import METRICS
from haste_dagster.errors import CompetitionDefError, HasteError

# MLE-bench's `grader.name` (free text in each config.yaml), normalised, → native metric.
GRADERS: dict[str, str] = {
    "auc-roc": "roc_auc",
    "roc-auc": "roc_auc",
    "auc": "roc_auc",
    "log-loss": "log_loss",
    "logloss": "log_loss",
    "binary-log-loss": "log_loss",
    "multi-class-log-loss": "log_loss",
    "multiclass-log-loss": "log_loss",
    "accuracy": "accuracy",
    "classification-accuracy": "accuracy",
    "multi-class-classification-accuracy": "accuracy",
    "quadratic-weighted-kappa": "qwk",
    "qwk": "qwk",
    "column-wise-roc-auc": "mean_columnwise_roc_auc",
    "mean-column-wise-roc-auc": "mean_columnwise_roc_auc",
    "mean-column-wise-auc": "mean_columnwise_roc_auc",
    "mean-column-wise-rmsle": "mean_columnwise_rmsle",
    "rmse": "rmse",
    "root-mean-squared-error": "rmse",
    "rmsle": "rmsle",
    "mae": "mae",
    "mean-absolute-error": "mae",
}
CLASSIFICATION_METRICS = {"roc_auc", "log_loss", "accuracy", "qwk"}


class MLEBenchImportError(HasteError):
    """An MLE-bench competition cannot be imported; names the file and what is wrong."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


@dataclass
class ImportResult:
    slug: str
    definition: Path
    leaderboard: Path | None
    warnings: list[str] = field(default_factory=list)


def metric_for_grader(name: str, where: Path | str) -> str:
    """The native metric for MLE-bench's ``grader.name``; unknown names are refused."""
    key = re.sub(r"[\s_]+", "-", str(name).strip().lower())
    if key in METRICS:
        return key
    if key.replace("-", "_") in METRICS:
        return key.replace("-", "_")
    if key not in GRADERS:
        known = ", ".join(sorted(GRADERS))
        raise MLEBenchImportError(
            where, f"grader.name: unknown metric {name!r}; known: {known} (or pass --metric)"
        )
    return GRADERS[key]


def _read_config(registry: Path) -> dict[str, Any]:
    path = registry / "config.yaml"
    if not path.is_file():
        raise MLEBenchImportError(path, "no config.yaml in the registry folder")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MLEBenchImportError(path, f"cannot read: {exc}") from None
    if not isinstance(config, dict):
        raise MLEBenchImportError(path, "expected a mapping of fields")
    return config


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksums(registry: Path, prepared: Path) -> int:
    """Check the prepared files against the registry's ``checksums.yaml`` (MD5 of the
    top-level public/private files); returns how many were checked (0 without the file)."""
    path = registry / "checksums.yaml"
    if not path.is_file():
        return 0
    try:
        sums = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MLEBenchImportError(path, f"cannot read: {exc}") from None
    checked = 0
    for section in ("public", "private"):
        for name, expected in (sums.get(section) or {}).items():
            file = prepared / section / str(name)
            if not file.is_file():
                raise MLEBenchImportError(file, f"listed in {path} but missing: re-run prepare")
            if _md5(file) != str(expected):
                raise MLEBenchImportError(
                    file,
                    f"MD5 differs from {path}: the prepared data changed or is incomplete; "
                    "re-run `mlebench prepare`",
                )
            checked += 1
    return checked


def _csv_head(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise MLEBenchImportError(path, f"cannot read the {what}: {exc}") from None


def _under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _pick(public: Path, stem: str, exclude: Path | None) -> Path:
    exact = public / f"{stem}.csv"
    if exact.is_file():
        return exact
    found = sorted(
        p for p in public.glob(f"{stem}*.csv") if exclude is None or p.resolve() != exclude
    )
    if len(found) != 1:
        names = sorted(p.name for p in public.glob("*.csv"))
        raise MLEBenchImportError(
            public, f"expected one {stem}*.csv (tabular or text data), found csv files {names}"
        )
    return found[0]


def import_mlebench(
    competition_dir: Path | str,
    out: Path | str,
    registry: Path | str | None = None,
    metric: str | None = None,
) -> ImportResult:
    """Write ``<out>/<id>.yaml`` (and its leaderboard) for an MLE-bench-prepared competition."""
    from haste_dagster.competitions.registry import freeze_split, load_competition_path
    from haste_dagster.competitions.submission_file import submission_columns

    competition_dir = Path(competition_dir).resolve()
    out = Path(out).resolve()
    slug = competition_dir.name.lower()
    public = competition_dir / "prepared" / "public"
    private = competition_dir / "prepared" / "private"
    if not public.is_dir():
        raise MLEBenchImportError(
            public, f"not prepared: run `mlebench prepare -c {competition_dir.name}` first"
        )
    notes: list[str] = []

    config: dict[str, Any] = {}
    board: pd.DataFrame | None = None
    registry_dir = Path(registry).resolve() if registry is not None else None
    if registry_dir is not None:
        config = _read_config(registry_dir)
        if str(config.get("id", competition_dir.name)) != competition_dir.name:
            raise MLEBenchImportError(
                registry_dir / "config.yaml",
                f"id: {config.get('id')!r} is not the data folder's {competition_dir.name!r}",
            )
    data_root = competition_dir.parent
    dataset = config.get("dataset") or {}
    answers = (
        (data_root / dataset["answers"]).resolve()
        if dataset.get("answers")
        else next(
            (p for p in (private / "test.csv", private / "answers.csv") if p.is_file()),
            private / "test.csv",
        )
    )
    if not answers.is_file() or not _under(answers, private):
        raise MLEBenchImportError(
            answers,
            "missing private answers (prepared/private/): run "
            f"`mlebench prepare -c {competition_dir.name}`",
        )
    if answers.suffix.lower() != ".csv":
        raise MLEBenchImportError(answers, "only csv answers can be imported")
    sample = (
        (data_root / dataset["sample_submission"]).resolve()
        if dataset.get("sample_submission")
        else public / "sample_submission.csv"
    )
    if _under(sample, private):
        # Never point the solver at a file in private/ (benchflow PR #792's leak path).
        notes.append(f"the config's sample submission is under private/; using {public}")
        sample = public / "sample_submission.csv"
    if not sample.is_file():
        raise MLEBenchImportError(sample, "no sample submission in prepared/public/")

    where = registry_dir / "config.yaml" if registry_dir is not None else competition_dir
    grader = (config.get("grader") or {}).get("name")
    if metric is None:
        if grader is None:
            raise MLEBenchImportError(
                where, "no grader.name to take the metric from: pass --registry or --metric"
            )
        metric = metric_for_grader(grader, where)
    elif metric not in METRICS:
        raise MLEBenchImportError(
            where, f"unknown metric {metric!r}; known: {', '.join(sorted(METRICS))}"
        )
    if registry_dir is not None:
        verify_checksums(registry_dir, competition_dir / "prepared")
        board_path = registry_dir / "leaderboard.csv"
        if board_path.is_file():
            board = read_leaderboard(board_path, require=("score",))
        else:
            notes.append(f"no {board_path}: the competition is ungraded (medal null)")

    train_path = _pick(public, "train", sample.resolve())
    test_path = _pick(public, "test", sample.resolve())
    train = _csv_head(train_path, "training data")
    test = _csv_head(test_path, "test features")
    sample_frame = _csv_head(sample, "sample submission")
    answers_frame = _csv_head(answers, "answers")
    id_column = str(sample_frame.columns[0])
    for frame, path in ((test, test_path), (answers_frame, answers)):
        if id_column not in frame.columns:
            raise MLEBenchImportError(
                path, f"no id column {id_column!r} (the sample submission's first column)"
            )
    targets = [c for c in train.columns if c not in test.columns and c != id_column]
    multi = METRICS[metric].multi_target
    if not targets or (len(targets) > 1) != multi:
        raise MLEBenchImportError(
            train_path,
            f"columns only in the training data (the targets): {targets}; {metric} needs "
            + ("several" if multi else "exactly one"),
        )

    features = [c for c in test.columns if c != id_column]
    has_text = any(looks_like_text(test[c]) for c in features if test[c].dtype == object)
    if metric in CLASSIFICATION_METRICS:
        n_classes = int(train[targets[0]].nunique())
        task = "binary" if n_classes == 2 else "multiclass"
        if has_text:
            task, domain = "text_classification", "text"
        else:
            domain = "tabular_classification"
    elif METRICS[metric].prediction == "multilabel":
        task, domain = "binary", "text" if has_text else "tabular_classification"
    else:
        task, domain = "regression", "tabular_regression"
    description_path = public / "description.md"
    description = (
        description_path.read_text(encoding="utf-8") if description_path.is_file() else ""
    )
    definition: dict[str, Any] = {
        "slug": slug,
        "title": str(config.get("name") or competition_dir.name),
        "domain": domain,
        "task": task,
        "source": f"csv:{train_path}",
        "target": targets if multi else targets[0],
        "metric": metric,
        "split": {"test": f"csv:{test_path}", "answers": f"csv:{answers}", "id_column": id_column},
        "sample_submission": str(sample),
        "description": description,
    }

    # Build in a hidden folder beside the output (invisible to definition listings), then
    # move the files in only if the competition loads: a failure leaves nothing behind.
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".import-{slug}-", dir=out))
    try:
        yaml_path = staging / f"{slug}.yaml"
        header = f"# Imported from MLE-bench: {competition_dir}\n"
        yaml_path.write_text(
            header + yaml.safe_dump(definition, sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        board_path_out = None
        if board is not None:
            entries = [
                {"entrant": f"kaggle-{i + 1}", "score": score, "kind": "kaggle"}
                for i, score in enumerate(board["score"])
            ]
            board_path_out = staging / f"{slug}.leaderboard.csv"
            # Sorted best-first by the metric, as grading ranks it.
            write_leaderboard(board_path_out, entries, METRICS[metric].higher_is_better)
        try:
            freeze_split(yaml_path)
            competition = load_competition_path(yaml_path)
            submission_columns(competition)  # the sample's header fits what the metric scores
        except CompetitionDefError as exc:
            field = f" ({exc.field})" if exc.field else ""
            raise MLEBenchImportError(competition_dir, f"{exc.message}{field}") from None
        notes += competition.warnings
        final = out / yaml_path.name
        shutil.move(str(yaml_path), final)
        final_board = None
        if board_path_out is not None:
            final_board = out / board_path_out.name
            shutil.move(str(board_path_out), final_board)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportResult(slug=slug, definition=final, leaderboard=final_board, warnings=notes)

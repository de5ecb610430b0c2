"""A small synthetic competition in MLE-bench's exact on-disk layout (no download).

    <data>/<id>/prepared/public/{train.csv, test.csv, sample_submission.csv, description.md}
    <data>/<id>/prepared/private/test.csv                      (the answers)
    <registry>/<id>/{config.yaml, leaderboard.csv, description.md, grade.py}

Kinds: ``binary`` (AUC, like tabular-playground-series-may-2022), ``multiclass`` (3-class
log loss with one-hot answers, like spooky-author-identification), ``multitarget``
(mean column-wise RMSLE over two targets, like nomad2018) and ``multilabel`` (mean
column-wise ROC AUC over two 0/1 targets, like jigsaw-toxic-comment-classification).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

GRADERS = {
    "binary": "auc-roc",
    "multiclass": "multi-class-log-loss",
    "multitarget": "mean-column-wise-rmsle",
    "multilabel": "mean-column-wise-roc-auc",
}


@dataclass
class Layout:
    competition_id: str
    data_dir: Path  # <data>/<id>
    registry: Path  # <registry>/<id>
    answers: pd.DataFrame
    test: pd.DataFrame

    @property
    def private(self) -> Path:
        return self.data_dir / "prepared" / "private"

    @property
    def public(self) -> Path:
        return self.data_dir / "prepared" / "public"


def _frame(kind: str, rows: int, rng: np.random.Generator, start: int) -> pd.DataFrame:
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    frame = pd.DataFrame(
        {
            "id": np.arange(start, start + rows),
            "x1": x1.round(4),
            "x2": x2.round(4),
            "colour": rng.choice(["red", "green", "blue"], size=rows),
        }
    )
    if kind == "binary":
        frame["target"] = (x1 + 0.3 * rng.normal(size=rows) > 0).astype(int)
    elif kind == "multilabel":
        frame["toxic"] = (x1 + 0.3 * rng.normal(size=rows) > 0).astype(int)
        frame["severe"] = (x2 - 0.5 * (frame["colour"] == "red") > 0.3).astype(int)
    elif kind == "multiclass":
        frame["author"] = np.select([x1 < -0.4, x1 < 0.4], ["EAP", "HPL"], "MWS")
    else:
        frame["energy"] = np.exp(0.3 * x1 + 0.05 * rng.normal(size=rows)).round(4)
        frame["bandgap"] = np.exp(0.2 * x2 + 0.05 * rng.normal(size=rows)).round(4)
    return frame


def write_layout(
    root: Path,
    kind: str = "binary",
    competition_id: str = "synthetic-playground",
    n_train: int = 160,
    n_test: int = 60,
    n_teams: int = 20,
) -> Layout:
    rng = np.random.default_rng(7)
    data_dir = root / "data" / competition_id
    public = data_dir / "prepared" / "public"
    private = data_dir / "prepared" / "private"
    registry = root / "mle-bench" / "mlebench" / "competitions" / competition_id
    for folder in (public, private, registry):
        folder.mkdir(parents=True)

    train = _frame(kind, n_train, rng, 0)
    full_test = _frame(kind, n_test, rng, 10_000)
    targets = [c for c in full_test.columns if c not in ("id", "x1", "x2", "colour")]
    test = full_test.drop(columns=targets)
    if kind == "multiclass":  # Kaggle's log-loss answers are one-hot
        answers = pd.get_dummies(full_test[["id", "author"]], columns=["author"], prefix="")
        answers.columns = ["id", *[c.lstrip("_") for c in answers.columns[1:]]]
        answers = answers.astype({c: int for c in answers.columns[1:]})
        sample = answers.copy()
        sample[["EAP", "HPL", "MWS"]] = 1 / 3
    else:
        answers = full_test[["id", *targets]]
        sample = answers.copy()
        sample[targets] = 0.5 if kind in ("binary", "multilabel") else 1.0
    train.to_csv(public / "train.csv", index=False)
    test.to_csv(public / "test.csv", index=False)
    sample.to_csv(public / "sample_submission.csv", index=False)
    (public / "description.md").write_text(f"# {competition_id}\n\nPredict the target.\n")
    answers.to_csv(private / "test.csv", index=False)

    config = {
        "id": competition_id,
        "name": "Synthetic Playground",
        "competition_type": "simple",
        "awards_medals": True,
        "prizes": None,
        "description": f"mlebench/competitions/{competition_id}/description.md",
        "dataset": {
            "answers": f"{competition_id}/prepared/private/test.csv",
            "sample_submission": f"{competition_id}/prepared/public/sample_submission.csv",
        },
        "grader": {
            "name": GRADERS[kind],
            "grade_fn": f"mlebench.competitions.{competition_id}.grade:grade",
        },
        "preparer": f"mlebench.competitions.{competition_id}.prepare:prepare",
    }
    (registry / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (registry / "description.md").write_text("Predict the target.\n")
    (registry / "grade.py").write_text(
        "def grade(submission, answers):\n    raise NotImplementedError\n"
    )
    lower = kind not in ("binary", "multilabel")
    scores = np.linspace(0.55, 0.95, n_teams)
    scores = scores if lower else scores[::-1]  # Kaggle order: best first
    pd.DataFrame(
        {
            "scoreNullable": scores,
            "teamId": np.arange(1, n_teams + 1) * 101,
            "hasTeamName": True,
            "submissionDate": "2022-05-31 23:00:00",
            "score": scores,
            "hasScore": True,
        }
    ).to_csv(registry / "leaderboard.csv", index=False)
    return Layout(competition_id, data_dir, registry, answers, test)

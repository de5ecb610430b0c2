"""Score predictions on the hidden test split; rank and medal them the MLE-bench way.

Medal thresholds follow MLE-bench's ``Grader.rank_score`` (kaggle.com/progression): with
``n`` teams on the leaderboard, sorted best-first, the threshold is the score at a
1-based position

==============  =====================  =================  ================
teams           gold                   silver             bronze
==============  =====================  =================  ================
1–99            max(1, int(0.1 n))     max(1, int(0.2 n)) max(1, int(0.4 n))
100–249         10                     max(1, int(0.2 n)) max(1, int(0.4 n))
250–999         10 + int(0.002 n)      50                 100
1000+           10 + int(0.002 n)      max(1, int(0.05 n)) max(1, int(0.1 n))
==============  =====================  =================  ================

and a score earns a medal when it is at least as good as the threshold (gold checked
first). The median is the leaderboard's median score; "above median" is strict. As in
MLE-bench's ``Grader.__call__``, the submission's score is rounded to 5 decimals
(:data:`SCORE_DECIMALS`) before it is ranked; the leaderboard's scores are used as written.

Two deliberate differences from MLE-bench's code:

- Direction comes from the metric (``Metric.higher_is_better``); MLE-bench infers it from the
  board (first row < last row means lower is better). They disagree only when the first and
  last rows are equal (one team, or an all-tied board) and the metric is lower-is-better:
  MLE-bench then treats higher as better (an RMSE of 0.3 against a board of 0.5s gets no
  medal), this module gives gold.
- The board is sorted here, best first by the metric's direction; MLE-bench takes the
  positions in file order and so assumes a Kaggle-sorted file. On sorted files both agree.

A competition with neither ``medals:`` in its YAML nor a leaderboard is *ungraded*: it is
scored on the hidden test as usual, and its medal, rank and thresholds are None.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel
from sklearn.exceptions import UndefinedMetricWarning

from haste_dagster.competitions.leaderboard import read_leaderboard
from haste_dagster.competitions.registry import Competition, load_competition
from haste_dagster.errors import HasteError

Medal = Literal["gold", "silver", "bronze", "none"]
N_BOOTSTRAP = 200
BOOTSTRAP_SEED = 0
SCORE_DECIMALS = 5  # MLE-bench rounds a submission's score to 5 decimals before ranking


class PredictionError(HasteError, ValueError):
    """Predictions do not fit the hidden test split (length, ids, shape, NaN, labels)."""


class Thresholds(BaseModel):
    gold: float
    silver: float
    bronze: float
    median: float | None  # None when the thresholds come from the YAML without a leaderboard
    n_teams: int  # leaderboard entrants the thresholds were computed from (0: from the YAML)


class Grade(BaseModel):
    slug: str
    score: float  # the metric on the hidden test, unrounded (ranking uses 5 decimals)
    rank: int | None  # 1-based position among the leaderboard entrants plus this one
    n_teams: int  # leaderboard entrants plus this one (0 without a leaderboard)
    medal: Medal | None  # None: the competition is ungraded (no medals, no leaderboard)
    thresholds: Thresholds | None  # None: ungraded
    above_median: bool | None
    bootstrap_se: float  # standard error of `score` over bootstrap resamples of the test rows


def medal_positions(n_teams: int) -> tuple[int, int, int]:
    """1-based leaderboard positions of the gold, silver and bronze thresholds."""
    n = n_teams
    if n < 1:
        raise ValueError("a leaderboard needs at least one team")
    if n < 100:
        return max(1, int(n * 0.1)), max(1, int(n * 0.2)), max(1, int(n * 0.4))
    if n < 250:
        return 10, max(1, int(n * 0.2)), max(1, int(n * 0.4))
    if n < 1000:
        return 10 + int(n * 0.002), 50, 100
    return 10 + int(n * 0.002), max(1, int(n * 0.05)), max(1, int(n * 0.1))


def medal_thresholds(scores: Sequence[float], higher_is_better: bool) -> Thresholds:
    """Kaggle/MLE-bench thresholds from the leaderboard ``scores`` (any order)."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        raise ValueError("a leaderboard needs at least one team")
    if not np.isfinite(values).all():
        raise ValueError("leaderboard scores must be finite")
    best_first = np.sort(values)[::-1] if higher_is_better else np.sort(values)
    gold, silver, bronze = medal_positions(len(values))
    return Thresholds(
        gold=float(best_first[gold - 1]),
        silver=float(best_first[silver - 1]),
        bronze=float(best_first[bronze - 1]),
        median=float(np.median(values)),
        n_teams=int(values.size),
    )


def rank_score(
    score: float,
    thresholds: Thresholds,
    board_scores: Sequence[float] | None,
    higher_is_better: bool,
) -> tuple[Medal, bool | None, int | None]:
    """(medal, above median, rank) of ``score`` rounded to :data:`SCORE_DECIMALS`.

    ``rank`` is the 1-based position among the board plus this submission (ties share the
    better position, as on Kaggle); None without a board, as is ``above_median`` without a
    median.
    """
    ranked = round(float(score), SCORE_DECIMALS)
    rank = None
    if board_scores is not None:
        others = np.asarray(board_scores, dtype=float)
        better = others > ranked if higher_is_better else others < ranked
        rank = int(better.sum()) + 1
    above = None
    if thresholds.median is not None:
        above = ranked > thresholds.median if higher_is_better else ranked < thresholds.median
    return medal_for(ranked, thresholds, higher_is_better), above, rank


def medal_for(score: float, thresholds: Thresholds, higher_is_better: bool) -> Medal:
    def at_least(threshold: float) -> bool:
        return score >= threshold if higher_is_better else score <= threshold

    if at_least(thresholds.gold):
        return "gold"
    if at_least(thresholds.silver):
        return "silver"
    if at_least(thresholds.bronze):
        return "bronze"
    return "none"


def align_predictions(competition: Competition, predictions: object) -> np.ndarray:
    """Predictions as an array in ``test_features`` order, checked against the metric's kind.

    A Series or DataFrame is matched by its index (row_id); anything else is taken as
    already in ``test_features`` order. Binary probabilities may be given as (n, 2).
    """
    row_ids = competition._test_features["row_id"].to_numpy()
    n = len(row_ids)
    if isinstance(predictions, pd.Series | pd.DataFrame):
        index = predictions.index
        if index.has_duplicates:
            raise PredictionError("predictions index (row_id) has duplicates")
        missing = pd.Index(row_ids).difference(index)
        extra = index.difference(pd.Index(row_ids))
        if len(missing) or len(extra):
            raise PredictionError(
                f"predictions must be indexed by the test row_ids: {len(missing)} missing "
                f"(e.g. {list(missing[:3])}), {len(extra)} unknown (e.g. {list(extra[:3])})"
            )
        predictions = predictions.loc[row_ids]
        if isinstance(predictions, pd.DataFrame):
            # Probability columns in classes order; target columns in the definition's order.
            order = competition.problem.classes or competition.problem.targets
            if order is not None and set(predictions.columns) == set(order):
                predictions = predictions[order]
    kind = competition.metric.prediction
    array = np.asarray(predictions, dtype=object if kind == "label" else float)
    if array.ndim == 0 or array.shape[0] != n:
        raise PredictionError(
            f"expected {n} predictions (one per test row), got shape {array.shape}"
        )
    classes = competition.problem.classes
    if kind == "label":
        if array.ndim != 1:
            raise PredictionError(
                f"{competition.metric.name} needs one label per row, got shape {array.shape}"
            )
        labels = pd.Series(array)
        if labels.isna().any():
            raise PredictionError(f"{int(labels.isna().sum())} prediction(s) are missing")
        unknown = labels[~labels.isin(classes or [])]
        if len(unknown):
            raise PredictionError(
                f"predicted label {unknown.iloc[0]!r} is not a class; classes: {classes}"
            )
        return array
    if not np.isfinite(array).all():
        raise PredictionError(
            f"{int((~np.isfinite(array)).sum())} prediction value(s) are NaN or infinite"
        )
    if kind in ("multilabel", "values"):
        targets = competition.problem.targets or []
        if array.ndim != 2 or array.shape[1] != len(targets):
            raise PredictionError(
                f"expected ({n}, {len(targets)}) predictions, one column per target "
                f"{targets}, got {array.shape}"
            )
        if kind == "values" and competition.metric.name == "mean_columnwise_rmsle":
            if (array < 0).any():
                raise PredictionError(
                    f"{int((array < 0).sum())} prediction(s) are negative; RMSLE needs values ≥ 0"
                )
        return array
    if kind == "value":
        if array.ndim != 1:
            raise PredictionError(
                f"{competition.metric.name} needs one value per row, got shape {array.shape}"
            )
        return array
    k = len(classes or [])
    if k == 2:
        if array.ndim == 2 and array.shape[1] == 2:
            array = array[:, 1]
        if array.ndim != 1:
            raise PredictionError(
                f"binary probabilities must be (n,) for class {classes[1]!r}, got {array.shape}"
            )
        return array
    if array.ndim != 2 or array.shape[1] != k:
        raise PredictionError(
            f"expected ({n}, {k}) class probabilities in order {classes}, got {array.shape}"
        )
    return array


def _encoded(
    competition: Competition, predictions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list | None]:
    """(y_true, y_pred, classes) with labels as integer codes: same scores, faster metrics."""
    answers = competition._answers.to_numpy()
    classes = competition.problem.classes
    if classes is None:
        return answers.astype(float), predictions, None
    codes = list(range(len(classes)))
    y = pd.Categorical(answers, categories=classes).codes.astype(np.int64)
    if competition.metric.prediction == "label":
        predictions = pd.Categorical(predictions, categories=classes).codes.astype(np.int64)
    return y, predictions, codes


def score_hidden(competition: Competition, predictions: object) -> float:
    """The metric on the hidden test split (no leaderboard needed)."""
    array = align_predictions(competition, predictions)
    y, p, classes = _encoded(competition, array)
    return competition.metric(y, p, classes)


def paired_bootstrap(
    competition: Competition,
    predictions_a: object,
    predictions_b: object,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """(mean, standard error) of score(a) − score(b) over shared resamples of the test rows."""
    y, pa, classes = _encoded(competition, align_predictions(competition, predictions_a))
    _, pb, _ = _encoded(competition, align_predictions(competition, predictions_b))
    a, b = _bootstrap(competition, y, [pa, pb], classes, n_resamples, seed)
    diff = a - b
    return float(diff.mean()), float(diff.std(ddof=1))


def _bootstrap(
    competition: Competition,
    y: np.ndarray,
    predictions: list[np.ndarray],
    classes: list | None,
    n_resamples: int,
    seed: int,
) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    metric = competition.metric
    results: list[list[float]] = [[] for _ in predictions]
    with warnings.catch_warnings():
        # A resample with one class only has no AUC (sklearn warns and returns NaN).
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for _ in range(n_resamples):
            idx = rng.integers(0, len(y), size=len(y))
            try:
                scores = [metric(y[idx], p[idx], classes) for p in predictions]
            except ValueError:
                continue  # undefined on this resample: skip it for every submission
            if not all(np.isfinite(scores)):
                continue
            for out, score in zip(results, scores, strict=True):
                out.append(score)
    return [np.asarray(r, dtype=float) for r in results]


def competition_thresholds(
    competition: Competition,
) -> tuple[Thresholds | None, pd.DataFrame | None]:
    """Medal thresholds (YAML medals win over the leaderboard rule) and the leaderboard;
    (None, None) for an ungraded competition. A broken leaderboard raises here, so call it
    before spending compute."""
    d = competition.definition
    higher = competition.metric.higher_is_better
    board = read_leaderboard(d.leaderboard_path) if d.leaderboard_path.is_file() else None
    if board is None and d.medals is None:
        return None, None
    if d.medals is not None:
        median = float(board["score"].median()) if board is not None else None
        n_teams = len(board) if board is not None else 0
        return Thresholds(**d.medals.model_dump(), median=median, n_teams=n_teams), board
    assert board is not None
    return medal_thresholds(board["score"].tolist(), higher), board


def grade(
    competition: Competition | str,
    predictions: object,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> Grade:
    """Score, rank, medal and bootstrap standard error of a submission on the hidden split.

    ``competition`` may be a slug (loaded from the configured definitions folder). An
    ungraded competition gets its score with medal, rank and thresholds None.
    """
    if isinstance(competition, str):
        competition = load_competition(competition)
    thresholds, board = competition_thresholds(competition)
    array = align_predictions(competition, predictions)
    y, p, classes = _encoded(competition, array)
    score = competition.metric(y, p, classes)
    if not np.isfinite(score):
        raise PredictionError(f"{competition.metric.name} of these predictions is {score}")
    higher = competition.metric.higher_is_better
    resampled = _bootstrap(competition, y, [p], classes, n_resamples, seed)[0]
    se = float(resampled.std(ddof=1)) if resampled.size > 1 else float("nan")

    medal = above_median = rank = None
    n_teams = 0
    if thresholds is not None:
        scores = board["score"].tolist() if board is not None else None
        medal, above_median, rank = rank_score(score, thresholds, scores, higher)
        n_teams = len(board) + 1 if board is not None else 0
    return Grade(
        slug=competition.slug,
        score=score,
        rank=rank,
        n_teams=n_teams,
        medal=medal,
        thresholds=thresholds,
        above_median=above_median,
        bootstrap_se=se,
    )

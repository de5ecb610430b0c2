"""Fit the attempt's best spec on all training data, predict the hidden test split, grade.

When the staged pipeline kept its ensemble, the submission is the ensemble: every member
fitted on all training data, their test predictions combined (`solution.ensemble`)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import psycopg

from haste_dagster.agents import records
from haste_dagster.competitions.grading import Grade, grade
from haste_dagster.errors import AttemptStateError, NotFoundError
from haste_dagster.solution.ensemble import fit_predict_ensemble
from haste_dagster.solution.evaluate import fit_predict
from haste_dagster.solution.spec import SolutionSpec

if TYPE_CHECKING:
    from haste_dagster.competitions.registry import Competition


def predictions_to_bytes(predictions: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(predictions), allow_pickle=False)
    return buffer.getvalue()


def predictions_from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def submission_members(attempt: records.AttemptRow) -> list[SolutionSpec]:
    """The specs the submission fits: the kept ensemble's members, else the best spec."""
    ensemble = (attempt.result or {}).get("ensemble") or {}
    if ensemble.get("kept"):
        return [SolutionSpec.model_validate(m["spec"]) for m in ensemble.get("members", [])]
    if attempt.best_spec is None:
        raise AttemptStateError(
            f"attempt {attempt.id} has no best spec yet (status {attempt.status})"
        )
    return [SolutionSpec.model_validate(attempt.best_spec)]


def predict_test(
    competition: Competition, attempt: records.AttemptRow, device: str = "cpu"
) -> np.ndarray:
    """The attempt's predictions on the hidden test features (fitted on all training data)."""
    specs = submission_members(attempt)
    problem, train, test = competition.problem, competition.train, competition.test_features
    if len(specs) > 1:
        return fit_predict_ensemble(specs, problem, train, test, attempt.seed, device=device)
    return fit_predict(specs[0], problem, train, test, attempt.seed, device=device)


def make_submission(
    conn: psycopg.Connection, competition: Competition, attempt_id: int, device: str = "cpu"
) -> Grade:
    """Fit the attempt's best spec (or kept ensemble) on all training data (XGBoost on
    ``device``), predict the hidden test split, grade it and store the graded submission."""
    attempt = records.get_attempt(conn, attempt_id)
    predictions = predict_test(competition, attempt, device)
    result = grade(competition, predictions)
    records.record_grade(
        conn,
        attempt_id,
        test_score=result.score,
        medal=result.medal,
        predictions=predictions_to_bytes(predictions),
        grade=result.model_dump(mode="json"),
    )
    return result


def regrade_stored(
    conn: psycopg.Connection, competition: Competition, attempt_id: int
) -> tuple[Grade, dict]:
    """Re-grade the stored predictions: (fresh grade, stored grade), to check reproducibility."""
    stored = records.load_submission(conn, attempt_id)
    if stored is None:
        raise NotFoundError(f"attempt {attempt_id} has no stored submission")
    data, stored_grade = stored
    return grade(competition, predictions_from_bytes(data)), stored_grade

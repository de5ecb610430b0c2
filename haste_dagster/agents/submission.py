"""Fit the attempt's best spec on all training data, predict the hidden test split, grade."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import psycopg

from haste_dagster.agents import records
from haste_dagster.competitions.grading import Grade, grade
from haste_dagster.errors import AttemptStateError, NotFoundError
from haste_dagster.solution.evaluate import fit_predict
from haste_dagster.solution.spec import SolutionSpec


def predictions_to_bytes(predictions: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(predictions), allow_pickle=False)
    return buffer.getvalue()


def predictions_from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def make_submission(
    conn: psycopg.Connection, competition: Any, attempt_id: int, device: str = "cpu"
) -> Grade:
    """Fit the attempt's best spec on all training data (XGBoost on ``device``), predict the
    hidden test split, grade it and store the graded submission."""
    attempt = records.get_attempt(conn, attempt_id)
    if attempt.best_spec is None:
        raise AttemptStateError(
            f"attempt {attempt_id} has no best spec yet (status {attempt.status})"
        )
    spec = SolutionSpec.model_validate(attempt.best_spec)
    predictions = fit_predict(
        spec,
        competition.problem,
        competition.train,
        competition.test_features,
        attempt.seed,
        device=device,
    )
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
    conn: psycopg.Connection, competition: Any, attempt_id: int
) -> tuple[Grade, dict]:
    """Re-grade the stored predictions: (fresh grade, stored grade), to check reproducibility."""
    stored = records.load_submission(conn, attempt_id)
    if stored is None:
        raise NotFoundError(f"attempt {attempt_id} has no stored submission")
    data, stored_grade = stored
    return grade(competition, predictions_from_bytes(data)), stored_grade

"""Attempt and iteration rows in Postgres: written as they happen, read back to resume.

Every write is its own short transaction so a crash (even SIGKILL) loses at most the
iteration that was running; an iteration row is keyed by (attempt_id, idx), so a
replayed write after resume can never duplicate it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

from haste_dagster.errors import NotFoundError

if TYPE_CHECKING:  # records stay free of the competition loaders
    from haste_dagster.competitions.registry import Competition


@dataclass
class IterationRow:
    attempt_id: int
    idx: int
    patch: dict | None
    rationale: str
    skill_ids: list[str]
    cv_mean: float | None
    cv_std: float | None
    fold_scores: list[float] | None
    kept: bool
    incumbent_before: float | None
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    # the staged pipeline: "screen" | "winner" | "runner_up" | "ensemble"; "main" otherwise
    branch: str = "main"
    spec: dict | None = None  # the whole evaluated spec when it is not incumbent + patch
    detail: dict | None = None  # stage details: prototype name/family, ensemble members

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AttemptRow:
    id: int
    slug: str
    policy: str
    loading: str
    seed: int
    budget_iterations: int
    status: str
    initial_spec: dict | None
    best_spec: dict | None
    best_cv: float | None
    skills_loaded: list[dict] | None = None  # None: not fixed yet (attempts.load_attempt_skills)
    label: str | None = None
    dagster_run_id: str | None = None
    test_score: float | None = None
    medal: str | None = None
    error: str | None = None
    # A sub-attempt (one target of a multi-target competition): its parent and its target.
    parent_id: int | None = None
    target: str | None = None
    pipeline: str = "straight"
    plan: dict | None = None  # the staged pipeline's plan (prototypes, budget split)
    result: dict | None = None


_ATTEMPT_COLUMNS = (
    "id, slug, policy, loading, seed, budget_iterations, status, initial_spec, best_spec, "
    "best_cv, skills_loaded, label, dagster_run_id, test_score, medal, error, parent_id, target, "
    "pipeline, plan, result"
)


def create_attempt(
    conn: psycopg.Connection,
    *,
    slug: str,
    policy: str,
    loading: str,
    seed: int,
    budget_iterations: int,
    label: str | None = None,
    dagster_run_id: str | None = None,
    parent_id: int | None = None,
    target: str | None = None,
    pipeline: str = "straight",
) -> int:
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO attempts (slug, policy, loading, seed, budget_iterations, label,
                                     dagster_run_id, parent_id, target, pipeline)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            (
                slug, policy, loading, seed, budget_iterations, label, dagster_run_id,
                parent_id, target, pipeline,
            ),
        ).fetchone()
    return int(row["id"])


def sub_attempts(conn: psycopg.Connection, parent_id: int) -> dict[str, int]:
    """The sub-attempt id of each target of ``parent_id`` (a multi-target attempt)."""
    rows = conn.execute(
        "SELECT target, id FROM attempts WHERE parent_id = %s ORDER BY id", (parent_id,)
    ).fetchall()
    return {r["target"]: int(r["id"]) for r in rows}


def get_attempt(conn: psycopg.Connection, attempt_id: int) -> AttemptRow:
    row = conn.execute(
        f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE id = %s", (attempt_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no attempt with id {attempt_id}")
    return AttemptRow(**row)


class AttemptSettings(Protocol):
    """What makes two attempts the same run: ``AttemptConfig`` and the assets' run config."""

    @property
    def policy(self) -> str: ...
    @property
    def loading(self) -> str: ...
    @property
    def seed(self) -> int: ...


def never_live(attempt: AttemptRow) -> bool:
    """The CLI's liveness check: asking for ``--resume`` says no other process runs it."""
    return False


def resumable_attempt(
    conn: psycopg.Connection,
    slug: str,
    settings: AttemptSettings,
    *,
    run_is_live: Callable[[AttemptRow], bool] = never_live,
) -> int | None:
    """The one resume rule (CLI, assets and the distributed job): the newest attempt of
    ``slug`` with the same policy, loading and seed that did not finish, or finished without
    a grade, unless ``run_is_live`` says a running process still owns it.

    Ungraded counts as unfinished because skills are written before the grade: a crash
    there is finished by resuming (extraction is idempotent). Other settings never resume:
    the attempt would go on with the policy and seed it was started with, not the ones
    asked for. Only the newest candidate is considered, so a live run is never overtaken
    by resuming an older attempt beside it.
    """
    row = conn.execute(
        f"""SELECT {_ATTEMPT_COLUMNS} FROM attempts
            WHERE slug = %s AND policy = %s AND loading = %s AND seed = %s
              AND (status <> 'finished' OR test_score IS NULL) AND parent_id IS NULL
            ORDER BY id DESC LIMIT 1""",
        (slug, settings.policy, settings.loading, settings.seed),
    ).fetchone()
    if row is None:
        return None
    attempt = AttemptRow(**row)
    return None if run_is_live(attempt) else attempt.id


def set_attempt_start(
    conn: psycopg.Connection, attempt_id: int, initial_spec: dict, skills_loaded: list[dict]
) -> None:
    with conn.transaction():
        conn.execute(
            """UPDATE attempts SET initial_spec = %s, skills_loaded = %s, status = 'running',
                                   error = NULL
               WHERE id = %s""",
            (Jsonb(initial_spec), Jsonb(skills_loaded), attempt_id),
        )


def mark_started(conn: psycopg.Connection, attempt_id: int) -> None:
    """``started_at`` = now, for an attempt that starts running after its row was made (a
    parallel campaign phase creates its attempts' rows early, to fix their skills, and then
    queues them)."""
    with conn.transaction():
        conn.execute("UPDATE attempts SET started_at = now() WHERE id = %s", (attempt_id,))


def set_skills_loaded(
    conn: psycopg.Connection, attempt_id: int, skills_loaded: list[dict]
) -> None:
    """Fix the attempt's skills (once: a second call leaves the first choice)."""
    with conn.transaction():
        conn.execute(
            "UPDATE attempts SET skills_loaded = %s WHERE id = %s AND skills_loaded IS NULL",
            (Jsonb(skills_loaded), attempt_id),
        )


def set_attempt_plan(conn: psycopg.Connection, attempt_id: int, plan: dict) -> None:
    """Store the staged pipeline's plan once; a resume reads it back instead of re-planning."""
    with conn.transaction():
        conn.execute(
            "UPDATE attempts SET plan = %s WHERE id = %s AND plan IS NULL",
            (Jsonb(plan), attempt_id),
        )


def record_iteration(conn: psycopg.Connection, row: IterationRow) -> None:
    """Insert one iteration; a replay of the same (attempt, idx) leaves the first row."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO iterations (attempt_id, idx, patch, rationale, skill_ids, cv_mean,
                   cv_std, fold_scores, kept, incumbent_before, seconds, prompt_tokens,
                   completion_tokens, error, branch, spec, detail)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (attempt_id, idx) DO NOTHING""",
            (
                row.attempt_id,
                row.idx,
                Jsonb(row.patch) if row.patch is not None else None,
                row.rationale,
                Jsonb(row.skill_ids),
                row.cv_mean,
                row.cv_std,
                Jsonb(row.fold_scores) if row.fold_scores is not None else None,
                row.kept,
                row.incumbent_before,
                row.seconds,
                row.prompt_tokens,
                row.completion_tokens,
                row.error,
                row.branch,
                Jsonb(row.spec) if row.spec is not None else None,
                Jsonb(row.detail) if row.detail is not None else None,
            ),
        )
        if row.kept and row.cv_mean is not None and row.branch in ("main", "winner", "runner_up"):
            conn.execute(
                "UPDATE attempts SET best_cv = %s WHERE id = %s", (row.cv_mean, row.attempt_id)
            )


def load_iterations(conn: psycopg.Connection, attempt_id: int) -> list[IterationRow]:
    rows = conn.execute(
        """SELECT attempt_id, idx, patch, rationale, skill_ids, cv_mean, cv_std, fold_scores,
                  kept, incumbent_before, seconds, prompt_tokens, completion_tokens, error,
                  branch, spec, detail
           FROM iterations WHERE attempt_id = %s ORDER BY idx""",
        (attempt_id,),
    ).fetchall()
    return [IterationRow(**r) for r in rows]


def finish_attempt(
    conn: psycopg.Connection,
    attempt_id: int,
    *,
    best_spec: dict,
    best_cv: float | None,
    result: dict,
) -> None:
    with conn.transaction():
        conn.execute(
            """UPDATE attempts SET status = 'finished', best_spec = %s, best_cv = %s,
                   result = %s, finished_at = now(), error = NULL
               WHERE id = %s""",
            (Jsonb(best_spec), best_cv, Jsonb(result), attempt_id),
        )


def fail_attempt(conn: psycopg.Connection, attempt_id: int, error: str) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE attempts SET status = 'failed', error = %s WHERE id = %s",
            (error[:4000], attempt_id),
        )


def record_grade(
    conn: psycopg.Connection,
    attempt_id: int,
    *,
    test_score: float,
    medal: str | None,  # None: an ungraded competition
    predictions: bytes,
    grade: dict,
) -> None:
    """Store the graded submission: the score and medal on the attempt, the predictions
    beside it so the grade can be reproduced later."""
    with conn.transaction():
        conn.execute(
            "UPDATE attempts SET test_score = %s, medal = %s WHERE id = %s",
            (test_score, medal, attempt_id),
        )
        conn.execute(
            """INSERT INTO submissions (attempt_id, predictions, grade)
               VALUES (%s, %s, %s)
               ON CONFLICT (attempt_id) DO UPDATE
               SET predictions = EXCLUDED.predictions, grade = EXCLUDED.grade,
                   created_at = now()""",
            (attempt_id, predictions, Jsonb(grade)),
        )


def load_submission(conn: psycopg.Connection, attempt_id: int) -> tuple[bytes, dict] | None:
    row = conn.execute(
        "SELECT predictions, grade FROM submissions WHERE attempt_id = %s", (attempt_id,)
    ).fetchone()
    return (bytes(row["predictions"]), row["grade"]) if row else None


def record_competition(
    conn: psycopg.Connection, competition: Competition, profile: dict
) -> None:
    """Upsert the competitions row (definition + profile) that reports and queries join on;
    promotion reads the profile of a competition a skill was cross-evaluated on."""
    d = competition.definition
    with conn.transaction():
        conn.execute(
            """INSERT INTO competitions
                   (slug, domain, task, metric, definition, profile, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s, now())
               ON CONFLICT (slug) DO UPDATE SET domain = EXCLUDED.domain, task = EXCLUDED.task,
                   metric = EXCLUDED.metric, definition = EXCLUDED.definition,
                   profile = EXCLUDED.profile, updated_at = now()""",
            (d.slug, d.domain, d.task, d.metric, Jsonb(d.model_dump(mode="json")), Jsonb(profile)),
        )

"""Skill usage: which attempt loaded, applied or screened which skill version, with what
effect, and the statistics read back from it (``SkillStore`` delegates here)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import psycopg

from haste_dagster.errors import SkillError
from haste_dagster.skills.model import Skill

log = logging.getLogger(__name__)


def record_loaded(conn: psycopg.Connection, attempt_id: int, skills: Iterable[Skill]) -> int:
    """Record that ``attempt_id`` loaded these skill versions (idempotent)."""
    rows = [(attempt_id, s.id, s.version) for s in skills if s.id is not None]
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO skill_usage (attempt_id, iteration_idx, skill_id, skill_version,
                   event) VALUES (%s, NULL, %s, %s, 'loaded') ON CONFLICT DO NOTHING""",
            rows,
        )
    return len(rows)


def record_usage(
    conn: psycopg.Connection,
    attempt_id: int,
    iteration_idx: int,
    skill_ids: Iterable[str],
    kept: bool,
    delta: float | None,
    *,
    event: str = "applied",
) -> int:
    """Record that iteration ``iteration_idx`` applied these skills, whether its change
    was kept and its delta (positive = better). The version is the one the attempt
    loaded, else the current one; unknown ids are logged and skipped. Re-recording an
    iteration overwrites kept/delta (a resumed attempt never counts twice).

    ``event='screened'``: the skills were tried outside the iterations (a prototype in
    the screen, the skill-shaped initial spec against the plain-default control) and
    ``delta`` is their effect against the default on the same folds."""
    if event not in ("applied", "screened"):
        raise SkillError(f"usage event {event!r}; allowed: applied, screened")
    ids = sorted(set(skill_ids))
    if not ids:
        return 0
    if delta is not None and not np.isfinite(delta):
        delta = None
    with conn.transaction():
        rows = conn.execute(
            """SELECT s.id, coalesce(
                   (SELECT max(u.skill_version) FROM skill_usage u
                    WHERE u.attempt_id = %s AND u.skill_id = s.id AND u.event = 'loaded'),
                   s.version) AS version
               FROM skills s WHERE s.is_current AND s.id = ANY(%s)""",
            (attempt_id, ids),
        ).fetchall()
        versions = {r["id"]: r["version"] for r in rows}
        for unknown in sorted(set(ids) - set(versions)):
            log.warning("attempt %s iteration %s: unknown skill %s", attempt_id,
                        iteration_idx, unknown)
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO skill_usage (attempt_id, iteration_idx, skill_id,
                       skill_version, event, kept, delta)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (attempt_id, skill_id, event, (COALESCE(iteration_idx, -1)))
                   DO UPDATE SET kept = EXCLUDED.kept, delta = EXCLUDED.delta""",
                [(attempt_id, iteration_idx, i, v, event, kept, delta)
                 for i, v in versions.items()],
            )
    return len(versions)


def measured_effects(
    conn: psycopg.Connection, skill_ids: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """Cross-evaluation evidence: per skill id, every measured use of it (applied in an
    iteration or screened against the default), with the competition it was measured on
    and its delta (positive = better). Promotion reads this beside a skill's own
    evidence."""
    ids = sorted(set(skill_ids))
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    with conn.transaction():
        rows = conn.execute(
            """SELECT u.skill_id, u.attempt_id, u.iteration_idx, u.event, u.kept, u.delta,
                      a.slug
               FROM skill_usage u JOIN attempts a ON a.id = u.attempt_id
               WHERE u.skill_id = ANY(%s) AND u.event IN ('applied', 'screened')
                 AND u.delta IS NOT NULL
               ORDER BY u.skill_id, u.attempt_id, u.iteration_idx""",
            (ids,),
        ).fetchall()
    for r in rows:
        out[r["skill_id"]].append(dict(r))
    return out


def skill_usage(conn: psycopg.Connection, skill_id: str) -> list[dict[str, Any]]:
    """Attempts that loaded or applied the skill, and whether its change was kept."""
    with conn.transaction():
        rows = conn.execute(
            """SELECT attempt_id, slug, loading, loaded, applied, kept, kept_delta,
                      iterations, versions
               FROM skill_attempts WHERE skill_id = %s ORDER BY attempt_id""",
            (skill_id,),
        ).fetchall()
    return [
        {
            **dict(r),
            "applied": int(r["applied"]),
            "iterations": list(r["iterations"] or []),
            "versions": sorted(r["versions"] or []),
        }
        for r in rows
    ]


def attempt_usage(conn: psycopg.Connection, attempt_id: int) -> list[dict[str, Any]]:
    """What became of each skill attempt ``attempt_id`` loaded or applied: the version
    loaded, how many iterations applied it, how many of those were kept, and their
    deltas (positive = better). Ordered by tier (global first), then id."""
    rows = conn.execute(
        """SELECT u.skill_id AS id, max(u.skill_version) AS version,
                  s.tier, s.scope_key, s.title,
                  bool_or(u.event = 'loaded') AS loaded,
                  count(*) FILTER (WHERE u.event = 'applied') AS applied,
                  count(*) FILTER (WHERE u.event = 'applied' AND u.kept) AS kept,
                  avg(u.delta) FILTER (WHERE u.event = 'applied') AS mean_delta,
                  sum(u.delta) FILTER (WHERE u.event = 'applied' AND u.kept) AS kept_delta,
                  array_agg(u.iteration_idx ORDER BY u.iteration_idx)
                      FILTER (WHERE u.event = 'applied') AS iterations
           FROM skill_usage u
           LEFT JOIN skills s ON s.id = u.skill_id AND s.is_current
           WHERE u.attempt_id = %s
           GROUP BY u.skill_id, s.tier, s.scope_key, s.title
           ORDER BY array_position(ARRAY['global', 'domain', 'competition'], s.tier),
                    u.skill_id""",
        (attempt_id,),
    ).fetchall()
    return [
        {**dict(r), "applied": int(r["applied"]), "kept": int(r["kept"]),
         "iterations": list(r["iterations"] or [])}
        for r in rows
    ]


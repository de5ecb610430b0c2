"""The nearest-neighbour query over skill embeddings (HNSW, pgvector) and the fast reading
of its rows into (skill, similarity) pairs (``SkillStore.similar`` and ``scoped_skills``)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from haste_dagster.skills.model import Skill
from haste_dagster.skills.store_rows import COLUMNS, JsonbText, row_to_skill, stats_join


def read_skills(conn: psycopg.Connection, query: str, params: Any = None) -> psycopg.Cursor[Any]:
    """Execute a query whose rows become skills, with the faster jsonb loader on its
    cursor only (the caller's connection keeps its adapters)."""
    cursor = conn.cursor()
    cursor.adapters.register_loader("jsonb", JsonbText)
    return cursor.execute(query, params)


def supports_iterative_scan(conn: psycopg.Connection) -> bool:
    """Whether the server's pgvector has iterative index scans (0.8 and later)."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    major_minor = tuple(int(x) for x in str(row["extversion"]).split(".")[:2])
    return major_minor >= (0, 8)


@functools.lru_cache(maxsize=64)
def _nearest_query(tier: str | None, status: str | None, limit: int) -> str:
    """The search for one (tier, status, limit), built once. All three are literals, not
    parameters, so that the statement psycopg prepares (after 5 executions) gets a generic
    plan as cheap as a custom one and PostgreSQL stops planning it on every execution
    (0.15-0.2 ms of each search). With parameters the generic plan assumed LIMIT 10% of
    the rows, and could not see tier = 'global' to use the partial ``skills_global_hnsw``
    (forced, it searched the whole index: 19.7 ms instead of 0.7 at 100,000 skills), so
    every execution was planned anew."""
    where = ["s.is_current"]
    for column, value in (("tier", tier), ("status", status)):
        if value is not None:  # quoted, and % doubled: the text is still a psycopg query
            literal = sql.Literal(value).as_string().replace("%", "%%")
            where.append(f"s.{column} = {literal}")
    return f"""SELECT n.*, st.* FROM (
            SELECT {COLUMNS}, s.embedding <=> %(v)s AS distance FROM skills s
            WHERE {" AND ".join(where)}
            ORDER BY s.embedding <=> %(v)s LIMIT {int(limit)}) n
        {stats_join("n")}"""


def nearest_cursor(
    conn: psycopg.Connection,
    vector: np.ndarray,
    limit: int,
    tier: str | None,
    status: str | None,
    *,
    iterative_scan: bool,
) -> psycopg.Cursor[Any]:
    """Send the nearest-neighbour query (HNSW index; the partial ``skills_global_hnsw``
    when asking for active global skills) without waiting for its rows, so a caller in
    pipeline mode can batch it with other queries into one round trip."""
    # ef_search bounds how many rows one HNSW scan yields: keep it >= LIMIT. Filtered
    # scans keep searching until LIMIT rows pass the filter with iterative scans
    # (pgvector >= 0.8); without them a rare tier could come back short.
    settings = "set_config('hnsw.ef_search', %s, true)"
    if iterative_scan:
        settings += ", set_config('hnsw.iterative_scan', 'relaxed_order', true)"
    conn.execute(f"SELECT {settings}", (str(min(1000, max(40, int(limit)))),))
    return read_skills(conn, _nearest_query(tier, status, int(limit)), {"v": vector})


def nearest_rows(rows: list[dict[str, Any]]) -> list[tuple[Skill, float]]:
    """(skill, cosine similarity) of each row, most similar first (ties by id)."""
    out = [(row_to_skill(r), 1.0 - float(r["distance"])) for r in rows]
    return sorted(out, key=lambda pair: (-pair[1], pair[0].id or ""))

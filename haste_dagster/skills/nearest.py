"""The nearest-neighbour query over skill embeddings (HNSW, pgvector) and the fast reading
of its rows into (skill, similarity) pairs (``SkillStore.similar`` and ``scoped_skills``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

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
    where, params = ["s.is_current"], []
    if tier is not None:
        where.append("s.tier = %s")
        params.append(tier)
    if status is not None:
        where.append("s.status = %s")
        params.append(status)
    # ef_search bounds how many rows one HNSW scan yields: keep it >= LIMIT. Filtered
    # scans keep searching until LIMIT rows pass the filter with iterative scans
    # (pgvector >= 0.8); without them a rare tier could come back short.
    settings = "set_config('hnsw.ef_search', %s, true)"
    if iterative_scan:
        settings += ", set_config('hnsw.iterative_scan', 'relaxed_order', true)"
    conn.execute(f"SELECT {settings}", (str(min(1000, max(40, int(limit)))),))
    return read_skills(
        conn,
        f"""SELECT n.*, st.* FROM (
                SELECT {COLUMNS}, s.embedding <=> %s AS distance FROM skills s
                WHERE {" AND ".join(where)}
                ORDER BY s.embedding <=> %s LIMIT %s) n
            {stats_join("n")}""",
        [vector, *params, vector, limit],
    )


def nearest_rows(rows: list[dict[str, Any]]) -> list[tuple[Skill, float]]:
    """(skill, cosine similarity) of each row, most similar first (ties by id)."""
    out = [(row_to_skill(r), 1.0 - float(r["distance"])) for r in rows]
    return sorted(out, key=lambda pair: (-pair[1], pair[0].id or ""))

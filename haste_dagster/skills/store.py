"""SkillStore: skills in PostgreSQL + pgvector, scoped loading, usage and lineage.

Every method runs in ``with conn.transaction()``: on an idle connection that is its own
transaction (committed on return), inside a caller's transaction it is a savepoint, so
callers can group store calls atomically. Writes are idempotent: ``add`` of content that
already exists in the same tier and scope returns the existing skill (``INSERT ... ON
CONFLICT DO NOTHING`` on a unique index, so even concurrent adds never duplicate).

Embedding dimension: the ``skills.embedding`` column is ``vector(384)`` because the HNSW
index needs a fixed dimension, and 384 is the default embedder (all-MiniLM-L6-v2). The
store refuses an embedder of another dimension, and an embedder other than the one that
filled the store (``skill_embedding_meta``), with a SkillError. To use OpenAI embeddings,
ask a ``text-embedding-3-*`` model for 384 dimensions (``OpenAIEmbedder`` does by default)
and run ``SkillStore(conn, new_embedder, verify=False).reembed()`` (``haste skills
reembed``) to move an existing store over. A model that cannot produce 384 dimensions
needs a new migration that changes the column type and rebuilds ``skills_embedding_hnsw``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb, JsonbLoader

from haste_dagster.errors import SkillError
from haste_dagster.skills.embeddings import DEFAULT_DIM, Embedder
from haste_dagster.skills.model import (
    Condition,
    Evidence,
    LoadingMode,
    Skill,
    SkillStats,
    canonical_json,
)

log = logging.getLogger(__name__)

EMBEDDING_DIM = DEFAULT_DIM  # the dimension of skills.embedding (migration 0002)
EDGE_KINDS = ("promoted_from", "merged_into", "conflicts_with", "supersedes")

_COLUMNS = """s.id, s.version, s.tier, s.scope_key, s.domain, s.title, s.conditions, s.guidance,
    s.action, s.evidence, s.status, s.created_by, s.parent_ids, s.source_attempt,
    s.dagster_run_id, s.content_hash, s.created_at, s.kind, s.pattern, s.payload"""

# Usage statistics of one skill id, through the skill_usage index (a LATERAL join, so a
# query for a few skills never aggregates the whole usage table).
def _stats_join(alias: str) -> str:
    return _STATS_JOIN_TEMPLATE.replace("{alias}", alias)


# A screened use (tried against the default outside the iterations) counts as an
# application: kept when it beat the default, with its measured delta.
_STATS_JOIN_TEMPLATE = """LEFT JOIN LATERAL (
    SELECT count(DISTINCT u.attempt_id) FILTER (WHERE u.event = 'loaded') AS loaded,
           count(*) FILTER (WHERE u.event <> 'loaded') AS applied,
           count(*) FILTER (WHERE u.event <> 'loaded' AND u.kept) AS kept,
           avg(u.delta) FILTER (WHERE u.event <> 'loaded') AS mean_delta,
           coalesce(sum(u.delta) FILTER (WHERE u.event <> 'loaded' AND u.kept), 0)
               AS kept_delta_sum
    FROM skill_usage u WHERE u.skill_id = {alias}.id) st ON true"""

_INSERT_COLUMNS = """id, version, tier, scope_key, domain, title, conditions, guidance, action,
    evidence, embedding, status, created_by, parent_ids, source_attempt, dagster_run_id,
    content_hash, kind, pattern, payload"""
_N_INSERT = 20

_SELECT = f"SELECT {_COLUMNS}, st.* FROM skills s {_stats_join('s')}"

# Fields a new version may change; anything else (id, version, hash...) is the store's.
_VERSIONED_FIELDS = (
    "tier",
    "scope_key",
    "domain",
    "title",
    "conditions",
    "guidance",
    "action",
    "evidence",
    "status",
    "created_by",
    "parent_ids",
    "source_attempt",
    "dagster_run_id",
    "kind",
    "pattern",
    "payload",
)


_JSON_DECODE = json.JSONDecoder().decode


class _JsonbText(JsonbLoader):
    """jsonb text → Python values, as psycopg's loader gives them, through one decoder:
    ``json.loads`` on bytes first sniffs their encoding, a third of decoding the rows of
    a scoped load (three jsonb columns a row)."""

    def load(self, data: Any) -> Any:
        return _JSON_DECODE(bytes(data).decode())


_FIELDS: dict[type, frozenset[str]] = {}


def _construct(cls: type, values: dict[str, Any]) -> Any:
    """``cls.model_construct(**values)`` for a row that holds every field of ``cls``, at a
    fraction of its cost (pydantic's walks every field for defaults and aliases; decoding is
    most of a scoped load at 100,000 skills). Anything else goes through model_construct."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = frozenset(cls.model_fields)
    if values.keys() != fields:
        return cls.model_construct(**values)
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _stats(row: dict[str, Any]) -> SkillStats:
    return _construct(
        SkillStats,
        {
            "loaded": row["loaded"] or 0,
            "applied": row["applied"] or 0,
            "kept": row["kept"] or 0,
            "mean_delta": row["mean_delta"],
            "kept_delta_sum": float(row["kept_delta_sum"] or 0.0),
        },
    )


def _row_conditions(row: dict[str, Any]) -> list[Condition]:
    return [_construct(Condition, dict(c)) for c in row["conditions"]]


def _row_to_skill(row: dict[str, Any], conditions: list[Condition] | None = None) -> Skill:
    """A Skill from a stored row without re-validation: rows are validated when written and
    never edited (a trigger enforces it), and loading is on the hot path of every attempt.
    ``SkillStore.validate_all`` re-checks every stored version in full. ``conditions``: the
    row's already decoded conditions."""
    data = {k: row[k] for k in ("id", "version", *_VERSIONED_FIELDS, "created_at")}
    data["conditions"] = _row_conditions(row) if conditions is None else conditions
    data["evidence"] = [_construct(Evidence, dict(e)) for e in data["evidence"]]
    data["parent_ids"] = list(data["parent_ids"])
    data["payload"] = dict(data["payload"] or {})
    data.update(stats=_stats(row), content_hash=row["content_hash"], embedding=None)
    return _construct(Skill, data)


def _applicable(rows: list[dict[str, Any]], profile: dict[str, Any]) -> list[Skill]:
    """The rows whose conditions hold on ``profile`` (`Skill.conditions_hold`: every
    `Condition.holds`), decoded; conditions are checked before the rest is decoded."""
    out = []
    for row in rows:
        conditions = _row_conditions(row)
        if all(c.holds(profile) for c in conditions):
            out.append(_row_to_skill(row, conditions))
    return out


def _validated(row: dict[str, Any]) -> Skill:
    data = {k: row[k] for k in ("id", "version", *_VERSIONED_FIELDS, "created_at")}
    try:
        skill = Skill.model_validate({**data, "stats": _stats(row)})
    except (ValueError, SkillError) as exc:
        raise SkillError(
            f"skill {row['id']} v{row['version']}: stored row is invalid: {exc}"
        ) from None
    if skill.content_hash != row["content_hash"]:
        raise SkillError(
            f"skill {row['id']} v{row['version']}: content_hash does not match its content"
        )
    return skill


def describe_profile(slug: str, domain: str, profile: dict[str, Any]) -> str:
    """Text describing a competition, embedded to rank global skills by relevance.

    Phrased like skill guidance ("right-skewed target", "high-cardinality categoricals")
    so the embedding lands near the skills that suit the data.
    """
    p = profile
    parts = [f"Competition {slug} in domain {domain.replace('_', ' ')}."]
    if p.get("task"):
        parts.append(f"Task: {str(p['task']).replace('_', ' ')}.")
    if p.get("rows") is not None:
        parts.append(
            f"{p['rows']} training rows, {p.get('n_features', '?')} features "
            f"({p.get('n_numeric', 0)} numeric, {p.get('n_categorical', 0)} categorical, "
            f"{p.get('n_text', 0)} text, {p.get('n_date', 0)} date)."
        )
    if p.get("has_text"):
        parts.append("Free-text columns: text classification with word and character n-grams.")
    if p.get("is_forecast"):
        parts.append(
            f"Time series forecasting with horizon {p.get('horizon')}: lags, rolling means, "
            "time-ordered validation."
        )
    elif p.get("has_date"):
        parts.append("Date columns: calendar features.")
    skew = p.get("target_skew")
    if isinstance(skew, int | float) and abs(skew) >= 1:
        parts.append(f"Skewed regression target (skew {skew:.2f}): log-transform the target.")
    card = p.get("max_cardinality")
    if isinstance(card, int | float) and card >= 50:
        parts.append(f"High-cardinality categorical columns ({card} levels): target encoding.")
    share = p.get("minority_class_share")
    if isinstance(share, int | float) and share < 0.2:
        parts.append(f"Imbalanced classes (minority share {share:.2f}): class weights.")
    missing = p.get("missing_rate")
    if isinstance(missing, int | float) and missing >= 0.05:
        parts.append(f"Many missing values ({missing:.0%}): imputation, missing indicators.")
    rows = p.get("rows")
    if isinstance(rows, int | float) and rows < 2000:
        parts.append("Small dataset: regularise, fewer and shallower trees.")
    return " ".join(parts)


class SkillStore:
    """Skills of every tier on one connection, embedded with ``embedder``."""

    def __init__(
        self, conn: psycopg.Connection, embedder: Embedder, *, verify: bool = True
    ) -> None:
        """``verify=False`` skips the check that ``embedder`` filled the store, for
        ``reembed``; every other method still refuses a mismatched embedder."""
        if embedder.dim != EMBEDDING_DIM:
            raise SkillError(
                f"embedder {embedder.name!r} has dimension {embedder.dim}, but skill embeddings "
                f"are vector({EMBEDDING_DIM}) (the HNSW index needs one fixed dimension); "
                f"use a {EMBEDDING_DIM}-dimensional embedder (OpenAI text-embedding-3 models "
                f"accept dimensions={EMBEDDING_DIM}) or migrate the column"
            )
        self.conn = conn
        self.embedder = embedder
        self._meta_ok = False
        self._iterative_scan: bool | None = None
        if verify:
            with conn.transaction():
                self._check_meta(write=False)

    # ---- embeddings ---------------------------------------------------------------------

    def _check_meta(self, *, write: bool) -> None:
        """Refuse to mix embedders: the store records the one that filled it."""
        if self._meta_ok:
            return
        row = self.conn.execute("SELECT dim, embedder FROM skill_embedding_meta").fetchone()
        if row is None:
            if not write:
                return
            self.conn.execute(
                """INSERT INTO skill_embedding_meta (dim, embedder) VALUES (%s, %s)
                   ON CONFLICT DO NOTHING""",
                (self.embedder.dim, self.embedder.name),
            )
            row = self.conn.execute("SELECT dim, embedder FROM skill_embedding_meta").fetchone()
        assert row is not None
        if row["dim"] != self.embedder.dim:
            raise SkillError(
                f"this skill store holds {row['dim']}-dimensional embeddings from "
                f"{row['embedder']!r}; embedder {self.embedder.name!r} gives {self.embedder.dim} "
                "dimensions, and dimensions cannot be mixed"
            )
        if row["embedder"] != self.embedder.name:
            raise SkillError(
                f"this skill store was embedded with {row['embedder']!r}, not "
                f"{self.embedder.name!r}; vectors of different models cannot be compared. Set "
                "HASTE_EMBEDDINGS to match, or run `haste skills reembed` to switch the store"
            )
        self._meta_ok = True

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        if vectors.shape != (len(texts), EMBEDDING_DIM):
            raise SkillError(
                f"embedder {self.embedder.name!r} returned shape {vectors.shape}, expected "
                f"({len(texts)}, {EMBEDDING_DIM}); dimensions cannot be mixed"
            )
        return vectors

    def reembed(self) -> int:
        """Re-embed every stored version with this store's embedder and record it as the
        store's embedder; returns the number of rows rewritten."""
        with self.conn.transaction():
            self.conn.execute("LOCK TABLE skill_embedding_meta IN EXCLUSIVE MODE")
            rows = self.conn.execute(f"{_SELECT} ORDER BY s.pk").fetchall()
            skills = [_row_to_skill(r) for r in rows]
            for start in range(0, len(skills), 256):
                chunk = skills[start : start + 256]
                vectors = self.embed([s.embedding_text() for s in chunk])
                with self.conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE skills SET embedding = %s WHERE id = %s AND version = %s",
                        [(v, s.id, s.version) for s, v in zip(chunk, vectors, strict=True)],
                    )
            self.conn.execute("DELETE FROM skill_embedding_meta")
            self.conn.execute(
                "INSERT INTO skill_embedding_meta (dim, embedder) VALUES (%s, %s)",
                (self.embedder.dim, self.embedder.name),
            )
        self._meta_ok = True
        return len(skills)

    # ---- writing --------------------------------------------------------------------------

    def add(self, skill: Skill) -> Skill:
        """Store ``skill`` (its first version unless it carries an id and version, as on
        import) and return the stored skill. Content already present in the same tier and
        scope returns the existing skill; new evidence for it makes a new version."""
        return self.add_many([skill])[0]

    def add_many(self, skills: Sequence[Skill], vectors: np.ndarray | None = None) -> list[Skill]:
        """``add`` for many skills with batched inserts; ``vectors`` (one row per skill)
        skips the embedder (the store benchmark uses random unit vectors)."""
        if not skills:
            return []
        if vectors is None:
            vectors = self.embed([s.embedding_text() for s in skills])
        elif vectors.shape != (len(skills), EMBEDDING_DIM):
            raise SkillError(f"vectors of shape {vectors.shape}; expected ({len(skills)}, 384)")
        with self.conn.transaction():
            self._check_meta(write=True)
            params = [self._insert_params(s, v) for s, v in zip(skills, vectors, strict=True)]
            with self.conn.cursor() as cur:
                cur.executemany(
                    f"""INSERT INTO skills ({_INSERT_COLUMNS})
                       VALUES ({", ".join(["%s"] * _N_INSERT)})
                       ON CONFLICT DO NOTHING""",
                    params,
                )
            return self._resolve_added(skills)

    def _insert_params(self, skill: Skill, vector: np.ndarray) -> tuple[Any, ...]:
        return (
            skill.id or skill.new_id(),
            skill.version,
            skill.tier,
            skill.scope_key,
            skill.domain,
            skill.title,
            Jsonb([c.model_dump(mode="json") for c in skill.conditions]),
            skill.guidance,
            Jsonb(skill.action) if skill.action is not None else None,
            Jsonb([e.model_dump(mode="json") for e in skill.evidence]),
            vector,
            skill.status,
            skill.created_by,
            Jsonb(skill.parent_ids),
            skill.source_attempt,
            skill.dagster_run_id,
            skill.content_hash,
            skill.kind,
            skill.pattern,
            Jsonb(skill.payload),
        )

    def _resolve_added(self, skills: Sequence[Skill]) -> list[Skill]:
        """The stored skill for each of ``skills`` after their inserts (some of which did
        nothing because the content or the id was already there)."""
        rows = self.conn.execute(
            f"{_SELECT} WHERE s.is_current AND s.content_hash = ANY(%s)",
            (sorted({s.content_hash for s in skills}),),
        ).fetchall()
        found = {
            (r["tier"], r["scope_key"] or "", r["content_hash"]): _row_to_skill(r) for r in rows
        }
        out: list[Skill] = []
        for skill in skills:
            key = (skill.tier, skill.scope_key or "", skill.content_hash)
            stored = found.get(key)
            if stored is None:  # the id existed with other content (a later version)
                row = self.conn.execute(
                    f"{_SELECT} WHERE s.id = %s AND s.is_current", (skill.id or skill.new_id(),)
                ).fetchone()
                if row is None:
                    raise SkillError(f"skill {skill.title!r} could not be stored")
                stored = _row_to_skill(row)
            new_evidence = [e for e in skill.evidence if e not in stored.evidence]
            same = stored.content_hash == skill.content_hash
            if new_evidence and stored.status == "active" and same:
                # Same pattern measured again: keep one skill, with the evidence of both.
                run = {"dagster_run_id": skill.dagster_run_id} if skill.dagster_run_id else {}
                stored = self.new_version(
                    stored.id or "", evidence=[*stored.evidence, *new_evidence], **run
                )
                found[key] = stored
            out.append(stored)
        return out

    def new_version(self, skill_id: str, **changes: Any) -> Skill:
        """A new version of ``skill_id`` with ``changes`` applied (skills are never edited
        in place); returns the current version unchanged if nothing would change."""
        unknown = set(changes) - set(_VERSIONED_FIELDS)
        if unknown:
            raise SkillError(
                f"skill {skill_id}: cannot change {sorted(unknown)}; "
                f"changeable: {', '.join(_VERSIONED_FIELDS)}"
            )
        with self.conn.transaction():
            self._check_meta(write=True)
            row = self.conn.execute(
                f"""{_SELECT} WHERE s.id = %s AND s.is_current FOR UPDATE OF s""", (skill_id,)
            ).fetchone()
            if row is None:
                raise SkillError(f"no skill with id {skill_id!r}")
            current = _row_to_skill(row)
            data = current.model_dump(include=set(_VERSIONED_FIELDS))
            data.update(changes)
            data.update(id=skill_id, version=current.version + 1)
            try:
                new = Skill.model_validate(data)
            except ValueError as exc:
                raise SkillError(f"skill {skill_id}: invalid change: {exc}") from None
            if _same_version(current, new):
                return current
            if new.embedding_text() == current.embedding_text():
                vector = self.conn.execute(
                    "SELECT embedding FROM skills WHERE id = %s AND version = %s",
                    (skill_id, current.version),
                ).fetchone()["embedding"]
            else:
                vector = self.embed([new.embedding_text()])[0]
            self.conn.execute(
                "UPDATE skills SET is_current = false WHERE id = %s AND version = %s",
                (skill_id, current.version),
            )
            try:
                with self.conn.transaction():
                    self.conn.execute(
                        f"""INSERT INTO skills ({_INSERT_COLUMNS})
                           VALUES ({", ".join(["%s"] * _N_INSERT)})""",
                        self._insert_params(new, vector),
                    )
            except psycopg.errors.UniqueViolation:
                raise SkillError(
                    f"skill {skill_id}: the new content duplicates another current skill in "
                    f"{new.tier} {new.scope_key or ''}".rstrip()
                ) from None
            self._insert_edge(skill_id, new.version, skill_id, current.version, "supersedes")
            return self.get(skill_id)

    def add_edge(
        self,
        src: Skill,
        dst: Skill,
        kind: str,
        *,
        conditions: Iterable[Condition] = (),
        reason: str = "",
    ) -> bool:
        """An edge between two stored skill versions; False if it was already there."""
        if kind not in EDGE_KINDS:
            raise SkillError(f"edge kind {kind!r}; allowed: {', '.join(EDGE_KINDS)}")
        if src.id is None or dst.id is None:
            raise SkillError("edges link stored skills (with ids)")
        with self.conn.transaction():
            return self._insert_edge(
                src.id, src.version, dst.id, dst.version, kind, list(conditions), reason
            )

    def _insert_edge(
        self,
        src_id: str,
        src_version: int,
        dst_id: str,
        dst_version: int,
        kind: str,
        conditions: list[Condition] | None = None,
        reason: str = "",
    ) -> bool:
        cur = self.conn.execute(
            """INSERT INTO skill_edges (src_id, src_version, dst_id, dst_version, kind,
                   conditions, reason)
               VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            (
                src_id,
                src_version,
                dst_id,
                dst_version,
                kind,
                Jsonb([c.model_dump(mode="json") for c in conditions or []]),
                reason,
            ),
        )
        return cur.rowcount == 1

    def has_edge(self, src_id: str, dst_id: str, kind: str) -> bool:
        """Whether any versions of the two skills are linked by ``kind``."""
        with self.conn.transaction():
            row = self.conn.execute(
                "SELECT 1 FROM skill_edges WHERE src_id = %s AND dst_id = %s AND kind = %s",
                (src_id, dst_id, kind),
            ).fetchone()
        return row is not None

    def edges(self, skill_id: str | None = None) -> list[dict[str, Any]]:
        """Edges touching ``skill_id`` (any version), or every edge, oldest first."""
        with self.conn.transaction():
            where, params = ("WHERE src_id = %s OR dst_id = %s", (skill_id, skill_id))
            if skill_id is None:
                where, params = "", ()
            rows = self.conn.execute(
                f"""SELECT src_id, src_version, dst_id, dst_version, kind, conditions, reason
                    FROM skill_edges {where} ORDER BY id""",
                params,
            ).fetchall()
        return [dict(r) for r in rows]

    # ---- reading --------------------------------------------------------------------------

    def get(self, skill_id: str, version: int | None = None) -> Skill:
        """A version of a skill (the current one by default); SkillError if there is none."""
        with self.conn.transaction():
            if version is None:
                row = self.conn.execute(
                    f"{_SELECT} WHERE s.id = %s AND s.is_current", (skill_id,)
                ).fetchone()
            else:
                row = self.conn.execute(
                    f"{_SELECT} WHERE s.id = %s AND s.version = %s", (skill_id, version)
                ).fetchone()
        if row is None:
            which = f" version {version}" if version is not None else ""
            raise SkillError(f"no skill with id {skill_id!r}{which}")
        return _row_to_skill(row)

    def versions(self, skill_id: str) -> list[Skill]:
        with self.conn.transaction():
            rows = self.conn.execute(
                f"{_SELECT} WHERE s.id = %s ORDER BY s.version", (skill_id,)
            ).fetchall()
        return [_row_to_skill(r) for r in rows]

    def list(
        self,
        tier: str | None = None,
        scope_key: str | None = None,
        status: str | None = "active",
        *,
        domain: str | None = None,
        kind: str | None = None,
    ) -> list[Skill]:
        """Current versions, filtered; ``status=None`` lists every status. Ordered by tier
        (global, domain, competition), scope and id."""
        where, params = ["s.is_current"], []
        for column, value in (
            ("tier", tier),
            ("scope_key", scope_key),
            ("status", status),
            ("domain", domain),
            ("kind", kind),
        ):
            if value is not None:
                where.append(f"s.{column} = %s")
                params.append(value)
        with self.conn.transaction():
            rows = self.conn.execute(
                f"""{_SELECT} WHERE {" AND ".join(where)}
                    ORDER BY array_position(ARRAY['global','domain','competition'], s.tier),
                             s.scope_key NULLS FIRST, s.id""",
                params,
            ).fetchall()
        return [_row_to_skill(r) for r in rows]

    def count(self) -> int:
        with self.conn.transaction():
            row = self.conn.execute("SELECT count(*) AS n FROM skills WHERE is_current").fetchone()
        return int(row["n"])

    def _read(self, query: str, params: Any = None) -> psycopg.Cursor[Any]:
        """Execute a query whose rows become skills, with the faster jsonb loader on its
        cursor only (the caller's connection keeps its adapters)."""
        cursor = self.conn.cursor()
        cursor.adapters.register_loader("jsonb", _JsonbText)
        return cursor.execute(query, params)

    def _vector_version_checked(self) -> None:
        if self._iterative_scan is None:
            row = self.conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
            major_minor = tuple(int(x) for x in str(row["extversion"]).split(".")[:2])
            self._iterative_scan = major_minor >= (0, 8)

    def _nearest_cursor(
        self, vector: np.ndarray, limit: int, tier: str | None, status: str | None
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
        if self._iterative_scan:
            settings += ", set_config('hnsw.iterative_scan', 'relaxed_order', true)"
        self.conn.execute(f"SELECT {settings}", (str(min(1000, max(40, int(limit)))),))
        return self._read(
            f"""SELECT n.*, st.* FROM (
                    SELECT {_COLUMNS}, s.embedding <=> %s AS distance FROM skills s
                    WHERE {" AND ".join(where)}
                    ORDER BY s.embedding <=> %s LIMIT %s) n
                {_stats_join("n")}""",
            [vector, *params, vector, limit],
        )

    @staticmethod
    def _nearest_rows(rows: list[dict[str, Any]]) -> list[tuple[Skill, float]]:
        out = [(_row_to_skill(r), 1.0 - float(r["distance"])) for r in rows]
        return sorted(out, key=lambda pair: (-pair[1], pair[0].id or ""))

    def _nearest(
        self, vector: np.ndarray, limit: int, tier: str | None, status: str | None
    ) -> list[tuple[Skill, float]]:
        """Current skills nearest to ``vector`` by cosine distance, with similarities."""
        self._vector_version_checked()
        return self._nearest_rows(self._nearest_cursor(vector, limit, tier, status).fetchall())

    def similar(
        self, text: str, k: int = 10, *, tier: str | None = None, status: str | None = "active"
    ) -> list[tuple[Skill, float]]:
        """The ``k`` current skills most similar to ``text``, with cosine similarities."""
        vector = self.embed([text])[0]
        if not self._meta_ok or self._iterative_scan is None:
            with self.conn.transaction():
                self._check_meta(write=False)
                self._vector_version_checked()
        # BEGIN, the HNSW settings, the search and COMMIT in one round trip (as scoped_skills)
        with self.conn.pipeline(), self.conn.transaction():
            cursor = self._nearest_cursor(vector, k, tier, status)
            rows = cursor.fetchall()
        return self._nearest_rows(rows)

    def scoped_skills(
        self,
        slug: str,
        domain: str,
        profile: dict[str, Any],
        mode: LoadingMode | str = "tiered",
        top_k_global: int = 8,
    ) -> list[Skill]:
        """The skills an attempt on competition ``slug`` (of ``domain``) loads.

        * ``none``: no skills.
        * ``flat``: every active skill of every tier and scope, conditions ignored.
        * ``tiered``: active skills whose conditions hold on ``profile``: the competition's
          own skills, its domain's skills, up to ``MAX_CANDIDATES`` *cross-evaluation
          candidates* (recipes and rules of other competitions of the domain whose pattern
          has no domain or global skill yet: tried here so that evidence of transfer can
          accumulate; see ``cross_candidates``), and the ``top_k_global`` global skills most
          relevant to the competition (cosine similarity of their embedding to
          ``describe_profile``; near-ties, to 3 decimals, broken by utility).

        Ordered competition, domain, global (narrowest scope first); within a tier by
        relevance (global) or utility (others).
        """
        if mode == "none":
            return []
        if mode == "flat":
            return self.list(status="active")
        if mode != "tiered":
            raise SkillError(f"loading mode {mode!r}; choose tiered, flat or none")
        query = self.embed([describe_profile(slug, domain, profile)])[0]
        limit = max(4 * top_k_global, 32)
        if not self._meta_ok or self._iterative_scan is None:
            with self.conn.transaction():
                self._check_meta(write=False)
                self._vector_version_checked()
        # One round trip for the common case: BEGIN, the scoped query, the HNSW settings and
        # the global search, COMMIT, all pipelined (each round trip costs a context switch,
        # which is what makes latency tails on a busy machine). Conditions are checked here
        # in Python (`_applicable`), not by skill_conditions_may_hold in SQL: that function
        # cost more per row than fetching the row (EXPLAIN ANALYZE in docs/benchmarks.md).
        with self.conn.pipeline(), self.conn.transaction():
            scoped_cursor = self._read(
                f"""{_SELECT} WHERE s.is_current AND s.status = 'active'
                    AND ((s.tier = 'competition' AND s.scope_key = %s)
                         OR (s.tier = 'domain' AND s.scope_key = %s)
                         OR (s.tier = 'competition' AND s.domain = %s AND s.scope_key <> %s
                             AND s.kind IN ('recipe', 'rule')
                             AND NOT s.payload ? 'hurt'))""",
                (slug, domain, domain, slug),
            )
            nearest_cursor = (
                self._nearest_cursor(query, limit, "global", "active") if top_k_global > 0
                else None
            )
            rows = scoped_cursor.fetchall()
            nearest = self._nearest_rows(nearest_cursor.fetchall()) if nearest_cursor else []
        scoped = _applicable(rows, profile)
        globals_ = self._top_global(query, profile, top_k_global, nearest, limit)

        def by_utility(s: Skill) -> tuple[Any, ...]:
            return (-s.utility, s.id)

        own = [s for s in scoped if s.tier != "competition" or s.scope_key == slug]
        competition = sorted((s for s in own if s.tier == "competition"), key=by_utility)
        domain_skills = sorted((s for s in own if s.tier == "domain"), key=by_utility)
        candidates = cross_candidates(
            [s for s in scoped if s.tier == "competition" and s.scope_key != slug],
            {s.pattern for s in [*domain_skills, *globals_] if s.pattern},
        )
        return [*competition, *domain_skills, *candidates, *globals_]

    def _top_global(
        self,
        query: np.ndarray,
        profile: dict[str, Any],
        k: int,
        found: list[tuple[Skill, float]],
        limit: int,
    ) -> list[Skill]:
        """The ``k`` most relevant applicable globals from ``found`` (the ``limit`` nearest),
        searching further while too few of them apply."""
        if k <= 0:
            return []
        while True:
            applicable = [(s, sim) for s, sim in found if s.conditions_hold(profile)]
            if len(applicable) >= k or len(found) < limit:
                break
            limit *= 4  # many nearby globals do not apply here: look further
            with self.conn.transaction():
                found = self._nearest(query, limit, "global", "active")
        applicable.sort(key=lambda p: (-round(p[1], 3), -p[0].utility, p[0].id))
        return [s for s, _ in applicable[:k]]

    # ---- usage ----------------------------------------------------------------------------

    def record_loaded(self, attempt_id: int, skills: Iterable[Skill]) -> int:
        """Record that ``attempt_id`` loaded these skill versions (idempotent)."""
        rows = [(attempt_id, s.id, s.version) for s in skills if s.id is not None]
        if not rows:
            return 0
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO skill_usage (attempt_id, iteration_idx, skill_id, skill_version,
                       event) VALUES (%s, NULL, %s, %s, 'loaded') ON CONFLICT DO NOTHING""",
                rows,
            )
        return len(rows)

    def record_usage(
        self,
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
        with self.conn.transaction():
            rows = self.conn.execute(
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
            with self.conn.cursor() as cur:
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

    def measured_effects(self, skill_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Cross-evaluation evidence: per skill id, every measured use of it (applied in an
        iteration or screened against the default), with the competition it was measured on
        and its delta (positive = better). Promotion reads this beside a skill's own
        evidence."""
        ids = sorted(set(skill_ids))
        out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if not ids:
            return out
        with self.conn.transaction():
            rows = self.conn.execute(
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

    def utility(self, skill_id: str) -> float:
        """Expected improvement per application (see ``Skill.utility``); 0 if never tried."""
        return self.get(skill_id).utility

    def usage(self, skill_id: str) -> list[dict[str, Any]]:
        """Attempts that loaded or applied the skill, and whether its change was kept."""
        with self.conn.transaction():
            rows = self.conn.execute(
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

    def attempt_usage(self, attempt_id: int) -> list[dict[str, Any]]:
        """What became of each skill attempt ``attempt_id`` loaded or applied: the version
        loaded, how many iterations applied it, how many of those were kept, and their
        deltas (positive = better). Ordered by tier (global first), then id."""
        rows = self.conn.execute(
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

    def validate_all(self) -> list[str]:
        """Problems found by re-validating every stored version and edge (empty = valid):
        schema, content hash, and that each edge's ends are stored skill versions."""
        problems: list[str] = []
        with self.conn.transaction():
            for row in self.conn.execute(f"{_SELECT} ORDER BY s.id, s.version").fetchall():
                try:
                    _validated(row)
                except SkillError as exc:
                    problems.append(str(exc))
            dangling = self.conn.execute(
                """SELECT e.src_id, e.src_version, e.dst_id, e.dst_version, e.kind
                   FROM skill_edges e
                   LEFT JOIN skills a ON a.id = e.src_id AND a.version = e.src_version
                   LEFT JOIN skills b ON b.id = e.dst_id AND b.version = e.dst_version
                   WHERE a.pk IS NULL OR b.pk IS NULL"""
            ).fetchall()
        problems += [
            f"edge {r['kind']} {r['src_id']} v{r['src_version']} -> {r['dst_id']} "
            f"v{r['dst_version']} does not resolve"
            for r in dangling
        ]
        return problems

    # ---- lineage --------------------------------------------------------------------------

    def lineage(self, skill_id: str) -> dict[str, Any]:
        """The skill's graph neighbourhood as JSON-ready data.

        * ``ancestors``: skills it was promoted from and skills merged into it, recursively
          (each with its evidence attempts);
        * ``descendants``: skills promoted from it and the skill it was merged into,
          recursively;
        * ``conflicts``: skills it conflicts with, with the conditions each holds under;
        * ``versions``: its version history;
        * ``attempts``: attempts that loaded or applied it (kept, delta);
        * ``source_attempts``: attempts behind its evidence and its ancestors' evidence.
        """
        root = self.get(skill_id)
        with self.conn.transaction():
            ancestors = self._walk(skill_id, up=True)
            descendants = self._walk(skill_id, up=False)
            conflicts = self.conn.execute(
                """SELECT DISTINCT ON (e.dst_id) e.dst_id AS id, e.conditions, e.reason,
                          back.conditions AS their_conditions
                   FROM skill_edges e
                   LEFT JOIN skill_edges back ON back.kind = 'conflicts_with'
                        AND back.src_id = e.dst_id AND back.dst_id = e.src_id
                   WHERE e.kind = 'conflicts_with' AND e.src_id = %s
                   ORDER BY e.dst_id, e.id DESC""",
                (skill_id,),
            ).fetchall()
            source_ids = sorted(
                {a for s in [root, *(n["skill"] for n in ancestors)] for a in _attempt_ids(s)}
            )
            known = {
                r["id"]: dict(r)
                for r in self.conn.execute(
                    """SELECT id, slug, loading, status, best_cv, test_score, medal
                       FROM attempts WHERE id = ANY(%s)""",
                    (source_ids,),
                ).fetchall()
            }
        return {
            "skill": _node(root),
            "versions": [
                {"version": v.version, "status": v.status, "created_by": v.created_by,
                 "content_hash": v.content_hash}
                for v in self.versions(skill_id)
            ],
            "ancestors": [
                {**_node(n["skill"]), "via": n["via"], "depth": n["depth"], "of": n["of"]}
                for n in ancestors
            ],
            "descendants": [
                {**_node(n["skill"]), "via": n["via"], "depth": n["depth"], "of": n["of"]}
                for n in descendants
            ],
            "conflicts": [
                {
                    "id": r["id"],
                    "conditions": r["conditions"],
                    "their_conditions": r["their_conditions"],
                    "reason": r["reason"],
                }
                for r in conflicts
            ],
            "attempts": self.usage(skill_id),
            "source_attempts": [
                known.get(a, {"id": a, "slug": None, "note": "not in this database"})
                for a in source_ids
            ],
        }

    def _walk(self, skill_id: str, *, up: bool) -> list[dict[str, Any]]:
        """Breadth-first over promoted_from / merged_into edges (ids, any version)."""
        # up: promoted_from src→dst (sources), merged_into dst←src (skills merged into it).
        # down: the reverse of both.
        forward, backward = ("promoted_from", "merged_into")
        if not up:
            forward, backward = backward, forward
        seen = {skill_id}
        frontier = [skill_id]
        out: list[dict[str, Any]] = []
        depth = 0
        while frontier and depth < 50:
            depth += 1
            rows = self.conn.execute(
                """SELECT DISTINCT src_id AS here, dst_id AS there, kind FROM skill_edges
                   WHERE kind = %s AND src_id = ANY(%s)
                   UNION
                   SELECT DISTINCT dst_id AS here, src_id AS there, kind FROM skill_edges
                   WHERE kind = %s AND dst_id = ANY(%s)
                   ORDER BY there""",
                (forward, frontier, backward, frontier),
            ).fetchall()
            nxt = []
            for r in rows:
                if r["there"] in seen:
                    continue
                seen.add(r["there"])
                nxt.append(r["there"])
                out.append(
                    {"skill": self.get(r["there"]), "via": r["kind"], "depth": depth,
                     "of": r["here"]}
                )
            frontier = nxt
        return out


MAX_CANDIDATES = 4  # cross-evaluation candidates an attempt loads


def cross_candidates(skills: Sequence[Skill], covered: set[str]) -> list[Skill]:
    """Recipes and rules learnt on other competitions of the domain, to be tried (and their
    measured effect recorded) here: one per pattern not covered by a promoted skill, best
    measured effect first, at most ``MAX_CANDIDATES``; recipes first (one prototype each)."""
    best: dict[str, Skill] = {}
    for s in skills:
        if not s.pattern or s.pattern in covered or (s.effect or 0.0) <= 0:
            continue
        if s.pattern not in best or (s.effect or 0.0) > (best[s.pattern].effect or 0.0):
            best[s.pattern] = s
    ranked = sorted(best.values(), key=lambda s: (s.kind != "recipe", -(s.effect or 0.0), s.id))
    return ranked[:MAX_CANDIDATES]


def _attempt_ids(skill: Skill) -> set[int]:
    ids = {e.attempt_id for e in skill.evidence if e.attempt_id is not None}
    if skill.source_attempt is not None:
        ids.add(skill.source_attempt)
    return ids


def _node(skill: Skill) -> dict[str, Any]:
    return {
        "id": skill.id,
        "version": skill.version,
        "tier": skill.tier,
        "scope_key": skill.scope_key,
        "title": skill.title,
        "status": skill.status,
        "created_by": skill.created_by,
        "utility": skill.utility,
        "evidence": [e.model_dump(mode="json") for e in skill.evidence],
        "source_attempt": skill.source_attempt,
    }


def _same_version(a: Skill, b: Skill) -> bool:
    """Equal in everything a version records (creator and run aside: re-stating is no
    change, so a later run promoting the same pattern keeps the version that first did)."""
    fields = set(_VERSIONED_FIELDS) - {"created_by", "dagster_run_id"}
    return canonical_json(a.model_dump(mode="json", include=fields)) == canonical_json(
        b.model_dump(mode="json", include=fields)
    )

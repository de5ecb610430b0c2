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

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from haste_dagster.errors import SkillError
from haste_dagster.skills import lineage, usage
from haste_dagster.skills.embeddings import DEFAULT_DIM, Embedder
from haste_dagster.skills.model import Condition, LoadingMode, Skill
from haste_dagster.skills.nearest import (
    nearest_cursor,
    nearest_rows,
    read_skills,
    supports_iterative_scan,
)
from haste_dagster.skills.scope import cross_candidates, describe_profile
from haste_dagster.skills.store_rows import (
    INSERT_COLUMNS,
    N_INSERT,
    SELECT_CANDIDATES,
    SELECT_SKILLS,
    VERSIONED_FIELDS,
    applicable_candidates,
    applicable_skills,
    row_to_skill,
    same_version,
)

log = logging.getLogger(__name__)

EMBEDDING_DIM = DEFAULT_DIM  # the dimension of skills.embedding (migration 0002)
EDGE_KINDS = ("promoted_from", "merged_into", "conflicts_with", "supersedes")


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
            rows = self.conn.execute(f"{SELECT_SKILLS} ORDER BY s.pk").fetchall()
            skills = [row_to_skill(r) for r in rows]
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
                    f"""INSERT INTO skills ({INSERT_COLUMNS})
                       VALUES ({", ".join(["%s"] * N_INSERT)})
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
            f"{SELECT_SKILLS} WHERE s.is_current AND s.content_hash = ANY(%s)",
            (sorted({s.content_hash for s in skills}),),
        ).fetchall()
        found = {
            (r["tier"], r["scope_key"] or "", r["content_hash"]): row_to_skill(r) for r in rows
        }
        out: list[Skill] = []
        for skill in skills:
            key = (skill.tier, skill.scope_key or "", skill.content_hash)
            stored = found.get(key)
            if stored is None:  # the id existed with other content (a later version)
                row = self.conn.execute(
                    f"{SELECT_SKILLS} WHERE s.id = %s AND s.is_current",
                    (skill.id or skill.new_id(),),
                ).fetchone()
                if row is None:
                    raise SkillError(f"skill {skill.title!r} could not be stored")
                stored = row_to_skill(row)
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
        unknown = set(changes) - set(VERSIONED_FIELDS)
        if unknown:
            raise SkillError(
                f"skill {skill_id}: cannot change {sorted(unknown)}; "
                f"changeable: {', '.join(VERSIONED_FIELDS)}"
            )
        with self.conn.transaction():
            self._check_meta(write=True)
            row = self.conn.execute(
                f"""{SELECT_SKILLS} WHERE s.id = %s AND s.is_current FOR UPDATE OF s""", (skill_id,)
            ).fetchone()
            if row is None:
                raise SkillError(f"no skill with id {skill_id!r}")
            current = row_to_skill(row)
            data = current.model_dump(include=set(VERSIONED_FIELDS))
            data.update(changes)
            data.update(id=skill_id, version=current.version + 1)
            try:
                new = Skill.model_validate(data)
            except ValueError as exc:
                raise SkillError(f"skill {skill_id}: invalid change: {exc}") from None
            if same_version(current, new):
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
                        f"""INSERT INTO skills ({INSERT_COLUMNS})
                           VALUES ({", ".join(["%s"] * N_INSERT)})""",
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
                    f"{SELECT_SKILLS} WHERE s.id = %s AND s.is_current", (skill_id,)
                ).fetchone()
            else:
                row = self.conn.execute(
                    f"{SELECT_SKILLS} WHERE s.id = %s AND s.version = %s", (skill_id, version)
                ).fetchone()
        if row is None:
            which = f" version {version}" if version is not None else ""
            raise SkillError(f"no skill with id {skill_id!r}{which}")
        return row_to_skill(row)

    def versions(self, skill_id: str) -> list[Skill]:
        with self.conn.transaction():
            rows = self.conn.execute(
                f"{SELECT_SKILLS} WHERE s.id = %s ORDER BY s.version", (skill_id,)
            ).fetchall()
        return [row_to_skill(r) for r in rows]

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
                f"""{SELECT_SKILLS} WHERE {" AND ".join(where)}
                    ORDER BY array_position(ARRAY['global','domain','competition'], s.tier),
                             s.scope_key NULLS FIRST, s.id""",
                params,
            ).fetchall()
        return [row_to_skill(r) for r in rows]

    def count(self) -> int:
        with self.conn.transaction():
            row = self.conn.execute("SELECT count(*) AS n FROM skills WHERE is_current").fetchone()
        return int(row["n"])

    def _vector_version_checked(self) -> None:
        if self._iterative_scan is None:
            self._iterative_scan = supports_iterative_scan(self.conn)

    def _nearest_cursor(
        self, vector: np.ndarray, limit: int, tier: str | None, status: str | None
    ) -> psycopg.Cursor[Any]:
        return nearest_cursor(
            self.conn, vector, limit, tier, status, iterative_scan=bool(self._iterative_scan)
        )

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
        return nearest_rows(rows)

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
          has no domain or global skill yet, and one rule promoted in another domain:
          tried here so that evidence of transfer can accumulate; see
          ``cross_candidates``), and the ``top_k_global`` global skills most
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
        # in Python (`applicable_skills`), not by skill_conditions_may_hold in SQL: that function
        # cost more per row than fetching the row (EXPLAIN ANALYZE in docs/benchmarks.md).
        # Cross-evaluation candidates are chosen on a few columns of their rows and only the
        # chosen are read whole: a store holds far more of them than a load returns (other
        # competitions' recipes and rules, other domains' rules: about 1,250 rows against 23
        # chosen at 20,000 skills, `haste bench store --candidate-share 0.3`).
        with self.conn.pipeline(), self.conn.transaction():
            own_cursor = read_skills(
                self.conn,
                f"""{SELECT_SKILLS} WHERE s.is_current AND s.status = 'active'
                    AND ((s.tier = 'competition' AND s.scope_key = %s)
                         OR (s.tier = 'domain' AND s.scope_key = %s))""",
                (slug, domain),
            )
            candidate_cursor = read_skills(
                self.conn,
                f"""{SELECT_CANDIDATES} WHERE s.is_current AND s.status = 'active'
                    AND ((s.tier = 'competition' AND s.domain = %s AND s.scope_key <> %s
                          AND s.kind IN ('recipe', 'rule') AND NOT s.payload ? 'hurt')
                         OR (s.tier = 'domain' AND s.scope_key <> %s AND s.kind = 'rule'))""",
                (domain, slug, domain),
            )
            nearest_cursor = (
                self._nearest_cursor(query, limit, "global", "active") if top_k_global > 0
                else None
            )
            rows = own_cursor.fetchall()
            candidate_rows = candidate_cursor.fetchall()
            nearest = nearest_cursor.fetchall() if nearest_cursor else []
        own = applicable_skills(rows, profile)
        globals_ = self._top_global(query, profile, top_k_global, nearest, limit)

        def by_utility(s: Skill) -> tuple[Any, ...]:
            return (-s.utility, s.id)

        competition = sorted((s for s in own if s.tier == "competition"), key=by_utility)
        domain_skills = sorted((s for s in own if s.tier == "domain"), key=by_utility)
        options = applicable_candidates(candidate_rows, profile, domain, slug)
        chosen = cross_candidates(
            [c for c in options if c.tier == "competition"],
            {s.pattern for s in [*domain_skills, *globals_] if s.pattern},
            foreign=[c for c in options if c.tier == "domain"],
            slug=slug,
            profile=profile,
        )
        return [*competition, *domain_skills, *self._current([c.id for c in chosen]),
                *globals_]

    def _current(self, ids: list[str]) -> list[Skill]:
        """The current version of each skill ``ids`` names, in that order; one retired or
        merged since it was chosen is left out."""
        if not ids:
            return []
        with self.conn.transaction():
            rows = read_skills(
                self.conn,
                f"{SELECT_SKILLS} WHERE s.is_current AND s.status = 'active' AND s.id = ANY(%s)",
                (ids,),
            ).fetchall()
        found = {s.id: s for s in (row_to_skill(r) for r in rows)}
        return [found[i] for i in ids if i in found]

    def _top_global(
        self,
        query: np.ndarray,
        profile: dict[str, Any],
        k: int,
        found: list[dict[str, Any]],
        limit: int,
    ) -> list[Skill]:
        """The ``k`` most relevant applicable globals among ``found`` (the rows of the
        ``limit`` nearest), searching further while too few of them apply. Only rows whose
        conditions hold are decoded (most of a scoped load's client time is decoding)."""
        if k <= 0:
            return []
        while True:
            similarity = {r["id"]: 1.0 - float(r["distance"]) for r in found}
            applicable = [(s, similarity[s.id]) for s in applicable_skills(found, profile)]
            if len(applicable) >= k or len(found) < limit:
                break
            limit *= 4  # many nearby globals do not apply here: look further
            self._vector_version_checked()
            with self.conn.transaction():
                found = self._nearest_cursor(query, limit, "global", "active").fetchall()
        applicable.sort(key=lambda p: (-round(p[1], 3), -p[0].utility, p[0].id))
        return [s for s, _ in applicable[:k]]

    # ---- usage (skills/usage.py) ---------------------------------------------------------

    def record_loaded(self, attempt_id: int, skills: Iterable[Skill]) -> int:
        """Record that ``attempt_id`` loaded these skill versions (idempotent)."""
        return usage.record_loaded(self.conn, attempt_id, skills)

    def record_usage(
        self, attempt_id: int, iteration_idx: int, skill_ids: Iterable[str], kept: bool,
        delta: float | None, *, event: str = "applied",
    ) -> int:
        """Record an iteration's (or a screen's) use of skills: see ``usage.record_usage``."""
        return usage.record_usage(
            self.conn, attempt_id, iteration_idx, skill_ids, kept, delta, event=event
        )

    def measured_effects(self, skill_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Per skill id, every measured use of it: see ``usage.measured_effects``."""
        return usage.measured_effects(self.conn, skill_ids)

    def utility(self, skill_id: str) -> float:
        """Expected improvement per application (see ``Skill.utility``); 0 if never tried."""
        return self.get(skill_id).utility

    def usage(self, skill_id: str) -> list[dict[str, Any]]:
        """Attempts that loaded or applied the skill, and whether its change was kept."""
        return usage.skill_usage(self.conn, skill_id)

    def attempt_usage(self, attempt_id: int) -> list[dict[str, Any]]:
        """What became of each skill attempt ``attempt_id`` loaded or applied."""
        return usage.attempt_usage(self.conn, attempt_id)

    def validate_all(self) -> list[str]:
        """Problems found by re-validating every stored version and edge (empty = valid)."""
        return lineage.validate_all(self)

    # ---- lineage (skills/lineage.py) -------------------------------------------------------

    def lineage(self, skill_id: str) -> dict[str, Any]:
        """The skill's graph neighbourhood as JSON-ready data: see ``lineage.lineage``."""
        return lineage.lineage(self, skill_id)

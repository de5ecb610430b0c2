"""A skill's lineage (its promotion and merge graph, conflicts, versions, attempts) and
the integrity check of every stored version and edge (``SkillStore`` delegates here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from haste_dagster.errors import SkillError
from haste_dagster.skills.model import Skill
from haste_dagster.skills.store_rows import SELECT_SKILLS, validated_skill

if TYPE_CHECKING:
    from haste_dagster.skills.store import SkillStore


def validate_all(store: SkillStore) -> list[str]:
    """Problems found by re-validating every stored version and edge (empty = valid):
    schema, content hash, and that each edge's ends are stored skill versions."""
    problems: list[str] = []
    with store.conn.transaction():
        for row in store.conn.execute(f"{SELECT_SKILLS} ORDER BY s.id, s.version").fetchall():
            try:
                validated_skill(row)
            except SkillError as exc:
                problems.append(str(exc))
        dangling = store.conn.execute(
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


def lineage(store: SkillStore, skill_id: str) -> dict[str, Any]:
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
    root = store.get(skill_id)
    with store.conn.transaction():
        ancestors = _walk(store, skill_id, up=True)
        descendants = _walk(store, skill_id, up=False)
        conflicts = store.conn.execute(
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
            for r in store.conn.execute(
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
            for v in store.versions(skill_id)
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
        "attempts": store.usage(skill_id),
        "source_attempts": [
            known.get(a, {"id": a, "slug": None, "note": "not in this database"})
            for a in source_ids
        ],
    }


def _walk(store: SkillStore, skill_id: str, *, up: bool) -> list[dict[str, Any]]:
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
        rows = store.conn.execute(
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
                {"skill": store.get(r["there"]), "via": r["kind"], "depth": depth,
                 "of": r["here"]}
            )
        frontier = nxt
    return out




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



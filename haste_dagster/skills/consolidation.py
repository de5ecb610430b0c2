"""Consolidation: merge near-duplicates, retire skills that rarely help, re-run promotion.

* Near-duplicates: two active skills of the same tier and scope whose embeddings have
  cosine similarity above ``similarity_threshold`` (default 0.92) and whose actions are the
  same pattern (``promotion.action_signature`` and compatible values, or both without an
  action), and that are not recorded as conflicting. The one with the better utility
  stays; the other gets a new version with status ``merged`` and a ``merged_into`` edge.
* Poor skills: applied at least ``min_uses`` times with a kept rate below
  ``min_kept_rate`` get a new version with status ``retired``.
* Then promotion runs for every domain and globally.

The three steps repeat until a pass changes nothing, so a second ``consolidate`` finds
nothing to do (idempotent). All of it runs in one transaction holding a transaction-level
advisory lock (``pg_advisory_xact_lock``), so two consolidations never interleave: the
second waits for the first to commit and then sees its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from haste_dagster.skills.model import Skill
from haste_dagster.skills.promotion import (
    action_signature,
    compatible,
    lock_promotions,
    numeric_values,
    promote_domain,
    promote_global,
)
from haste_dagster.skills.store import SkillStore

MAX_PASSES = 5


@dataclass
class ConsolidationReport:
    merged: list[dict[str, Any]] = field(default_factory=list)  # skill, into, similarity
    retired: list[dict[str, Any]] = field(default_factory=list)  # skill, applied, kept_rate
    promoted: list[str] = field(default_factory=list)  # skills written by promotion
    edges_added: int = 0
    passes: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.merged or self.retired or self.promoted or self.edges_added)

    def as_json(self) -> dict[str, Any]:
        return {
            "merged": self.merged,
            "retired": self.retired,
            "promoted": self.promoted,
            "edges_added": self.edges_added,
            "passes": self.passes,
            "changed": self.changed,
        }


def _same_pattern(a: Skill, b: Skill) -> bool:
    if a.kind != b.kind or a.pattern != b.pattern:
        return False  # a rule, a recipe and a literal change are different lessons
    if a.kind == "prior":
        return False  # one per domain, versioned in place
    if a.action is None or b.action is None:
        return a.action is None and b.action is None
    if action_signature(a.action) != action_signature(b.action):
        return False
    return compatible(numeric_values(a.action), numeric_values(b.action))


def _find(parent: dict[str, str], x: str) -> str:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def _merge_near_duplicates(
    store: SkillStore, threshold: float, report: ConsolidationReport, run_id: str | None
) -> bool:
    rows = store.conn.execute(
        """SELECT id, tier, COALESCE(scope_key, '') AS scope, embedding FROM skills
           WHERE is_current AND status = 'active' ORDER BY tier, scope_key, id"""
    ).fetchall()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["tier"], row["scope"]), []).append(row)
    changed = False
    for members in groups.values():
        if len(members) < 2:
            continue
        ids = [m["id"] for m in members]
        vectors = np.stack([_array(m["embedding"]) for m in members])
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        pairs: list[tuple[float, int, int]] = []
        for start in range(0, len(ids), 1024):  # bounded memory for large scopes
            sims = vectors[start : start + 1024] @ vectors.T
            for i, j in zip(*np.nonzero(sims > threshold), strict=True):
                if start + i < j:
                    pairs.append((float(sims[i, j]), start + int(i), int(j)))
        if not pairs:
            continue
        involved = sorted({ids[p[1]] for p in pairs} | {ids[p[2]] for p in pairs})
        skills = {i: store.get(i) for i in involved}
        parent = {i: i for i in skills}
        best_sim: dict[str, float] = {}
        for sim, i, j in sorted(pairs, reverse=True):
            a, b = skills[ids[i]], skills[ids[j]]
            if not _same_pattern(a, b):
                continue
            if store.has_edge(a.id or "", b.id or "", "conflicts_with"):
                continue
            parent[_find(parent, a.id or "")] = _find(parent, b.id or "")
            for s in (a.id or "", b.id or ""):
                best_sim[s] = max(best_sim.get(s, 0.0), sim)
        clusters: dict[str, list[Skill]] = {}
        for skill_id, skill in skills.items():
            clusters.setdefault(_find(parent, skill_id), []).append(skill)
        for cluster in clusters.values():
            if len(cluster) < 2:
                continue
            keeper = max(cluster, key=lambda s: (s.utility, len(s.evidence), _neg_id(s.id)))
            for loser in sorted(cluster, key=lambda s: s.id or ""):
                if loser.id == keeper.id:
                    continue
                merged = store.new_version(loser.id or "", status="merged",
                                           created_by="consolidation",
                                           **_run(run_id))
                store.add_edge(
                    merged, keeper, "merged_into",
                    reason=f"near-duplicate (cosine similarity {best_sim[loser.id or '']:.3f} "
                    f"> {threshold}); kept the one with better utility",
                )
                report.merged.append({"skill": loser.id, "into": keeper.id,
                                      "similarity": round(best_sim[loser.id or ""], 4)})
                changed = True
    return changed


def _array(vector: Any) -> np.ndarray:
    # pgvector's psycopg adapter returns Vector objects (or arrays in older versions)
    raw = vector.to_numpy() if hasattr(vector, "to_numpy") else vector
    return np.asarray(raw, dtype=np.float32)


def _neg_id(skill_id: str | None) -> tuple[int, ...]:
    # max() picks the keeper: among equals, the smallest id wins (deterministic).
    return tuple(-ord(c) for c in skill_id or "")


def _run(run_id: str | None) -> dict[str, str]:
    # The run that consolidates is recorded on the versions it writes (kept as is outside it).
    return {} if run_id is None else {"dagster_run_id": run_id}


def _retire_poor(
    store: SkillStore, min_uses: int, min_kept_rate: float, report: ConsolidationReport,
    run_id: str | None,
) -> bool:
    rows = store.conn.execute(
        """SELECT s.id, count(*) AS applied, count(*) FILTER (WHERE u.kept) AS kept
           FROM skills s JOIN skill_usage u ON u.skill_id = s.id AND u.event = 'applied'
           WHERE s.is_current AND s.status = 'active'
           GROUP BY s.id HAVING count(*) >= %s
              AND count(*) FILTER (WHERE u.kept)::float / count(*) < %s
           ORDER BY s.id""",
        (min_uses, min_kept_rate),
    ).fetchall()
    for row in rows:
        store.new_version(row["id"], status="retired", created_by="consolidation",
                          **_run(run_id))
        report.retired.append(
            {"skill": row["id"], "applied": row["applied"],
             "kept_rate": round(row["kept"] / row["applied"], 4)}
        )
    return bool(rows)


def _promote_all(store: SkillStore, report: ConsolidationReport, run_id: str | None) -> bool:
    domains = [
        r["domain"]
        for r in store.conn.execute(
            """SELECT DISTINCT domain FROM skills WHERE is_current AND status = 'active'
               AND tier = 'competition' ORDER BY domain"""
        ).fetchall()
    ]
    changed = False
    results = [promote_domain(store, d, dagster_run_id=run_id) for d in domains]
    for result in [*results, promote_global(store, dagster_run_id=run_id)]:
        report.promoted += [i for i in result.changed if i not in report.promoted]
        report.edges_added += result.edges_added
        changed = changed or bool(result.changed or result.edges_added)
    return changed


def consolidate(
    store: SkillStore,
    similarity_threshold: float = 0.92,
    min_uses: int = 5,
    min_kept_rate: float = 0.2,
    *,
    dagster_run_id: str | None = None,
) -> ConsolidationReport:
    """Merge near-duplicates, retire poor skills, promote; see the module doc.
    ``dagster_run_id``: the run consolidating, recorded on every version it writes."""
    report = ConsolidationReport()
    with store.conn.transaction():
        lock_promotions(store)
        for _ in range(MAX_PASSES):
            report.passes += 1
            merged = _merge_near_duplicates(store, similarity_threshold, report, dagster_run_id)
            retired = _retire_poor(store, min_uses, min_kept_rate, report, dagster_run_id)
            promoted = _promote_all(store, report, dagster_run_id)
            if not (merged or retired or promoted):
                break
    return report

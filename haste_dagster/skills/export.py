"""Export/import of the skill inventory as reviewable Markdown files.

One file per skill (its current version, whatever its status) with YAML front matter and
the guidance as the body, at ``global/<id>.md``, ``domain/<domain>/<id>.md`` or
``competition/<slug>/<id>.md``. Keys are written in a fixed order and nested mappings
sorted, so the bytes depend only on the skills: export -> import into an empty store ->
export gives identical files. Lineage edges (all but ``supersedes``: older versions are not
exported) travel in the front matter by skill id and are re-linked to the current versions
on import. Not exported: usage statistics (they cite attempts of the source database),
embeddings (recomputed on import) and timestamps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from haste_dagster.errors import SkillError
from haste_dagster.skills.model import Condition, Skill, validate_skill
from haste_dagster.skills.store import SkillStore

log = logging.getLogger(__name__)

_FRONT_KEYS = (
    "id",
    "version",
    "tier",
    "scope_key",
    "domain",
    "title",
    "status",
    "created_by",
    "conditions",
    "action",
    "evidence",
    "parent_ids",
    "source_attempt",
    "dagster_run_id",
)
# Written only when not their defaults, so files of plain change skills stay as they were.
_OPTIONAL_KEYS = ("kind", "pattern", "payload")
_DEFAULTS: dict[str, Any] = {"kind": "change", "pattern": None, "payload": {}}


def skill_path(root: Path, skill: Skill) -> Path:
    if skill.tier == "global":
        return root / "global" / f"{skill.id}.md"
    return root / skill.tier / str(skill.scope_key) / f"{skill.id}.md"


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def render_skill(skill: Skill, edges: list[dict[str, Any]]) -> str:
    """The Markdown text of one skill (front matter + guidance)."""
    data = skill.model_dump(mode="json")
    front: dict[str, Any] = {key: data[key] for key in _FRONT_KEYS}
    front["conditions"] = [
        {"key": c["key"], "op": c["op"], "value": c["value"]} for c in front["conditions"]
    ]
    front["evidence"] = [
        {k: e[k] for k in ("slug", "attempt_id", "iteration", "delta")} for e in front["evidence"]
    ]
    front["action"] = _sorted(front["action"])
    for key in _OPTIONAL_KEYS:
        if data[key] != _DEFAULTS[key]:
            front[key] = _sorted(data[key])
    front["edges"] = edges
    text = yaml.safe_dump(
        front, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000
    )
    return f"---\n{text}---\n\n{skill.guidance}\n"


def _outgoing_edges(store: SkillStore) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for edge in store.edges():
        if edge["kind"] == "supersedes":
            continue
        key = (edge["kind"], edge["dst_id"])
        # the newest edge of a kind to a skill wins (edges are listed oldest first)
        out.setdefault(edge["src_id"], {})[key] = {
            "kind": edge["kind"],
            "to": edge["dst_id"],
            "conditions": [
                {"key": c["key"], "op": c["op"], "value": c["value"]} for c in edge["conditions"]
            ],
            "reason": edge["reason"],
        }
    return {src: [edges[k] for k in sorted(edges)] for src, edges in out.items()}


def export_skills(store: SkillStore, directory: Path | str) -> list[Path]:
    """Write every current skill under ``directory``; returns the paths written, sorted.
    Files of skills no longer in the store are left alone (seed files may live there)."""
    root = Path(directory)
    edges = _outgoing_edges(store)
    written: list[Path] = []
    for skill in store.list(status=None):
        path = skill_path(root, skill)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = render_skill(skill, edges.get(skill.id or "", []))
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return sorted(written)


def parse_skill_file(path: Path) -> tuple[Skill, list[dict[str, Any]]]:
    """(skill, outgoing edges) from one exported file; SkillError naming the file."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise SkillError(f"{path}: a skill file starts with '---' and YAML front matter")
    head, sep, body = text[4:].partition("\n---\n")
    if not sep:
        raise SkillError(f"{path}: the front matter is not closed by a '---' line")
    try:
        front = yaml.safe_load(head) or {}
    except yaml.YAMLError as exc:
        raise SkillError(f"{path}: front matter is not valid YAML: {exc}") from None
    if not isinstance(front, dict):
        raise SkillError(f"{path}: front matter must be a mapping")
    edges = front.pop("edges", None) or []
    if not isinstance(edges, list):
        raise SkillError(f"{path}: edges must be a list")
    unknown = set(front) - set(_FRONT_KEYS) - set(_OPTIONAL_KEYS)
    if unknown:
        raise SkillError(f"{path}: unknown front-matter keys {sorted(unknown)}")
    skill = validate_skill({**front, "guidance": body.strip("\n")}, where=str(path))
    if skill.id is None:
        raise SkillError(f"{path}: id is missing")
    if path.stem != skill.id:
        raise SkillError(f"{path}: file name does not match id {skill.id}")
    return skill, edges


def import_skills(store: SkillStore, directory: Path | str) -> list[Skill]:
    """Load every ``*.md`` skill file under ``directory`` into the store (seeding an empty
    store; idempotent: skills and edges already there are kept as they are)."""
    root = Path(directory)
    parsed = [parse_skill_file(p) for p in sorted(root.rglob("*.md")) if p.name != "README.md"]
    with store.conn.transaction():
        stored = store.add_many([s for s, _ in parsed])
        current = {s.id: s for s in stored}
        by_file_id = {
            skill.id: kept for (skill, _), kept in zip(parsed, stored, strict=True)
        }
        for skill, edges in parsed:
            src = by_file_id[skill.id]
            for edge in edges:
                dst = current.get(edge.get("to")) or _get_or_none(store, edge.get("to"))
                if dst is None:
                    log.warning("%s: edge to unknown skill %s skipped", skill.id, edge.get("to"))
                    continue
                if store.has_edge(src.id or "", dst.id or "", edge.get("kind", "")):
                    continue
                conditions = [Condition.model_validate(c) for c in edge.get("conditions") or []]
                store.add_edge(src, dst, edge.get("kind", ""), conditions=conditions,
                               reason=str(edge.get("reason") or ""))
    return stored


def _get_or_none(store: SkillStore, skill_id: Any) -> Skill | None:
    if not isinstance(skill_id, str):
        return None
    try:
        return store.get(skill_id)
    except SkillError:
        return None

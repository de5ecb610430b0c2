"""Builders shared by the skill tests: skills, conditions, actions, attempt rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from haste_dagster.skills.model import Condition, Evidence, Skill


def cond(key: str, op: str, value: Any) -> Condition:
    return Condition(key=key, op=op, value=value)  # type: ignore[arg-type]


def set_action(path: str, value: Any) -> dict[str, Any]:
    return {"ops": [{"op": "set", "path": path, "value": value}]}


def make_skill(
    tier: str = "competition",
    scope: str | None = "comp_a",
    title: str = "Deeper trees",
    *,
    domain: str | None = None,
    guidance: str | None = None,
    conditions: list[Condition] | None = None,
    action: dict[str, Any] | None = None,
    evidence: list[Evidence] | None = None,
    created_by: str = "extraction",
) -> Skill:
    if domain is None and tier == "competition":
        domain = "tabular_regression"
    return Skill(
        tier=tier,  # type: ignore[arg-type]
        scope_key=scope if tier != "global" else None,
        domain=domain,
        title=title,
        guidance=guidance or f"{title}: guidance text for the test.",
        conditions=conditions or [],
        action=action,
        evidence=evidence or [],
        created_by=created_by,  # type: ignore[arg-type]
    )


def insert_attempt(conn: psycopg.Connection, slug: str, loading: str = "tiered") -> int:
    """An attempts row (0001 schema), committed so other connections see it."""
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO attempts (slug, policy, loading, seed, budget_iterations)
               VALUES (%s, 'heuristic', %s, 0, 10) RETURNING id""",
            (slug, loading),
        ).fetchone()
    return int(row["id"])


def skill_files(root: Path) -> list[Path]:
    """The skill files under ``root`` (README.md is documentation, not a skill)."""
    return sorted(p for p in root.rglob("*.md") if p.name != "README.md")

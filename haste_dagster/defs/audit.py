"""Skill lineage for the Dagster UI: per-skill tables, per-attempt outcomes, run links.

`haste skills lineage ID` tells one skill's story in the terminal; these helpers put the
same facts on the asset pages: where each skill came from (parents, source attempts, the
run that wrote it), which attempts loaded it and what it did there (applied, kept, delta).
Skill ids appear as plain text in the Markdown, so the browser's find and the asset's
event history show them. Skill text is data: every cell is escaped, so a title cannot
inject links, images or table breaks into the page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from dagster import AssetObservation, MetadataValue

# The UI renders Markdown metadata inline; a few hundred rows stay readable and small.
MAX_ROWS = 300
SKILL_COLUMNS = (
    "id",
    "tier",
    "scope",
    "title",
    "status",
    "parents",
    "source attempts",
    "loaded",
    "applied",
    "kept",
    "mean Δ",
    "utility",
    "created by",
)
OUTCOME_COLUMNS = ("id", "tier", "title", "applied", "kept", "Δ kept", "mean Δ", "iterations")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def rounded(value: Any, digits: int = 5) -> float | None:
    """``value`` to ``digits`` significant digits (None for None or not finite)."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return float(f"{number:.{digits}g}")


def _text(value: Any) -> str:
    text = " ".join(str(value).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _number(value: Any) -> str:
    number = rounded(value, 4)
    return "—" if number is None else f"{number:g}"


def _ids(ids: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in ids if re.fullmatch(r"sk_[0-9a-f]{16}", str(i))) or "—"


def run_link(run_id: str | None) -> str:
    """A link to the run's page in the UI (relative, so it works behind any host)."""
    if not run_id or not re.fullmatch(r"[0-9a-f-]{8,64}", run_id):
        return "—"
    return f"[{run_id[:8]}](/runs/{run_id})"


def source_attempts(skill: Any) -> list[tuple[int, str | None]]:
    """(attempt id, competition) behind a skill: its evidence, which promotion carries up
    from every level below, and the attempt it was extracted from."""
    found: dict[int, str | None] = {}
    for evidence in skill.evidence:
        if evidence.attempt_id is not None:
            found.setdefault(int(evidence.attempt_id), evidence.slug)
    if skill.source_attempt is not None:
        found.setdefault(int(skill.source_attempt), skill.scope_key)
    return sorted(found.items())


def _attempts_cell(skill: Any) -> str:
    return ", ".join(f"{a} ({_text(slug)})" if slug else str(a) for a, slug in
                     source_attempts(skill)) or "—"


def skill_row(skill: Any) -> dict[str, str]:
    stats = skill.stats
    return {
        "id": f"`{skill.id}` v{skill.version}",
        "tier": skill.tier,
        "scope": _text(skill.scope_key or "—"),
        "title": _text(skill.title),
        "status": skill.status,
        "parents": _ids(skill.parent_ids),
        "source attempts": _attempts_cell(skill),
        "loaded": str(stats.loaded),
        "applied": str(stats.applied),
        "kept": str(stats.kept),
        "mean Δ": _number(stats.mean_delta),
        "utility": _number(skill.utility),
        "created by": f"{skill.created_by} {run_link(skill.dagster_run_id)}",
    }


def markdown_rows(rows: Sequence[dict[str, str]], columns: Sequence[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(r[c] for c in columns) + " |\n" for r in rows)


def skills_table_metadata(skills: Sequence[Any], *, empty: str) -> dict[str, Any]:
    """`skill_table` (Markdown, one row per skill) and `ids` (plain text, searchable)."""
    shown = list(skills)[:MAX_ROWS]
    if shown:
        table = markdown_rows([skill_row(s) for s in shown], SKILL_COLUMNS)
        if len(skills) > len(shown):
            table += f"\n{len(shown)} of {len(skills)} skills shown; `haste skills list` has all.\n"
    else:
        table = empty
    return {
        "skill_table": MetadataValue.md(table),
        "ids": MetadataValue.text(" ".join(str(s.id) for s in skills) or "(none)"),
    }


def _outcome_row(use: dict[str, Any]) -> dict[str, str]:
    applied = int(use["applied"])
    return {
        "id": f"`{use['id']}` v{use['version']}",
        "tier": str(use["tier"] or "?"),
        "title": _text(use["title"] or "?"),
        "applied": str(applied),
        "kept": str(use["kept"]) if applied else "—",
        "Δ kept": _number(use["kept_delta"]),
        "mean Δ": _number(use["mean_delta"]),
        "iterations": ", ".join(str(i) for i in use["iterations"]) or "—",
    }


def attempt_outcomes_metadata(usage: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What became of every skill the attempt loaded (``SkillStore.attempt_usage`` rows)."""
    loaded = [u for u in usage if u["loaded"] or u["applied"]]
    applied = sum(1 for u in loaded if u["applied"])
    kept = sum(1 for u in loaded if u["kept"])
    if loaded:
        table = (
            f"{len(loaded)} skills loaded, {applied} applied, {kept} kept "
            "(Δ: score change, positive = better).\n\n"
            + markdown_rows([_outcome_row(u) for u in loaded[:MAX_ROWS]], OUTCOME_COLUMNS)
        )
    else:
        table = "No skill was loaded: the inventory had none in scope for this competition."
    return {
        "skill_outcomes": MetadataValue.md(table),
        "skills_applied": applied,
        "skills_kept": kept,
    }


def asset_link(asset: str, partition: str | None = None) -> MetadataValue:
    """A link to an asset's page in the UI (relative: the UI is served at its root)."""
    from urllib.parse import quote

    path = f"/assets/{quote(asset)}"
    return MetadataValue.url(path + (f"?partition={quote(partition)}" if partition else ""))


def grade_observation(slug: str, attempt_id: int, grade: Any) -> AssetObservation:
    """Recorded on the attempt once its submission is graded: the attempt's page then shows
    its hidden-test score and medal next to its CV figures."""
    return AssetObservation(
        asset_key="attempt",
        partition=slug,
        metadata={
            "attempt_id": attempt_id,
            "test_score": rounded(grade.score),
            "medal": str(grade.medal),
            "submission": asset_link("submission", slug),
        },
    )

"""Skill lineage for the Dagster UI: per-skill tables, per-attempt outcomes, run links.

`haste skills lineage ID` tells one skill's story in the terminal; these helpers put the
same facts on the asset pages: where each skill came from (parents, source attempts, the
run that wrote it), which attempts loaded it and what it did there (applied, kept, delta).

The UI shows table metadata inline, but gives it only the width of the metadata panel
(about 640 px in a 1600 px window) and cuts off what is wider, and a table is as wide as its
longest cells. So each inline table has short cells only: `skill_table` (usage, one row
per skill), `skill_lineage` (one row per fact: scope, title, creator and run, each parent,
each source attempt); `skill_details` has everything in one wide Markdown table behind the
UI's "Show Markdown" button (a scrollable dialog). Table cells are plain text, so skill
text (data) cannot inject markup; Markdown cells are escaped. The ids are also listed as
plain text (`ids`), for the browser's find on the asset page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dagster import AssetObservation, MetadataValue, TableColumn, TableRecord, TableSchema

if TYPE_CHECKING:  # the domain modules load when a step runs, not with the code location
    from haste_dagster.competitions.grading import Grade
    from haste_dagster.skills.model import Skill

MAX_ROWS = 300  # per table: a few hundred rows stay readable and small
SKILL_COLUMNS = ("id", "tier", "loaded", "applied", "kept", "mean Δ", "utility")
LINEAGE_COLUMNS = ("id", "fact", "value")
DETAIL_COLUMNS = (
    "id", "version", "tier", "scope", "status", "title", "parents", "source attempts",
    "loaded", "applied", "kept", "mean Δ", "utility", "created by", "run",
)
OUTCOME_COLUMNS = ("id", "applied", "kept", "Δ kept", "mean Δ")
_TYPES = {"loaded": "int", "applied": "int", "kept": "int", "mean Δ": "float",
          "utility": "float", "Δ kept": "float"}
TITLE_CHARS = 40  # inline; the full title is in skill_details and the exported file
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def rounded(value: Any, digits: int = 5) -> float | None:
    """``value`` to ``digits`` significant digits (None for None or not finite)."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return float(f"{number:.{digits}g}")


def _short(value: Any, limit: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_run(run_id: str | None) -> str:
    """A run as the UI names it in lists (its first 8 characters)."""
    return run_id[:8] if run_id else "—"


def source_attempts(skill: Skill) -> list[tuple[int, str | None]]:
    """(attempt id, competition) behind a skill: its evidence, which promotion carries up
    from every level below, and the attempt it was extracted from."""
    found: dict[int, str | None] = {}
    for evidence in skill.evidence:
        if evidence.attempt_id is not None:
            found.setdefault(int(evidence.attempt_id), evidence.slug)
    if skill.source_attempt is not None:
        found.setdefault(int(skill.source_attempt), skill.scope_key)
    return sorted(found.items())


def _attempt(attempt: int, slug: str | None) -> str:
    return f"{attempt} ({slug})" if slug else str(attempt)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> MetadataValue:
    """A Dagster table of ``rows`` (None cells stay empty)."""
    schema = TableSchema(columns=[TableColumn(c, _TYPES.get(c, "string")) for c in columns])
    shown = rows[:MAX_ROWS]
    # Dagster wants the same fields in every record: a column empty in every row is left
    # out, and in the others an empty cell is None (shown blank).
    present = [c for c in columns if any(r.get(c) is not None for r in shown)]
    records = [TableRecord({c: r.get(c) for c in present}) for r in shown]
    return MetadataValue.table(records=records, schema=schema)


def skill_row(skill: Skill) -> dict[str, Any]:
    stats = skill.stats
    return {
        "id": str(skill.id),
        "tier": skill.tier,
        "loaded": int(stats.loaded),
        "applied": int(stats.applied),
        "kept": int(stats.kept),
        "mean Δ": rounded(stats.mean_delta, 3),
        "utility": rounded(skill.utility, 3),
    }


def lineage_rows(skill: Skill) -> list[dict[str, str]]:
    """One row per fact of the skill's story, each cell short."""
    sid = str(skill.id)
    rows = [{"id": sid, "fact": "scope", "value": skill.scope_key}] if skill.scope_key else []
    rows += [
        {"id": sid, "fact": "title", "value": _short(skill.title, TITLE_CHARS)},
        {"id": sid, "fact": "version", "value": f"v{skill.version} {skill.status}"},
        {"id": sid, "fact": "created by",
         "value": f"{skill.created_by} · run {short_run(skill.dagster_run_id)}"},
    ]
    rows += [{"id": sid, "fact": "parent", "value": p} for p in skill.parent_ids]
    rows += [
        {"id": sid, "fact": "source attempt", "value": _attempt(a, slug)}
        for a, slug in source_attempts(skill)
    ]
    return rows


def _md(value: Any) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def _num(value: Any) -> str:
    number = rounded(value, 4)
    return "—" if number is None else f"{number:g}"


def details_markdown(skills: Sequence[Any]) -> str:
    head = "| " + " | ".join(DETAIL_COLUMNS) + " |\n|" + "---|" * len(DETAIL_COLUMNS) + "\n"
    lines = []
    for s in list(skills)[:MAX_ROWS]:
        cells = [
            f"`{s.id}`", str(s.version), s.tier, _md(s.scope_key or "—"), s.status, _md(s.title),
            ", ".join(f"`{p}`" for p in s.parent_ids) or "—",
            _md(", ".join(_attempt(a, slug) for a, slug in source_attempts(s)) or "—"),
            str(s.stats.loaded), str(s.stats.applied), str(s.stats.kept),
            _num(s.stats.mean_delta), _num(s.utility), s.created_by,
            f"`{s.dagster_run_id}`" if s.dagster_run_id else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |\n")
    return head + "".join(lines)


def skills_table_metadata(skills: Sequence[Any]) -> dict[str, Any]:
    """`skill_table`, `skill_lineage`, `skill_details` and `ids` of ``skills``."""
    metadata: dict[str, Any] = {
        "skill_table": table([skill_row(s) for s in skills], SKILL_COLUMNS),
        "skill_lineage": table(
            [r for s in skills for r in lineage_rows(s)], LINEAGE_COLUMNS
        ),
        "skill_details": MetadataValue.md(details_markdown(skills)),
        "ids": MetadataValue.text(" ".join(str(s.id) for s in skills) or "(none)"),
    }
    if len(skills) > MAX_ROWS:
        metadata["skill_table_note"] = MetadataValue.text(
            f"{MAX_ROWS} of {len(skills)} skills shown; `haste skills list` has all."
        )
    return metadata


def _outcome_row(use: dict[str, Any]) -> dict[str, Any]:
    applied = int(use["applied"])
    return {
        "id": str(use["id"]),
        "applied": applied,
        "kept": int(use["kept"]) if applied else None,
        "Δ kept": rounded(use["kept_delta"], 3),
        "mean Δ": rounded(use["mean_delta"], 3),
    }


def attempt_outcomes_metadata(usage: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What became of every skill the attempt loaded (``SkillStore.attempt_usage`` rows):
    applied = iterations whose patch it motivated, kept = of those, the ones kept, deltas =
    change of the CV score (positive = better)."""
    loaded = [u for u in usage if u["loaded"] or u["applied"]]
    applied = sum(1 for u in loaded if u["applied"])
    kept = sum(1 for u in loaded if u["kept"])
    summary = (
        f"{len(loaded)} skills loaded, {applied} applied, {kept} kept "
        "(Δ: change of the CV score, positive = better)"
        if loaded
        else "no skill loaded: the inventory had none in scope for this competition"
    )
    return {
        "skill_outcomes_summary": MetadataValue.text(summary),
        "skill_outcomes": table([_outcome_row(u) for u in loaded], OUTCOME_COLUMNS),
        "skills_applied": applied,
        "skills_kept": kept,
    }


def asset_link(asset: str, partition: str | None = None) -> MetadataValue:
    """A link to an asset's page in the UI (relative: the UI is served at its root)."""
    from urllib.parse import quote

    path = f"/assets/{quote(asset)}"
    return MetadataValue.url(path + (f"?partition={quote(partition)}" if partition else ""))


def grade_observation(slug: str, attempt_id: int, grade: Grade) -> AssetObservation:
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

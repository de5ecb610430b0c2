"""Skill lineage for the Dagster UI: per-skill tables, per-attempt outcomes, run links.

`haste skills lineage ID` tells one skill's story in the terminal; these helpers put the
same facts on the asset pages: where each skill came from (parents, source attempts, the
run that wrote it), which attempts loaded it and what it did there (applied, kept, delta).
The tables are Dagster table metadata (shown inline on the asset page, cells as plain
text, so skill text, which is data, cannot inject markup); skill ids are also listed as
plain text, so the browser's find on the asset page and its event history show them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dagster import AssetObservation, MetadataValue, TableColumn, TableRecord, TableSchema

# Tables render inline in the UI; a few hundred rows stay readable and small.
MAX_ROWS = 300
# Few, wrapping columns: the UI gives a metadata table about 600-1100 px, so one row per
# skill tells its whole story in four cells instead of fifteen cut-off ones.
SKILL_COLUMNS = ("id", "skill", "usage", "lineage")
OUTCOME_COLUMNS = ("id", "skill", "outcome")


def rounded(value: Any, digits: int = 5) -> float | None:
    """``value`` to ``digits`` significant digits (None for None or not finite)."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return float(f"{number:.{digits}g}")


def _text(value: Any, limit: int = 160) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def _signed(value: Any) -> str:
    number = rounded(value, 4)
    return "—" if number is None else f"{number:+g}"


def skill_row(skill: Any) -> dict[str, str]:
    stats = skill.stats
    where = " · ".join(x for x in (skill.tier, skill.scope_key) if x)
    attempts = ", ".join(
        f"{a} ({slug})" if slug else str(a) for a, slug in source_attempts(skill)
    )
    run = f" in run {skill.dagster_run_id}" if skill.dagster_run_id else ""
    return {
        "id": str(skill.id),
        "skill": f"{where} · v{skill.version} {skill.status} — {_text(skill.title)}",
        "usage": (
            f"loaded {stats.loaded} · applied {stats.applied} · kept {stats.kept} · "
            f"mean Δ {_signed(stats.mean_delta)} · utility {_signed(skill.utility)}"
        ),
        "lineage": " · ".join(
            [
                f"{skill.created_by}{run}",
                f"parents {', '.join(skill.parent_ids) or '—'}",
                f"attempts {attempts or '—'}",
            ]
        ),
    }


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> MetadataValue:
    """A Dagster table (the UI shows it inline, whatever its size)."""
    schema = TableSchema(columns=[TableColumn(name, "string") for name in columns])
    records = [TableRecord({c: r[c] for c in columns}) for r in rows[:MAX_ROWS]]
    return MetadataValue.table(records=records, schema=schema)


def skills_table_metadata(skills: Sequence[Any]) -> dict[str, Any]:
    """`skill_table` (one row per skill: lineage, usage, run) and `ids` (searchable text)."""
    metadata: dict[str, Any] = {
        "skill_table": table([skill_row(s) for s in skills], SKILL_COLUMNS),
        "ids": MetadataValue.text(" ".join(str(s.id) for s in skills) or "(none)"),
    }
    if len(skills) > MAX_ROWS:
        metadata["skill_table_note"] = MetadataValue.text(
            f"{MAX_ROWS} of {len(skills)} skills shown; `haste skills list` has all."
        )
    return metadata


def _outcome_row(use: dict[str, Any]) -> dict[str, str]:
    applied = int(use["applied"])
    if applied:
        iterations = ", ".join(str(i) for i in use["iterations"])
        outcome = (
            f"applied {applied} (iterations {iterations}) · kept {use['kept']} · "
            f"Δ kept {_signed(use['kept_delta'])} · mean Δ {_signed(use['mean_delta'])}"
        )
    else:
        outcome = "loaded, not applied"
    return {
        "id": str(use["id"]),
        "skill": f"{use['tier'] or '?'} · v{use['version']} — {_text(use['title'] or '?')}",
        "outcome": outcome,
    }


def attempt_outcomes_metadata(usage: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What became of every skill the attempt loaded (``SkillStore.attempt_usage`` rows):
    applied = iterations whose patch it motivated, kept = of those, the ones kept, deltas =
    score change (positive = better)."""
    loaded = [u for u in usage if u["loaded"] or u["applied"]]
    applied = sum(1 for u in loaded if u["applied"])
    kept = sum(1 for u in loaded if u["kept"])
    summary = (
        f"{len(loaded)} skills loaded, {applied} applied, {kept} kept"
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

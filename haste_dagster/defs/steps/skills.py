"""The steps across competitions: domain and global skills, inventory, validity,
consolidation."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from dagster import (
    MetadataValue,
)

from haste_dagster.defs import audit
from haste_dagster.defs.resources import (
    ArtifactsResource,
    SkillStoreResource,
)
from haste_dagster.defs.steps.competition import (
    skill_list,
)
from haste_dagster.defs.steps.result import (
    CheckOutcome,
    StepResult,
)

if TYPE_CHECKING:  # the domain modules load when a step runs, not with the code location
    from haste_dagster.skills.model import Skill
    from haste_dagster.skills.promotion import PromotionResult
    from haste_dagster.skills.store import SkillStore

# --- skills across competitions -----------------------------------------------------------


def _promotion_result(
    result: PromotionResult, extra: dict[str, Any], tier_skills: list[Skill]
) -> StepResult:
    skills = result.skills
    return StepResult(
        metadata={
            **extra,
            "skills": len(skills),
            "changed": MetadataValue.json(list(result.changed)),
            "edges_added": int(result.edges_added),
            "conflicts": MetadataValue.json([list(pair) for pair in result.conflicts]),
            "skill_ids": MetadataValue.json([s.id for s in skills]),
            # Lineage one level down: the skills each promoted skill was abstracted from.
            "parents": MetadataValue.json({s.id: list(s.parent_ids) for s in skills}),
            "titles": MetadataValue.md(skill_list(skills)),
            # Every skill of the tier and scope, with its whole story (not one level).
            **audit.skills_table_metadata(tier_skills),
        },
        value=[s.id for s in skills],
    )


def domain_skills_step(
    domain: str, skill_store: SkillStoreResource, run_id: str | None = None
) -> StepResult:
    """Promote ``domain``'s recurring competition skills (``run_id`` recorded on them)."""
    from haste_dagster.skills.promotion import promote_domain

    with skill_store.open() as (_conn, store):
        result = promote_domain(store, domain, dagster_run_id=run_id)
        every = store.list(tier="domain", scope_key=domain, status=None)
        return _promotion_result(result, {"domain": domain}, every)


def global_skills_step(skill_store: SkillStoreResource, run_id: str | None = None) -> StepResult:
    from haste_dagster.skills.promotion import promote_global

    with skill_store.open() as (_conn, store):
        result = promote_global(store, dagster_run_id=run_id)
        return _promotion_result(result, {}, store.list(tier="global", status=None))


def skill_inventory_step(
    skill_store: SkillStoreResource, artifacts: ArtifactsResource
) -> StepResult:
    """Export every current skill to skill_assets/ (one reviewable Markdown file each)."""
    from haste_dagster.skills import export_skills

    target = artifacts.skill_assets_dir()
    with skill_store.open() as (_conn, store):
        written = export_skills(store, target)
        skills = store.list(status=None)
    by_tier = Counter(s.tier for s in skills)
    by_status = Counter(s.status for s in skills)
    return StepResult(
        metadata={
            "skills": len(skills),
            "by_tier": MetadataValue.json(dict(by_tier)),
            "by_status": MetadataValue.json(dict(by_status)),
            "files": len(written),
            "directory": MetadataValue.path(str(target)),
            **audit.skills_table_metadata(skills),
        },
        value=[str(p) for p in written],
    )


def skills_validity_step(skill_store: SkillStoreResource) -> CheckOutcome:
    """Every current skill re-validates against the schema (same content hash), and its
    lineage resolves: each parent id and each edge endpoint is a stored skill version."""
    from haste_dagster.errors import SkillError
    from haste_dagster.skills.model import validate_skill

    invalid: dict[str, str] = {}
    unresolved: dict[str, list[str]] = {}
    with skill_store.open() as (_conn, store):
        skills = store.list(status=None)
        for skill in skills:
            data = skill.model_dump(mode="json", exclude={"embedding"})
            try:
                again = validate_skill(data, where=f"skill {skill.id} v{skill.version}")
            except SkillError as exc:
                invalid[str(skill.id)] = str(exc)
                continue
            if again.content_hash != skill.content_hash:
                invalid[str(skill.id)] = "stored content hash differs from the content"
            for parent in skill.parent_ids:
                if not _resolves(store, parent, None):
                    unresolved.setdefault(str(skill.id), []).append(parent)
        for edge in store.edges():
            for side in ("src", "dst"):
                if not _resolves(store, edge[f"{side}_id"], edge[f"{side}_version"]):
                    unresolved.setdefault(f"edge:{edge['kind']}", []).append(
                        f"{edge[f'{side}_id']} v{edge[f'{side}_version']}"
                    )
    return CheckOutcome(
        "skills_valid_with_resolvable_lineage",
        passed=not invalid and not unresolved,
        metadata={
            "skills_checked": len(skills),
            "invalid": MetadataValue.json(invalid),
            "unresolved_lineage": MetadataValue.json(unresolved),
        },
    )


def _resolves(store: SkillStore, skill_id: str, version: int | None) -> bool:
    from haste_dagster.errors import SkillError

    try:
        store.get(skill_id, version)
    except SkillError:
        return False
    return True


def consolidate_step(skill_store: SkillStoreResource, run_id: str | None = None) -> StepResult:
    """Merge near-duplicates, retire poor skills, promote (skills.consolidate)."""
    from haste_dagster.skills import consolidate

    with skill_store.open() as (_conn, store):
        report = consolidate(store, dagster_run_id=run_id)
    return StepResult(
        metadata={
            "merged": MetadataValue.json(report.merged),
            "retired": MetadataValue.json(report.retired),
            "promoted": MetadataValue.json(report.promoted),
            "edges_added": int(report.edges_added),
            "passes": int(report.passes),
        },
        value={
            "merged": len(report.merged),
            "retired": len(report.retired),
            "promoted": len(report.promoted),
        },
    )

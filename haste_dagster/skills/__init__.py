"""Skills in three tiers (global, domain, competition): model, store, embeddings, scoped
loading, extraction, promotion, consolidation and export/import. No Dagster here."""

from haste_dagster.skills.consolidation import ConsolidationReport, consolidate
from haste_dagster.skills.embeddings import Embedder, default_embedder
from haste_dagster.skills.export import export_skills, import_skills
from haste_dagster.skills.extraction import KeptChange, extract_competition_skills
from haste_dagster.skills.model import Condition, Evidence, Skill, SkillStats
from haste_dagster.skills.promotion import (
    evidence_allows,
    promote_domain_skills,
    promote_global_skills,
)
from haste_dagster.skills.store import SkillStore

__all__ = [
    "Condition",
    "ConsolidationReport",
    "Embedder",
    "Evidence",
    "KeptChange",
    "Skill",
    "SkillStats",
    "SkillStore",
    "consolidate",
    "default_embedder",
    "evidence_allows",
    "export_skills",
    "extract_competition_skills",
    "import_skills",
    "promote_domain_skills",
    "promote_global_skills",
]

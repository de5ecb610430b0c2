"""Skill assets across competitions: domain (one partition per domain) → global → inventory.

Promotion reads the whole store (competition skills of every competition in the domain),
so each domain partition depends on all competition partitions.
"""

from dagster import (
    AllPartitionMapping,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    PartitionsDefinition,
    asset,
    asset_check,
)

from haste_dagster.defs import steps
from haste_dagster.defs.resources import ArtifactsResource, SkillStoreResource

GROUP = "skills"


def build_domain_skills(domain_partitions: PartitionsDefinition) -> AssetsDefinition:
    """`domain_skills`, partitioned by the domains known when the code loads."""

    @asset(
        name="domain_skills",
        partitions_def=domain_partitions,
        group_name=GROUP,
        deps=[AssetDep("competition_skills", partition_mapping=AllPartitionMapping())],
        kinds={"python", "postgres"},
        description="Domain-tier skills promoted from competition skills that recur across "
        "competitions of the domain.",
    )
    def domain_skills(
        context: AssetExecutionContext, skill_store: SkillStoreResource
    ) -> MaterializeResult:
        return steps.domain_skills_step(
            context.partition_key, skill_store, run_id=context.run.run_id
        ).materialize_result()

    return domain_skills


@asset(
    group_name=GROUP,
    deps=[AssetDep("domain_skills", partition_mapping=AllPartitionMapping())],
    kinds={"python", "postgres"},
    description="Global-tier skills promoted from domain skills that recur across domains.",
)
def global_skills(
    context: AssetExecutionContext, skill_store: SkillStoreResource
) -> MaterializeResult:
    return steps.global_skills_step(skill_store, run_id=context.run.run_id).materialize_result()


@asset(
    group_name=GROUP,
    deps=[global_skills],
    kinds={"python", "yaml"},
    description="The skill inventory exported to skill_assets/ as reviewable files.",
)
def skill_inventory(
    skill_store: SkillStoreResource, artifacts: ArtifactsResource
) -> MaterializeResult:
    return steps.skill_inventory_step(skill_store, artifacts).materialize_result()


@asset_check(
    asset=skill_inventory,
    name="skills_valid_with_resolvable_lineage",
    description="Every skill passes schema validation and each lineage edge resolves to a stored "
    "skill version.",
)
def skills_valid_with_resolvable_lineage(
    context: AssetCheckExecutionContext, skill_store: SkillStoreResource
) -> AssetCheckResult:
    outcome = steps.skills_validity_step(skill_store)
    return AssetCheckResult(
        passed=outcome.passed, metadata=outcome.metadata, severity=outcome.severity
    )

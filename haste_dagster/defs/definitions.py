"""The one place that assembles HASTE's Dagster `Definitions` (loaded by workspace.yaml)."""

from collections.abc import Sequence
from typing import Any

from dagster import Definitions

from haste_dagster.defs.assets.competition import (
    attempt,
    competition_data,
    competition_skills,
    submission,
)
from haste_dagster.defs.assets.report import transfer_report
from haste_dagster.defs.assets.skills import (
    build_domain_skills,
    global_skills,
    skill_inventory,
    skills_valid_with_resolvable_lineage,
)
from haste_dagster.defs.distributed import build_distributed_attempt_job, job_shape_from_env
from haste_dagster.defs.executors import executor_from_env
from haste_dagster.defs.jobs import (
    build_campaign,
    consolidate_schedule,
    consolidate_skills,
    promote_domain,
    refresh_skills,
    solve_competition,
    transfer_benchmark,
)
from haste_dagster.defs.partitions import domain_partitions
from haste_dagster.defs.resources import (
    ArtifactsResource,
    DatabaseResource,
    EmbedderResource,
    LLMResource,
    SkillStoreResource,
)
from haste_dagster.defs.sensors import competition_defs_sensor


def default_resources() -> dict[str, Any]:
    database = DatabaseResource()
    embedder = EmbedderResource()
    return {
        "database": database,
        "embedder": embedder,
        "skill_store": SkillStoreResource(database=database, embedder=embedder),
        "llm": LLMResource(),
        "artifacts": ArtifactsResource(),
    }


def build_definitions(domains: Sequence[str] | None = None) -> Definitions:
    """All assets, checks, jobs, schedules, sensors and resources.

    ``domains`` defaults to the domains of the valid YAML files in competition_defs/.
    """
    domain_parts = domain_partitions(list(domains) if domains is not None else None)
    domain_keys = domain_parts.get_partition_keys()
    return Definitions(
        assets=[
            competition_data,
            attempt,
            submission,
            competition_skills,
            build_domain_skills(domain_parts),
            global_skills,
            skill_inventory,
            transfer_report,
        ],
        asset_checks=[skills_valid_with_resolvable_lineage],
        jobs=[
            solve_competition,
            promote_domain,
            refresh_skills,
            build_campaign(domain_keys),
            consolidate_skills,
            transfer_benchmark,
            build_distributed_attempt_job(*job_shape_from_env()),
        ],
        schedules=[consolidate_schedule()],
        sensors=[competition_defs_sensor],
        resources=default_resources(),
        executor=executor_from_env(),
    )


defs = build_definitions()

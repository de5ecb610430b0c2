"""The transfer report: a table of the latest attempts and their grades."""

from dagster import AllPartitionMapping, AssetDep, MaterializeResult, asset

from haste_dagster.defs import steps
from haste_dagster.defs.resources import ArtifactsResource, DatabaseResource


@asset(
    group_name="reports",
    deps=[AssetDep("submission", partition_mapping=AllPartitionMapping()), "skill_inventory"],
    kinds={"python", "postgres"},
    description="Latest finished attempt per competition, policy and loading mode: CV score, "
    "test score, medal, kept rate, skills loaded (cold vs warm comparisons build on it).",
)
def transfer_report(database: DatabaseResource, artifacts: ArtifactsResource) -> MaterializeResult:
    return steps.transfer_report_step(database, artifacts).materialize_result()

"""Per-competition assets (partition = competition slug):

competition_data → attempt → submission → competition_skills

Assets return metadata only; the data (attempts, iterations, predictions, skills) lives in
PostgreSQL. The skill store is a resource, not an upstream asset: an attempt reads skills
that other competitions' assets write, which as an asset edge would be a cycle.
"""

from dagster import AssetCheckSpec, AssetExecutionContext, MaterializeResult, asset

from haste_dagster.defs import audit, steps
from haste_dagster.defs.config import AttemptRunConfig
from haste_dagster.defs.executors import training_tags
from haste_dagster.defs.lineage import latest_attempt_id
from haste_dagster.defs.partitions import competition_partitions
from haste_dagster.defs.resources import (
    ArtifactsResource,
    DatabaseResource,
    LLMResource,
    SkillStoreResource,
)

GROUP = "competition"
# Executors (Celery, Kubernetes) can route on this tag; these steps fit and cross-validate.
# Fitting steps: Celery GPU queue / Kubernetes GPU resources when configured (executors.py).
TRAIN_TAGS = training_tags()


@asset(
    partitions_def=competition_partitions,
    group_name=GROUP,
    kinds={"python", "postgres"},
    description="The competition loaded from its YAML: training split, hidden test split, "
    "data profile.",
    check_specs=[
        AssetCheckSpec(
            "no_test_rows_in_train",
            asset="competition_data",
            blocking=True,  # a leaking split must never be trained on
            description="No hidden-test row id appears in the training data.",
        )
    ],
)
def competition_data(
    context: AssetExecutionContext, database: DatabaseResource
) -> MaterializeResult:
    return steps.competition_data_step(context.partition_key, database).materialize_result()


@asset(
    partitions_def=competition_partitions,
    group_name=GROUP,
    deps=[competition_data],
    kinds={"python", "scikitlearn"},
    op_tags=TRAIN_TAGS,
    description="One agent attempt: the refinement loop (propose patch → cross-validate → keep or "
    "revert) with the scoped skills read through the skill store.",
)
def attempt(
    context: AssetExecutionContext,
    config: AttemptRunConfig,
    skill_store: SkillStoreResource,
    llm: LLMResource,
    artifacts: ArtifactsResource,
) -> MaterializeResult:
    return steps.attempt_step(
        context.partition_key,
        config,
        skill_store=skill_store,
        llm=llm,
        artifacts=artifacts,
        instance=context.instance,
        run_id=context.run.run_id,
        log=context.log.info,
    ).materialize_result()


@asset(
    partitions_def=competition_partitions,
    group_name=GROUP,
    deps=[attempt],
    kinds={"python", "scikitlearn"},
    op_tags=TRAIN_TAGS,
    description="The best spec fitted on all training data, predictions on the hidden test split, "
    "graded against the leaderboard (score, rank, medal).",
    check_specs=[
        AssetCheckSpec(
            "grade_reproducible",
            asset="submission",
            description="Re-grading the stored predictions gives the stored score and medal.",
        )
    ],
)
def submission(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
    slug = context.partition_key
    attempt_id = latest_attempt_id(context.instance, slug)
    result = steps.submission_step(slug, attempt_id, database)
    # The attempt's page shows its hidden-test score and medal from now on.
    context.log_event(audit.grade_observation(slug, attempt_id, result.value))
    return result.materialize_result()


@asset(
    partitions_def=competition_partitions,
    group_name=GROUP,
    deps=[attempt, submission],
    kinds={"python", "postgres"},
    description="Competition-tier skills extracted from what the attempt kept (idempotent).",
)
def competition_skills(
    context: AssetExecutionContext, skill_store: SkillStoreResource
) -> MaterializeResult:
    slug = context.partition_key
    attempt_id = latest_attempt_id(context.instance, slug)
    return steps.competition_skills_step(
        slug, attempt_id, skill_store, run_id=context.run.run_id
    ).materialize_result()

"""What each asset does, as plain functions over the resources.

The assets (defs/assets/) and the `campaign` op job (defs/jobs.py) both call these, so a
competition solved by either path records the same rows and the same metadata.
Every function returns a :class:`StepResult`: Dagster metadata plus check outcomes.

Modules: ``result`` (StepResult), ``competition``, ``skills``, ``reports`` (by asset area).
"""

from haste_dagster.defs.steps.competition import (
    attempt_config,
    attempt_metadata,
    attempt_outcomes,
    attempt_step,
    competition_data_step,
    competition_skills_audit,
    competition_skills_step,
    fix_skills_step,
    learning_curve_metadata,
    load_competition,
    resume_attempt_id,
    run_is_live,
    submission_step,
)
from haste_dagster.defs.steps.reports import (
    REPORT_COLUMNS,
    markdown_table,
    transfer_benchmark_step,
    transfer_report_step,
)
from haste_dagster.defs.steps.result import (
    CheckOutcome,
    Log,
    StepResult,
)
from haste_dagster.defs.steps.skills import (
    consolidate_step,
    domain_skills_step,
    global_skills_step,
    skill_inventory_step,
    skills_validity_step,
)

__all__ = [
    "CheckOutcome",
    "Log",
    "REPORT_COLUMNS",
    "StepResult",
    "attempt_config",
    "attempt_metadata",
    "attempt_outcomes",
    "attempt_step",
    "competition_data_step",
    "competition_skills_audit",
    "competition_skills_step",
    "consolidate_step",
    "domain_skills_step",
    "fix_skills_step",
    "global_skills_step",
    "learning_curve_metadata",
    "load_competition",
    "markdown_table",
    "resume_attempt_id",
    "run_is_live",
    "skill_inventory_step",
    "skills_validity_step",
    "submission_step",
    "transfer_benchmark_step",
    "transfer_report_step",
]

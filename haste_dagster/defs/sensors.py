"""The sensor that turns new competition YAML files into `competition` partitions."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from haste_dagster.config import competition_defs_dir
from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME, competition_partitions


@sensor(
    name="competition_defs_sensor",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds a `competition` partition for each new valid YAML in competition_defs/; "
    "reports broken files without stopping.",
)
def competition_defs_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    from haste_dagster.competitions import load_definitions

    defs_dir = competition_defs_dir()
    # check_data=False: a tick must stay cheap; data problems surface in competition_data.
    definitions, errors = load_definitions(defs_dir, check_data=False)
    for error in errors:
        context.log.warning(f"broken competition definition: {error}")
    existing = set(context.instance.get_dynamic_partitions(COMPETITION_PARTITIONS_NAME))
    new = sorted({d.slug for d in definitions} - existing)
    if new:
        context.log.info(f"adding competition partitions: {', '.join(new)}")
    broken = "; ".join(str(e) for e in errors)
    summary = f"{len(new)} new competition(s) in {defs_dir}" + (
        f"; {len(errors)} broken definition(s): {broken}" if errors else ""
    )
    if not new:
        return SkipReason(summary if errors else f"no new competition definitions in {defs_dir}")
    # A result with partition requests and no run requests may still carry the broken-file
    # report as its skip reason, so it shows on the tick in the UI.
    return SensorResult(
        dynamic_partitions_requests=[competition_partitions.build_add_request(new)],
        skip_reason=summary if errors else None,
    )

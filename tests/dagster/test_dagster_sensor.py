"""The competition_defs sensor: new valid YAML → new partition; broken YAML → reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME
from haste_dagster.defs.sensors import competition_defs_sensor


def _tick(instance: DagsterInstance) -> SensorResult | SkipReason:
    result = competition_defs_sensor(build_sensor_context(instance=instance))
    if isinstance(result, SensorResult):  # the daemon applies these; do it by hand here
        for request in result.dynamic_partitions_requests or []:
            keys = list(request.partition_keys)
            instance.add_dynamic_partitions(request.partitions_def_name, keys)
    return result


def test_sensor_adds_new_competitions_and_reports_broken_files_without_stopping(
    tiny_env: dict[str, Path], competition_writer: Callable[..., Path]
) -> None:
    defs = tiny_env["defs"]
    (defs / "broken_one.yaml").write_text("slug: broken_one\ntitle: [unclosed\n")
    with DagsterInstance.ephemeral() as instance:
        first = _tick(instance)
        assert isinstance(first, SensorResult)
        (request,) = first.dynamic_partitions_requests
        assert request.partitions_def_name == COMPETITION_PARTITIONS_NAME
        assert sorted(request.partition_keys) == ["tiny_alpha", "tiny_beta"]
        assert "broken_one.yaml" in first.skip_reason.skip_message

        second = _tick(instance)  # nothing new; the broken file is still reported
        assert isinstance(second, SkipReason) and "broken_one.yaml" in second.skip_message

        competition_writer(defs, "tiny_gamma", seed=9)
        third = _tick(instance)
        assert isinstance(third, SensorResult)
        assert list(third.dynamic_partitions_requests[0].partition_keys) == ["tiny_gamma"]
        assert set(instance.get_dynamic_partitions(COMPETITION_PARTITIONS_NAME)) == {
            "tiny_alpha",
            "tiny_beta",
            "tiny_gamma",
        }

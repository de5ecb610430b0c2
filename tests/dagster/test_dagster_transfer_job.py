"""The transfer benchmark as a Dagster job: its figures and plots land on transfer_report."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import AssetKey

from haste_dagster.defs.definitions import build_definitions
from haste_dagster.defs.instance import dagster_instance

SLUGS = ("tiny_alpha", "tiny_beta")  # written by the tiny_env fixture


def test_transfer_benchmark_job_records_figures_and_plots_on_transfer_report(
    db_url: str, tiny_env: dict[str, Path]
) -> None:
    defs = build_definitions(domains=["tabular_regression"])
    instance = dagster_instance(db_url, tiny_env["dagster_home"])
    try:
        config = {
            "quick": False,
            "competitions": [SLUGS[0]],
            "evaluation": [SLUGS[1]],
            "defs_dirs": [str(tiny_env["defs"])],
            "seeds": 1,
            "iterations": 2,
            "peers": [],  # FLAML has its own test in tests/bench; this checks the wiring
            "campaign_seed": 5,
        }
        result = defs.resolve_job_def("transfer_benchmark").execute_in_process(
            instance=instance, run_config={"ops": {"transfer_benchmark_op": {"config": config}}}
        )
        assert result.success
        event = instance.get_latest_materialization_event(AssetKey("transfer_report"))
        assert event is not None and event.run_id == result.run_id
        metadata = event.asset_materialization.metadata
        report = json.loads(Path(metadata["bench_json_path"].value).read_text())
        assert report["development"] == [SLUGS[0]] and report["evaluation"] == [SLUGS[1]]
        assert report["seeds"] == [5]  # the evaluation seeds start at the campaign seed
        assert [a["seed"] for a in report["campaign"] if a["arm"] == "campaign"] == [5]
        assert metadata["intervals"].value == report["uncertainty"]
        assert metadata["proposals"].value == report["proposals"]
        assert metadata["warm_cold_iteration_ratio"].value == report["warm_cold_iteration_ratio"]
        assert set(metadata["ablation_medal_rate"].value) == {"tiered", "flat", "none"}
        for plot in ("learning_curves", "kept_rate", "ablation"):
            assert metadata[f"plot_{plot}"].value.startswith(f"![{plot}](data:image/png;base64,")
    finally:
        instance.dispose()

"""`haste bench cpu` and `haste bench overhead` on a tiny competition (real runs, no timings
asserted: the benches print figures, the tests check what they report is consistent)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_competitions import write_tiny_regression

from haste_dagster.bench.cpu import STAGES, markdown_table, run_cpu_bench
from haste_dagster.bench.overhead import OverheadBenchError, OverheadOptions, run_overhead_bench


@pytest.fixture
def tiny_defs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "defs"
    write_tiny_regression(folder, "tiny_cpu", seed=3, rows=240)
    monkeypatch.setenv("HASTE_COMPETITION_DEFS", str(folder))
    monkeypatch.setenv("HASTE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("HASTE_SKILL_ASSETS", str(tmp_path / "skill_assets"))
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    return folder


def test_cpu_bench_runs_the_same_attempt_with_the_cache_off_and_on(
    db_url: str, tiny_defs: Path
) -> None:
    report = run_cpu_bench(["tiny_cpu"], iterations=4, seed=0, defs_dir=tiny_defs, url=db_url)
    (row,) = report["competitions"]
    assert row["same_scores"] and row["same_test_score"]
    assert row["before"]["fold_cache"] is None  # HASTE_FOLD_CACHE_MB=0: no cache at all
    cache = row["after"]["fold_cache"]
    assert cache["misses"] >= 3 and cache["bytes"] <= cache["max_bytes"]
    for side in ("before", "after"):
        cpu = row[side]["cpu_seconds"]
        assert set(cpu) == {*STAGES, "total"}
        assert cpu["total"] == pytest.approx(sum(cpu[s] for s in STAGES), abs=1e-2)
    table = markdown_table(report)
    assert "| tiny_cpu |" in table and "True |" in table


def test_overhead_bench_reports_solve_and_dagster_runs_of_the_same_attempt(
    db_url: str, tiny_defs: Path
) -> None:
    options = OverheadOptions(slug="tiny_cpu", iterations=2, runs=1, forms=("solve", "in_process"))
    report = run_overhead_bench(options, url=db_url)
    runs = {r["form"]: r for r in report["runs"]}
    assert set(runs) == {"solve", "in_process"}
    assert runs["solve"]["iterations"] == 3  # baseline + 2
    dagster = runs["in_process"]["dagster"]
    assert dagster["success"] and dagster["events"] > 0
    assert set(dagster["steps"]) == {
        "competition_data",
        "attempt",
        "submission",
        "competition_skills",
    }
    assert dagster["run_seconds"] <= runs["in_process"]["wall_seconds"]
    assert report["ratio_to_solve"]["in_process"]["wall"] > 0


def test_overhead_bench_needs_the_solve_baseline() -> None:
    with pytest.raises(OverheadBenchError, match="include 'solve'"):
        run_overhead_bench(OverheadOptions(forms=("in_process",)))

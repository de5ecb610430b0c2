"""`haste bench pipeline`'s comparison, verdict and merge of shards, on hand-made runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from haste_dagster.bench.measure import Usage
from haste_dagster.bench.pipeline import ArmRun, compare, merge_reports, verdict
from haste_dagster.cli.bench import app as bench_app
from haste_dagster.errors import ConfigError


def _run(arm: str, score: float, percentile: float, se: float = 0.1, **kw) -> ArmRun:
    return ArmRun(
        arm=arm, slug="c", seed=0, attempt_id=1, evaluations=11, best_cv=score,
        test_score=score, medal="none", rank=1, n_teams=10, percentile=percentile,
        bootstrap_se=se, usage=Usage(1.0, 1.0), **kw,
    )


def test_staged_within_one_standard_error_counts_as_better_or_equal() -> None:
    # lower is better: staged worse by 0.05 < SE 0.1 → better-or-equal, not strictly better
    c = compare([_run("straight", 1.0, 0.5), _run("staged", 1.05, 0.4)], higher_is_better=False)
    assert c["better_or_equal"] and not c["strictly_better"]
    c = compare([_run("straight", 1.0, 0.5), _run("staged", 1.2, 0.4)], higher_is_better=False)
    assert not c["better_or_equal"]
    c = compare(
        [_run("straight", 0.8, 0.5), _run("staged", 0.9, 0.7, runner_up_won=True,
                                          ensemble_kept=True)],
        higher_is_better=True,
    )
    assert c["strictly_better"] and c["staged"]["runner_up_won"] == 1
    assert c["staged"]["ensemble_kept"] == 1


def test_verdict_needs_the_share_of_competitions_and_a_better_mean_percentile() -> None:
    good = compare([_run("straight", 1.0, 0.5), _run("staged", 0.9, 0.6)], False)
    bad = compare([_run("straight", 1.0, 0.5), _run("staged", 2.0, 0.4)], False)
    assert verdict({"a": good, "b": good, "c": good, "d": bad})["met"]  # 3 of 4 = 12 of 16
    v = verdict({"a": good, "b": good, "c": bad, "d": bad})
    assert not v["met"] and v["better_or_equal"] == 2 and v["needed"] == 3
    # enough competitions but a worse mean percentile: missed
    tie = compare([_run("straight", 1.0, 0.9), _run("staged", 1.0, 0.5)], False)
    assert not verdict({"a": tie})["met"]


def _report(slugs: dict[str, bool], seeds: int = 3) -> dict:
    """A complete report whose competitions are better-or-equal as ``slugs`` says."""
    good = compare([_run("straight", 1.0, 0.5), _run("staged", 0.9, 0.6)], False)
    bad = compare([_run("straight", 1.0, 0.5), _run("staged", 2.0, 0.4)], False)
    return {
        "complete": True,
        "options": {"competitions": list(slugs), "seeds": seeds, "iterations": None,
                    "policy": "heuristic", "defs_dir": None},
        "per_competition": {s: good if ok else bad for s, ok in slugs.items()},
        "runs": [{"slug": s} for s in slugs],
        "usage": {"wall_seconds": 10.0 * len(slugs), "cpu_seconds": 9.0 * len(slugs)},
    }


def test_merged_shards_give_the_verdict_over_all_their_competitions() -> None:
    # alone, each shard misses (2 of 3 is under 75 %); together 6 of 8 meets it
    a = _report({"a1": True, "a2": True, "a3": False, "a4": True})
    b = _report({"b1": True, "b2": True, "b3": False, "b4": True})
    merged = merge_reports({Path("a.json"): a, Path("b.json"): b})
    assert merged["verdict"]["competitions"] == 8
    assert merged["verdict"]["better_or_equal"] == 6 and merged["verdict"]["met"]
    assert merged["options"]["competitions"] == ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"]
    assert len(merged["runs"]) == 8
    assert merged["usage"] == {"wall_seconds": 40.0, "cpu_seconds": 72.0}


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (_report({"b": True}, seeds=1), "seeds is 1"),
        (_report({"a": True}), "a is measured in another report"),
    ],
)
def test_merge_refuses_shards_that_cannot_be_compared(second: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        merge_reports({Path("a.json"): _report({"a": True}), Path("b.json"): second})


def test_a_stopped_run_contributes_the_competitions_it_finished() -> None:
    stopped = {**_report({"a": True, "b": False}), "complete": False}
    rest = _report({"c": True, "d": True})
    merged = merge_reports({Path("stopped.json"): stopped, Path("rest.json"): rest})
    assert not merged["complete"]  # the stopped run's current competition is not in it
    assert merged["verdict"]["competitions"] == 4 and merged["verdict"]["met"]


def test_cli_merge_names_the_file_that_is_not_a_report(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_report({"a": True})))
    bad.write_text("{not json")
    result = CliRunner().invoke(bench_app, ["pipeline", "--merge", str(good), "--merge", str(bad)])
    assert result.exit_code == 2
    assert "bad.json" in " ".join(result.output.split())
    out = tmp_path / "merged.json"
    result = CliRunner().invoke(bench_app, ["pipeline", "--merge", str(good), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["verdict"]["competitions"] == 1

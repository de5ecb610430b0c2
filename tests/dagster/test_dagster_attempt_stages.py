"""The `attempt` asset's metadata and learning curve show the staged pipeline's stages."""

from __future__ import annotations

from pathlib import Path

from dagster import MetadataValue

from haste_dagster.agents.attempts import AttemptResult
from haste_dagster.defs.plots import learning_curve_png
from haste_dagster.defs.steps import attempt_metadata

ITERATIONS = [
    {"idx": 0, "branch": "screen", "score": 1.2, "kept": False},
    {"idx": 1, "branch": "screen", "score": 2.7, "kept": False},
    {"idx": 2, "branch": "screen", "score": 1.6, "kept": False},
    {"idx": 3, "branch": "winner", "score": 1.0, "kept": True},
    {"idx": 4, "branch": "winner", "score": 0.9, "kept": True},
    {"idx": 5, "branch": "runner_up", "score": 1.5, "kept": True},
    {"idx": 6, "branch": "ensemble", "score": 0.85, "kept": True},
]
MEMBER = {"branch": "winner", "idx": 4, "family": "xgboost", "cv_mean": 0.9, "spec": {}}


def _result() -> AttemptResult:
    return AttemptResult(
        attempt_id=7, slug="x", policy="heuristic", loading="none", seed=0, best_spec={},
        best_cv=0.85, kept_rate=1.0, iterations=ITERATIONS, skills_loaded=[],
        extra={
            "pipeline": "staged",
            "split": {"screen": 3, "winner": 2, "runner_up": 1, "ensemble": 1},
            "prototypes": {"screened": [{"name": "boosted_trees", "family": "xgboost",
                                         "fold_score": 1.2}], "winner": "boosted_trees"},
            "branches": {"winner": {"rows": 2}, "runner_up": {"rows": 1}},
            "best_branch": "winner",
            "ensemble": {"kept": True, "cv_mean": 0.85, "combine": "mean",
                         "members": [MEMBER, {**MEMBER, "branch": "runner_up", "idx": 5}]},
            "submission": "ensemble",
        },
    )


def test_staged_attempt_metadata_lists_prototypes_branches_and_the_kept_ensemble() -> None:
    metadata = attempt_metadata(_result())
    assert metadata["pipeline"] == "staged" and metadata["submission"] == "ensemble"
    stages = metadata["stages"]
    assert isinstance(stages, type(MetadataValue.json({})))
    assert stages.data["prototypes"]["winner"] == "boosted_trees"
    assert stages.data["best_branch"] == "winner"
    ensemble = metadata["ensemble"].data
    assert ensemble["kept"] is True
    assert [m["branch"] for m in ensemble["members"]] == ["winner", "runner_up"]
    assert "spec" not in ensemble["members"][0]  # the members' specs stay in the JSON result


def test_straight_attempt_metadata_has_no_stage_entries() -> None:
    result = _result()
    result.extra = {}
    assert "stages" not in attempt_metadata(result)


def test_learning_curve_of_a_staged_attempt_is_written(tmp_path: Path) -> None:
    png = learning_curve_png(ITERATIONS, tmp_path / "c.png", title="t", higher_is_better=False)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""Multi-target solving parts: the per-column metric mapping, the single-target views, the
budget split, and skills extracted by sub-attempts (scoped to the competition, idempotent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlebench_layout import write_layout

from haste_dagster.agents import records
from haste_dagster.agents.attempts import AttemptConfig
from haste_dagster.agents.multitarget import split_budget
from haste_dagster.agents.orchestrator import extract_skills, solve
from haste_dagster.competitions.metrics import METRICS, get_metric
from haste_dagster.competitions.mlebench import import_mlebench
from haste_dagster.competitions.profile import profile_data
from haste_dagster.competitions.registry import load_competition, target_view


def _defs(tmp_path: Path, kind: str) -> Path:
    layout = write_layout(tmp_path, kind=kind)
    out = tmp_path / "defs"
    import_mlebench(layout.data_dir, out, registry=layout.registry)
    return out


def test_every_multi_target_metric_is_the_mean_of_its_per_column_metric() -> None:
    rng = np.random.default_rng(0)
    y_labels = rng.integers(0, 2, size=(50, 3))
    y_values = rng.gamma(2.0, size=(50, 3))
    p = rng.uniform(size=(50, 3))
    multi = [m for m in METRICS.values() if m.multi_target]
    assert {m.name for m in multi} == {"mean_columnwise_roc_auc", "mean_columnwise_rmsle"}
    for metric in multi:
        per = get_metric(metric.per_column)
        assert not per.multi_target and per.higher_is_better == metric.higher_is_better
        y = y_labels if metric.prediction == "multilabel" else y_values
        classes = [0, 1] if metric.prediction == "multilabel" else None
        columns = [per(y[:, j], p[:, j], classes) for j in range(3)]
        assert metric(y, p) == pytest.approx(np.mean(columns))


@pytest.mark.parametrize(("kind", "metric"), [("multitarget", "rmsle"), ("multilabel", "roc_auc")])
def test_target_view_is_one_target_with_the_per_column_metric(
    tmp_path: Path, kind: str, metric: str
) -> None:
    competition = load_competition("synthetic-playground", _defs(tmp_path, kind))
    first, second = competition.definition.targets
    view = target_view(competition, second)
    assert (view.definition.target, view.definition.metric, view.metric.name) == (
        second, metric, metric
    )
    assert view.problem.targets is None and view.problem.target == second
    assert first not in view.train.columns and second in view.train.columns
    assert view.problem.feature_columns == competition.problem.feature_columns
    assert view.definition.medals is None and view.definition.sample_submission is None
    assert view.slug == competition.slug and view.definition.path == competition.definition.path
    assert profile_data(view).task == competition.definition.task
    if kind == "multilabel":
        assert view.problem.classes == [0, 1]


def test_iteration_budget_is_split_evenly_with_at_least_one_each() -> None:
    assert split_budget(2, 2) == [1, 1]
    assert split_budget(7, 3) == [3, 2, 2]
    assert split_budget(2, 3) == [1, 1, 1]
    assert sum(split_budget(20, 6)) == 20


def test_sub_attempts_extract_competition_skills_once(
    conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    defs = _defs(tmp_path, "multitarget")
    result = solve(conn, "synthetic-playground", AttemptConfig(iterations=4), defs_dir=defs)
    subs = records.sub_attempts(conn, result.attempt.attempt_id)
    assert list(subs) == ["energy", "bandgap"]
    skills = conn.execute(
        "SELECT id, scope_key, source_attempt FROM skills WHERE is_current"
    ).fetchall()
    assert {s["id"] for s in skills} == set(result.new_skills)
    assert {s["source_attempt"] for s in skills} <= set(subs.values())
    assert {s["scope_key"] for s in skills} <= {"synthetic-playground"}
    kept = any(it["kept"] and it["idx"] > 0 for it in result.attempt.iterations)
    assert bool(skills) == kept
    # Extraction again, per target, writes nothing new.
    competition = load_competition("synthetic-playground", defs)
    for target, attempt_id in subs.items():
        extract_skills(conn, target_view(competition, target), attempt_id)
    again = conn.execute("SELECT count(*) AS n FROM skills WHERE is_current").fetchone()["n"]
    assert again == len(skills)


def test_a_multi_target_attempt_refines_every_target_in_the_pipeline_it_was_asked_for(
    conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    defs = _defs(tmp_path, "multitarget")
    result = solve(conn, "synthetic-playground", AttemptConfig(iterations=8, pipeline="staged"),
                   defs_dir=defs, extract=False)
    parent = records.get_attempt(conn, result.attempt.attempt_id)
    assert parent.pipeline == "staged"
    for attempt_id in records.sub_attempts(conn, parent.id).values():
        assert records.get_attempt(conn, attempt_id).pipeline == "staged"
        branches = {r.branch for r in records.load_iterations(conn, attempt_id)}
        assert "screen" in branches  # it screened prototypes, not the straight line

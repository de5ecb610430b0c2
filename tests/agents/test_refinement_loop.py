from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from haste_dagster import db
from haste_dagster.agents.attempts import AttemptConfig, paired_improvement, should_keep
from haste_dagster.agents.orchestrator import solve
from haste_dagster.agents.policy import Proposal
from haste_dagster.solution.spec import Patch


def _haste(*args: str, env_url: str) -> list[str]:
    return [sys.executable, "-m", "haste_dagster", *args]


def _env(db_url: str) -> dict[str, str]:
    return {**os.environ, "HASTE_DATABASE_URL": db_url, "PYTHONUNBUFFERED": "1"}


def _iteration_rows(conn: psycopg.Connection, attempt_id: int) -> list[dict]:
    return conn.execute(
        "SELECT idx, patch, cv_mean, fold_scores, kept, created_at FROM iterations "
        "WHERE attempt_id = %s ORDER BY idx",
        (attempt_id,),
    ).fetchall()


def test_keep_rule_needs_a_paired_gain_beyond_half_a_standard_error() -> None:
    incumbent = [1.0, 1.0, 1.0]
    assert should_keep([0.9, 0.9, 0.9], incumbent, 1.0, higher_is_better=False)
    assert not should_keep([1.1, 1.1, 1.1], incumbent, 1.0, higher_is_better=False)
    # mean gain 0.01 but the folds disagree wildly: within noise
    assert not should_keep([0.5, 1.5, 0.97], incumbent, 1.0, higher_is_better=False)
    assert should_keep([1.2, 1.3, 1.25], incumbent, 1.0, higher_is_better=True)


def test_keep_rule_boundary_sits_at_half_a_standard_error_of_the_paired_gain() -> None:
    # Both candidates gain 0.1 on every-other fold pattern; only the fold noise differs.
    incumbent = [1.0, 1.0, 1.0, 1.0]
    at_0_87_se = [1.3, 0.9, 1.3, 0.9]  # gain 0.1, standard error 0.115: gain = 0.87 se
    at_0_43_se = [1.5, 0.7, 1.5, 0.7]  # gain 0.1, standard error 0.231: gain = 0.43 se
    gain, se = paired_improvement(at_0_87_se, incumbent, higher_is_better=True)
    assert gain == pytest.approx(0.1) and gain / se == pytest.approx(0.866, abs=1e-3)
    gain, se = paired_improvement(at_0_43_se, incumbent, higher_is_better=True)
    assert gain / se == pytest.approx(0.433, abs=1e-3)
    # Kept above 0.5 se (a doubled KEEP_Z would reject it), rejected below (a halved one
    # would keep it).
    assert should_keep(at_0_87_se, incumbent, 1.0, higher_is_better=True)
    assert not should_keep(at_0_43_se, incumbent, 1.0, higher_is_better=True)
    # The same boundary for a lower-is-better metric (the gain's sign flips).
    mirrored = [2.0 - v for v in at_0_87_se]
    assert should_keep(mirrored, incumbent, 1.0, higher_is_better=False)
    assert not should_keep(at_0_87_se, incumbent, 1.0, higher_is_better=False)


def test_keep_rule_rejects_a_noise_free_gain_below_a_relative_1e4_of_the_incumbent() -> None:
    # Identical on every fold, so the standard error is 0 and only MIN_REL_GAIN decides.
    incumbent = [10.0, 10.0, 10.0]
    below = [10.0005] * 3  # +5e-5 relative
    above = [10.002] * 3  # +2e-4 relative
    assert paired_improvement(below, incumbent, higher_is_better=True)[1] == 0.0
    assert not should_keep(below, incumbent, 10.0, higher_is_better=True)
    assert should_keep(above, incumbent, 10.0, higher_is_better=True)
    # Relative to |incumbent|: a negative incumbent (e.g. r2 < 0) uses its magnitude.
    assert not should_keep([-9.9995] * 3, [-10.0] * 3, -10.0, higher_is_better=True)
    assert should_keep([-9.998] * 3, [-10.0] * 3, -10.0, higher_is_better=True)


def test_solve_json_matches_the_recorded_rows(db_url: str, tiny_defs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = subprocess.run(
        _haste(
            "solve",
            "tiny_regression",
            "--iterations",
            "5",
            "--json",
            str(out),
            "--defs",
            str(tiny_defs),
            env_url=db_url,
        ),
        env=_env(db_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert {"slug", "score", "medal", "kept_rate", "iterations"} <= result.keys()
    assert result["slug"] == "tiny_regression"
    assert result["medal"] in {"gold", "silver", "bronze", "none"}
    with db.connection(db_url) as conn:
        rows = _iteration_rows(conn, result["attempt_id"])
        attempt = conn.execute(
            "SELECT test_score, medal FROM attempts WHERE id = %s", (result["attempt_id"],)
        ).fetchone()
    assert [r["idx"] for r in rows] == [it["idx"] for it in result["iterations"]]
    assert [r["cv_mean"] for r in rows] == [it["score"] for it in result["iterations"]]
    assert [r["kept"] for r in rows] == [it["kept"] for it in result["iterations"]]
    assert all("skills" in it for it in result["iterations"])
    assert attempt["test_score"] == pytest.approx(result["score"])
    assert attempt["medal"] == result["medal"]
    scored = result["iterations"][1:]
    assert result["kept_rate"] == pytest.approx(sum(it["kept"] for it in scored) / len(scored))


def test_sigkill_mid_attempt_then_resume_keeps_every_iteration(
    db_url: str, tiny_defs: Path
) -> None:
    # no skills: the first attempt writes skills the reference attempt would otherwise load
    args = [
        "solve",
        "tiny_regression",
        "--iterations",
        "6",
        "--seed",
        "3",
        "--loading",
        "none",
        "--defs",
        str(tiny_defs),
    ]
    proc = subprocess.Popen(
        _haste(*args, env_url=db_url),
        env=_env(db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    with db.connection(db_url) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT max(idx) AS n, min(attempt_id) AS a FROM iterations"
            ).fetchone()
            if row["n"] is not None and row["n"] >= 2:
                break
            assert proc.poll() is None, "the attempt ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        attempt_id = row["a"]
        before = _iteration_rows(conn, attempt_id)
        assert (
            conn.execute("SELECT status FROM attempts WHERE id = %s", (attempt_id,)).fetchone()[
                "status"
            ]
            == "running"
        )
    assert len(before) >= 3

    resumed = subprocess.run(
        _haste(*args, "--resume", env_url=db_url),
        env=_env(db_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = subprocess.run(
        _haste(*args, env_url=db_url), env=_env(db_url), capture_output=True, text=True, timeout=300
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    with db.connection(db_url) as conn:
        attempts = conn.execute("SELECT id, status FROM attempts ORDER BY id").fetchall()
        assert [a["status"] for a in attempts] == [
            "finished",
            "finished",
        ]  # resume reused the attempt
        after = _iteration_rows(conn, attempt_id)
        reference = _iteration_rows(conn, attempts[1]["id"])
    assert after[: len(before)] == before  # nothing recorded was lost or rewritten
    assert [r["idx"] for r in after] == list(range(len(after)))  # no duplicates, no gaps
    strip = [(r["idx"], r["patch"], r["cv_mean"], r["kept"]) for r in after]
    assert strip == [(r["idx"], r["patch"], r["cv_mean"], r["kept"]) for r in reference]


class _InvalidThenGivesUp:
    """A policy whose proposal names a parameter that does not exist."""

    name = "invalid"

    def __init__(self, inner) -> None:
        self.inner = inner

    def initial_spec(self, problem, profile, skills):
        return self.inner.initial_spec(problem, profile, skills)

    def propose(self, ctx):
        if ctx.iteration > 1:
            return None
        patch = Patch.model_validate(
            {"ops": [{"op": "set", "path": "model.params.no_such_param", "value": 3}]}
        )
        return Proposal(patch=patch, rationale="try a parameter that does not exist", skill_ids=[])


def test_an_invalid_patch_is_recorded_as_a_failed_iteration(db_url: str, tiny_defs: Path) -> None:
    from haste_dagster.agents.heuristic import HeuristicPolicy

    with db.connection(db_url) as conn:
        result = solve(
            conn,
            "tiny_regression",
            AttemptConfig(iterations=3),
            defs_dir=tiny_defs,
            policy=_InvalidThenGivesUp(HeuristicPolicy()),
        )
        rows = _iteration_rows(conn, result.attempt.attempt_id)
        errors = conn.execute(
            "SELECT error FROM iterations WHERE attempt_id = %s AND idx = 1",
            (result.attempt.attempt_id,),
        ).fetchone()
    assert [r["idx"] for r in rows] == [0, 1]
    assert rows[1]["kept"] is False and rows[1]["cv_mean"] is None
    assert "no_such_param" in errors["error"]
    assert result.attempt.stopped == "exhausted"


class _InertThenReal:
    """Proposes a change that leaves every fold's features as they are, then a real one once
    the history marks the first inert."""

    name = "inert-then-real"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.contexts: list = []

    def initial_spec(self, problem, profile, skills):
        return self.inner.initial_spec(problem, profile, skills)

    def propose(self, ctx):
        self.contexts.append(ctx)
        if ctx.iteration > 1:
            return None
        if not any(r.error and r.error.startswith("inert") for r in ctx.history):
            path, value = "numeric.skew_threshold", 3.5  # the skew step is off: no effect
        else:
            path, value = "model.params.max_depth", 2
        patch = Patch.model_validate({"ops": [{"op": "set", "path": path, "value": value}]})
        return Proposal(patch=patch, rationale=f"set {path}", skill_ids=[])


def test_an_inert_proposal_is_not_evaluated_and_spends_no_iteration(
    db_url: str, tiny_defs: Path
) -> None:
    from haste_dagster.agents.heuristic import HeuristicPolicy

    policy = _InertThenReal(HeuristicPolicy())
    with db.connection(db_url) as conn:
        result = solve(
            conn, "tiny_regression", AttemptConfig(iterations=3), defs_dir=tiny_defs,
            policy=policy,
        )
        rows = conn.execute(
            "SELECT idx, patch, detail, cv_mean FROM iterations WHERE attempt_id = %s "
            "ORDER BY idx",
            (result.attempt.attempt_id,),
        ).fetchall()
    assert [r["idx"] for r in rows] == [0, 1]
    evaluated = rows[1]
    assert evaluated["patch"]["ops"][0]["path"] == "model.params.max_depth"
    assert evaluated["cv_mean"] is not None
    [inert] = evaluated["detail"]["inert"]
    assert result.attempt.extra["inert_skipped"] == 1
    assert inert["patch"]["ops"][0]["path"] == "numeric.skew_threshold"
    # the policy was asked again for the same iteration, with the inert proposal in its history
    second = policy.contexts[1]
    assert second.iteration == 1 and second.history[-1].error.startswith("inert")
    # and the next iteration's history, rebuilt from the rows, still holds it before row 1
    third = policy.contexts[2]
    assert third.iteration == 2 and [r.error is not None for r in third.history] == [
        False, True, False]

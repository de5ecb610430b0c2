"""The transfer benchmark: its measures, its plan, its throwaway databases, and one tiny run
through the CLI whose JSON is checked against the rows it wrote."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import psycopg
import pytest
import yaml
from psycopg.rows import dict_row
from tiny_competitions import write_tiny_regression
from typer.testing import CliRunner

from haste_dagster import db
from haste_dagster.agents.heuristic import move_key
from haste_dagster.bench.measure import Stopwatch, Usage
from haste_dagster.bench.transfer import (
    AttemptRecord,
    BenchmarkError,
    TransferOptions,
    evaluations_to_reach,
    figures,
    incumbent_curve,
    outcomes_from_json,
    pair_ratio,
    plan_benchmark,
    pooled_proposals,
    proposal_counts,
)
from haste_dagster.cli.bench import app as bench_app
from haste_dagster.skills.model import Kind


def _write_regression(folder: Path, slug: str, coef: float, seed: int, rows: int = 300) -> Path:
    return write_tiny_regression(folder, slug, seed, rows, coef=coef)


@pytest.fixture
def two_tiny(tmp_path: Path) -> Path:
    folder = tmp_path / "defs"
    folder.mkdir()
    _write_regression(folder, "tiny_dev", coef=3.0, seed=7)
    _write_regression(folder, "tiny_eval", coef=2.5, seed=11)
    return folder


def _rows(*pairs: tuple[float | None, bool]) -> list[dict]:
    return [{"idx": i, "score": s, "kept": k} for i, (s, k) in enumerate(pairs)]


def _record(
    arm: str, iterations: list[dict], best: float, budget: int, higher: bool
) -> AttemptRecord:
    return AttemptRecord(
        phase="evaluation",
        arm=arm,
        slug="c",
        domain="d",
        seed=0,
        loading="tiered",  # type: ignore[arg-type]
        attempt_id=1,
        database="x",
        higher_is_better=higher,
        budget=budget,
        inventory_size=0,
        skills_loaded=0,
        skills_loaded_by_tier={},
        skill_ids_loaded=[],
        best_cv=best,
        kept_rate=0.0,
        scored_iterations=len(iterations) - 1,
        stopped="budget",
        iterations=iterations,
        prompt_tokens=0,
        completion_tokens=0,
        search=Usage(),
        submission=Usage(),
        test_score=None,
        medal=None,
        rank=None,
        n_teams=None,
        percentile=None,
        bootstrap_se=None,
    )


# ---- measures -----------------------------------------------------------------------------


def test_incumbent_curve_only_moves_on_kept_iterations() -> None:
    rows = _rows((1.0, True), (0.5, False), (0.8, True), (None, False), (0.7, True))
    assert incumbent_curve(rows, higher_is_better=False) == [1.0, 1.0, 0.8, 0.8, 0.7]


def test_a_staged_attempts_screen_spends_evaluations_but_never_reaches_a_score() -> None:
    """Screen rows are scored on one fold: they count as evaluations, but their scores are
    not cross-validated incumbents. Each branch keeps its own incumbent, so a runner-up's
    kept row below the winner's best does not lower the curve."""
    rows = _rows((0.95, True), (0.70, True), (0.60, True),  # the screen: one fold each
                 (0.80, True), (0.84, True), (0.82, False),  # the winner's branch
                 (0.72, True), (0.83, False))  # the runner-up's branch, then the ensemble
    for row, branch in zip(rows, ["screen"] * 3 + ["winner"] * 3 + ["runner_up", "ensemble"],
                           strict=True):
        row["branch"] = branch
    assert incumbent_curve(rows, higher_is_better=True) == [
        None, None, None, 0.80, 0.84, 0.84, 0.84, 0.84]
    assert evaluations_to_reach(rows, 0.80, higher_is_better=True) == 4  # not the screen's 0.95
    assert evaluations_to_reach(rows, 0.90, higher_is_better=True) is None


def test_evaluations_to_reach_count_the_baseline_and_respect_the_metric_direction() -> None:
    lower = _rows((1.0, True), (0.9, False), (0.8, True), (0.7, True))
    assert evaluations_to_reach(lower, 1.0, higher_is_better=False) == 1
    assert evaluations_to_reach(lower, 0.8, higher_is_better=False) == 3
    # iteration 1 scored 0.9 but was not kept: reaching needs a kept score
    assert evaluations_to_reach(lower, 0.9, higher_is_better=False) == 3
    assert evaluations_to_reach(lower, 0.6, higher_is_better=False) is None
    higher = _rows((0.5, True), (0.7, True))
    assert evaluations_to_reach(higher, 0.6, higher_is_better=True) == 2


def test_a_warm_run_that_never_reaches_cold_is_censored_at_its_budget() -> None:
    cold = _record(
        "cold", _rows((1.0, True), (0.9, True), (0.95, False), (0.8, True)), 0.8, 3, False
    )
    never = _record(
        "warm", _rows((0.95, True), (0.9, True), (0.85, True), (0.9, False)), 0.85, 3, False
    )
    quick = _record(
        "warm", _rows((0.79, True), (0.9, False), (0.9, False), (0.9, False)), 0.79, 3, False
    )
    censored = pair_ratio(cold, never)
    assert (censored.cold_evaluations, censored.warm_evaluations, censored.reached) == (4, 4, False)
    reached = pair_ratio(cold, quick)
    assert (reached.warm_evaluations, reached.reached) == (1, True)
    assert reached.ratio == pytest.approx(1 / 4)


def test_proposals_are_counted_by_source_and_by_what_the_domain_prior_said_of_the_move(
) -> None:
    rows = [
        {"idx": 0, "score": 1.0, "kept": True, "skills": [], "move": None},  # the start
        {"idx": 1, "score": 0.9, "kept": True, "skills": ["sk_a"], "move": "family:ridge"},
        {"idx": 2, "score": 0.95, "kept": False, "skills": [], "move": "model.params.alpha"},
        {"idx": 3, "score": 0.85, "kept": True, "skills": [], "move": "model.params.max_iter"},
        {"idx": 4, "score": 0.86, "kept": False, "skills": [], "move": "numeric.scale"},
        {"idx": 5, "score": 0.80, "kept": True, "skills": [], "move": "numeric.scale"},
        {"idx": 6, "score": 0.81, "kept": False, "skills": ["sk_gone"], "move": "numeric.impute"},
    ]
    old = {"idx": 6, "score": 0.7, "kept": True}  # a report from before moves were recorded
    warm = _record("warm", [*rows, old], 0.8, 6, False)
    cold = _record("cold", rows[:3], 0.9, 6, False)
    priors = {"d": {"model.params.alpha": [3, 0], "numeric.scale": [4, 1]},
              "other": {"model.params.max_iter": [5, 5]}}  # another domain's: no count here
    counts = proposal_counts([warm, cold], priors, {"sk_a": "recipe"})
    table = counts["warm"]
    assert (table["skill"]["tried"], table["skill"]["kept"]) == (2, 1)
    # by the skill's kind, where the inventory names it (sk_gone: not listed, left out)
    assert table["skill_by_kind"] == {"recipe": {"tried": 1, "kept": 1, "rate": 1.0}}
    assert (table["search"]["tried"], table["search"]["kept"]) == (4, 2)
    assert table["screen"] == {"tried": 0, "kept": 0, "rate": None}
    by_prior = {k: (v["tried"], v["kept"]) for k, v in table["search_by_prior"].items()}
    assert by_prior == {"no_count": (1, 1), "never_kept": (1, 0), "kept_before": (2, 1)}
    assert counts["cold"]["search"]["tried"] == 1
    pooled = pooled_proposals([counts, {"warm": counts["warm"]}])
    assert pooled["warm"]["search"] == {"tried": 8, "kept": 4, "rate": 0.5}
    assert pooled["warm"]["skill_by_kind"]["recipe"]["tried"] == 2
    assert pooled["cold"] == counts["cold"]


def test_stopwatch_counts_the_cpu_of_child_processes() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    with Stopwatch() as watch:
        subprocess.run([sys.executable, "-c", burn], check=True)
    assert watch.usage.cpu_seconds >= 0.35
    assert watch.usage.wall_seconds >= watch.usage.cpu_seconds * 0.5


# ---- plan ---------------------------------------------------------------------------------


def test_plan_holds_out_the_last_competition_of_each_domain_with_two_or_more(
    two_tiny: Path,
) -> None:
    _write_regression(two_tiny, "tiny_more", coef=1.0, seed=3)
    plan = plan_benchmark(TransferOptions(defs_dirs=[two_tiny], seeds=2))
    assert plan.evaluation == ["tiny_more"]
    assert plan.development == ["tiny_dev", "tiny_eval"]
    assert plan.seeds == [0, 1]
    assert all(
        plan.folders[s] == two_tiny.resolve() for s in ("tiny_dev", "tiny_eval", "tiny_more")
    )


def test_plan_finds_unseen_competitions_beside_bundled_ones(two_tiny: Path) -> None:
    plan = plan_benchmark(
        TransferOptions(
            competitions=["telco_churn", "phone_churn"],
            evaluation=["tiny_eval"],
            defs_dirs=[two_tiny],
        )
    )
    assert plan.development == ["telco_churn", "phone_churn"]
    assert plan.evaluation == ["tiny_eval"]
    assert plan.folders["tiny_eval"] == two_tiny.resolve()
    assert plan.folders["telco_churn"] != two_tiny.resolve()


def test_plan_refuses_an_unknown_competition(two_tiny: Path) -> None:
    with pytest.raises(BenchmarkError, match="no_such_competition"):
        plan_benchmark(
            TransferOptions(competitions=["tiny_dev", "no_such_competition"], defs_dirs=[two_tiny])
        )


# ---- databases ----------------------------------------------------------------------------


def _database_exists(server_url: str, name: str) -> bool:
    with psycopg.connect(server_url) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


def test_scratch_database_is_dropped_afterwards_even_on_error(server_url: str) -> None:
    base = db.server_conninfo(server_url)
    with pytest.raises(RuntimeError), db.scratch_database(base, "bench_scratch_probe") as url:
        assert _database_exists(server_url, "bench_scratch_probe")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "bench_scratch_probe"
        raise RuntimeError("boom")
    assert not _database_exists(server_url, "bench_scratch_probe")


# ---- one tiny end-to-end run --------------------------------------------------------------


def _iteration_rows(conn: psycopg.Connection, attempt_id: int) -> list[dict]:
    return conn.execute(
        "SELECT idx, cv_mean AS score, kept, skill_ids, patch FROM iterations "
        "WHERE attempt_id = %s ORDER BY idx",
        (attempt_id,),
    ).fetchall()


def test_cli_transfer_json_agrees_with_the_rows_it_wrote(
    db_url: str, server_url: str, two_tiny: Path, tmp_path: Path
) -> None:
    out, plots = tmp_path / "transfer.json", tmp_path / "plots"
    command = [
        sys.executable,
        "-m",
        "haste_dagster",
        "bench",
        "transfer",
        "--defs",
        str(two_tiny),
        "--iterations",
        "3",
        "--seeds",
        "1",
        "--json",
        str(out),
        "--plots",
        str(plots),
        "--keep-databases",
    ]
    env = {**os.environ, "HASTE_DATABASE_URL": db_url, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    dbs = report["databases"]
    try:
        assert {
            "warm_cold_iteration_ratio",
            "kept_rate_curve",
            "ablation",
            "peers",
            "warm_test_vs_cold",
            "kept_rates",
            "rerun_phase",
        } <= report.keys()
        assert report["development"] == ["tiny_dev"] and report["evaluation"] == ["tiny_eval"]
        assert set(report["ablation"]) == {"tiered", "flat", "none"}
        assert all("medal_rate" in mode for mode in report["ablation"].values())
        assert sorted(p.name for p in plots.glob("*.png")) == [
            "ablation.png",
            "kept_rate.png",
            "learning_curves.png",
        ]
        assert report["inventory"]["frozen"] is True
        listed = {skill["id"] for skill in report["inventory"]["skills"]}
        assert len(listed) == report["inventory"]["before_evaluation"]["active"]

        attempts = {
            (a["arm"], a["slug"], a["seed"]): a for a in [*report["campaign"], *report["attempts"]]
        }
        first = attempts[("campaign", "tiny_dev", 0)]
        assert first["loading"] == "none"  # round 1 of the protocol is cold
        # the re-run phase: a development competition without a medal, warm and control
        rerun = {("rerun_warm", "tiny_dev", 1000), ("rerun_control", "tiny_dev", 1000)}
        assert set(attempts) == {
            ("campaign", "tiny_dev", 0),
            ("cold", "tiny_eval", 0),
            ("warm", "tiny_eval", 0),
            ("flat", "tiny_eval", 0),
            ("none", "tiny_eval", 0),
            *(rerun if first["medal"] == "none" else set()),
        }
        phase = report["rerun_phase"]
        assert phase["warm"]["attempts"] == phase["control"]["attempts"] == (
            1 if first["medal"] == "none" else 0)
        assert attempts.get(("rerun_control", "tiny_dev", 1000), {}).get("new_skills", []) == []
        for attempt in attempts.values():
            url = db.database_address(db.server_conninfo(server_url), attempt["database"])
            with psycopg.connect(url, row_factory=dict_row) as conn:
                row = conn.execute(
                    "SELECT slug, loading, seed, label, best_cv, test_score, medal, status "
                    "FROM attempts WHERE id = %s",
                    (attempt["attempt_id"],),
                ).fetchone()
                iterations = _iteration_rows(conn, attempt["attempt_id"])
            assert row["status"] == "finished"
            assert (row["slug"], row["loading"], row["seed"]) == (
                attempt["slug"],
                attempt["loading"],
                attempt["seed"],
            )
            assert row["label"] == f"bench:{attempt['arm']}"
            assert row["best_cv"] == pytest.approx(attempt["best_cv"])
            assert row["test_score"] == pytest.approx(attempt["test_score"])
            assert row["medal"] == attempt["medal"]
            assert [r["idx"] for r in iterations] == [it["idx"] for it in attempt["iterations"]]
            assert [r["kept"] for r in iterations] == [it["kept"] for it in attempt["iterations"]]
            assert [(r["skill_ids"], move_key(r["patch"])) for r in iterations] == [
                (it["skills"], it["move"]) for it in attempt["iterations"]]
            scored = iterations[1:]
            assert attempt["kept_rate"] == pytest.approx(
                sum(r["kept"] for r in scored) / len(scored)
            )
            assert attempt["usage"]["cpu_seconds"] > 0 and attempt["usage"]["wall_seconds"] > 0

        cold, warm = attempts[("cold", "tiny_eval", 0)], attempts[("warm", "tiny_eval", 0)]
        assert cold["database"] != warm["database"]  # cold ran against an empty store
        assert cold["inventory_size"] == 0 and cold["skills_loaded"] == 0
        assert warm["inventory_size"] == report["inventory"]["before_evaluation"]["active"]
        assert attempts[("none", "tiny_eval", 0)]["skills_loaded"] == 0
        flat = attempts[("flat", "tiny_eval", 0)]
        # The warm arm is the tiered loading the benchmark is about; the others are ablations.
        assert (warm["loading"], flat["loading"]) == ("tiered", "flat")
        assert attempts[("none", "tiny_eval", 0)]["loading"] == "none"
        assert set(flat["skill_ids_loaded"]) == listed  # flat: every active skill
        assert set(warm["skill_ids_loaded"]) <= listed
        higher = cold["higher_is_better"]
        cold_n = evaluations_to_reach(cold["iterations"], cold["best_cv"], higher)
        warm_n = evaluations_to_reach(warm["iterations"], cold["best_cv"], higher)
        warm_count = warm_n if warm_n is not None else warm["budget"] + 1
        warm_count += warm["control_evaluations"]  # the guard's extra evaluation counts
        assert report["warm_cold_iteration_ratio"] == pytest.approx(warm_count / cold_n)

        curve = report["kept_rate_curve"]
        assert [(p["arm"], p["attempt_id"]) for p in curve] == [
            (a["arm"], a["attempt_id"])
            for a in [*report["campaign"], *report["attempts"]]
            if a["loading"] != "none"
        ]
        assert all(
            p["kept_rate"] == attempts[(p["arm"], p["slug"], p["seed"])]["kept_rate"] for p in curve
        )
        medals = [attempts[("warm", "tiny_eval", 0)]["medal"]]
        assert report["ablation"]["tiered"]["medal_rate"] == sum(m != "none" for m in medals) / len(
            medals
        )

        # proposals by source, the search's moves by the prior the evaluation loaded
        with db.connection(db.database_address(db.server_conninfo(server_url),
                                               dbs["inventory"])) as conn:
            priors = {r["scope_key"]: r["payload"]["moves"] for r in conn.execute(
                "SELECT scope_key, payload FROM skills WHERE kind = 'prior' AND is_current"
            ).fetchall()}
        assert report["inventory"]["search_priors"] == priors
        for arm in ("cold", "warm", "flat", "none"):
            rows = attempts[(arm, "tiny_eval", 0)]["iterations"][1:]
            table = report["proposals"][arm]
            assert table["skill"]["tried"] + table["search"]["tried"] == sum(
                1 for r in rows if r["skills"] or r["move"])
            assert table["skill"]["kept"] == sum(r["kept"] for r in rows if r["skills"])
            assert sum(v["tried"] for v in table["skill_by_kind"].values()) == (
                table["skill"]["tried"])  # every skill a proposal names is listed, with its kind
            assert all(skill["kind"] in get_args(Kind) for skill in report["inventory"]["skills"])
            assert sum(v["tried"] for v in table["search_by_prior"].values()) == (
                table["search"]["tried"])

        flaml = report["peers"]["flaml"]
        if importlib.util.find_spec("flaml") is None:
            assert flaml["available"] is False and "pip install" in flaml["reason"]
        else:
            (run,) = flaml["tiny_eval"]["runs"]
            assert run["error"] is None
            assert run["budget_cpu_seconds"] == pytest.approx(
                warm["usage"]["cpu_seconds"], rel=1e-3
            )
            assert run["usage"]["cpu_seconds"] > 0
            assert run["medal"] in {"gold", "silver", "bronze", "none"}

        # the intervals come from the pairs the report lists, and read back from its file
        intervals = {k: v for k, v in report["uncertainty"].items() if k != "retry_reference"}
        assert intervals == json.loads(json.dumps(figures(outcomes_from_json(report, str(out)))))
        assert report["uncertainty"]["warm_cold_iteration_ratio"]["measured"] == pytest.approx(
            report["warm_cold_iteration_ratio"])
        pooled = CliRunner().invoke(bench_app, ["transfer", "--pool", str(out), "--json",
                                                str(tmp_path / "pooled.json")])
        assert pooled.exit_code == 0, pooled.output
        alone = json.loads((tmp_path / "pooled.json").read_text())
        assert alone["pooled"] == alone["replicates"][str(out)]
        assert alone["pooled"]["pairs"] == report["uncertainty"]["pairs"] == 1
        assert alone["retry_reference"] == report["uncertainty"]["retry_reference"]
        assert alone["retry_reference"]["pairs"] == 0  # one seed: no other cold to pair with
        assert alone["proposals"] == report["proposals"]

        with db.connection(db_url) as conn:  # the store the command was pointed at is untouched
            assert conn.execute("SELECT count(*) AS n FROM attempts").fetchone()["n"] == 0
    finally:
        for name in (dbs["inventory"], dbs["cold"]):
            db.drop_database(server_url, name)


def test_a_staged_run_refines_every_attempt_through_the_screen_and_counts_its_rows(
    db_url: str, server_url: str, two_tiny: Path
) -> None:
    from haste_dagster.bench.transfer import run_transfer_benchmark

    options = TransferOptions(defs_dirs=[two_tiny], iterations=4, seeds=1, modes=("tiered",),
                              peers=(), pipeline="staged", keep_databases=True)
    report = run_transfer_benchmark(db_url, options).as_json()
    try:
        attempts = [*report["campaign"], *report["attempts"]]
        for attempt in attempts:
            url = db.database_address(db.server_conninfo(server_url), attempt["database"])
            with psycopg.connect(url, row_factory=dict_row) as conn:
                row = conn.execute("SELECT pipeline FROM attempts WHERE id = %s",
                                   (attempt["attempt_id"],)).fetchone()
            assert row["pipeline"] == "staged"
            assert [it["branch"] for it in attempt["iterations"][:3]] == ["screen"] * 3
        cold, warm = (next(a for a in report["attempts"] if a["arm"] == arm)
                      for arm in ("cold", "warm"))
        higher = cold["higher_is_better"]
        cold_n = evaluations_to_reach(cold["iterations"], cold["best_cv"], higher)
        assert cold_n is not None and cold_n > 3  # the screen's three rows spent evaluations
        warm_n = evaluations_to_reach(warm["iterations"], cold["best_cv"], higher)
        warm_count = (warm_n if warm_n is not None else warm["budget"] + 1)
        assert warm["control_evaluations"] == 0  # the screen, not the guard, tests the skills
        for attempt in (cold, warm):  # its three prototypes are counted as the screen's
            assert report["proposals"][attempt["arm"]]["screen"]["tried"] == 3
        assert report["warm_cold_iteration_ratio"] == pytest.approx(warm_count / cold_n)
    finally:
        for name in report["databases"].values():
            db.drop_database(server_url, name)


def test_plan_refuses_an_unknown_pipeline(two_tiny: Path) -> None:
    with pytest.raises(BenchmarkError, match="--pipeline must be one of straight, staged"):
        plan_benchmark(TransferOptions(defs_dirs=[two_tiny], pipeline="wavy"))  # type: ignore[arg-type]


def test_plan_refuses_a_negative_campaign_seed(two_tiny: Path) -> None:
    with pytest.raises(BenchmarkError, match="--campaign-seed must be 0 or more, not -1"):
        plan_benchmark(TransferOptions(defs_dirs=[two_tiny], campaign_seed=-1))


# ---- inventory freezing and aggregation ---------------------------------------------------


class _CountingStore:
    """A stand-in that counts the calls reaching it. FrozenStore's promise is about calls
    (reads go through, no write call reaches the store it wraps), which counting shows
    directly; a real store would show it only as rows that are absent."""

    def __init__(self) -> None:
        self.writes = 0

    def scoped_skills(self, *args: object) -> list[str]:
        return ["a skill"]

    def record_usage(self, *args: object) -> None:
        self.writes += 1

    def record_loaded(self, *args: object) -> None:
        self.writes += 1


def test_frozen_store_reads_through_but_records_no_usage() -> None:
    from haste_dagster.bench.transfer import FrozenStore

    inner = _CountingStore()
    frozen = FrozenStore(inner)
    assert frozen.scoped_skills("slug", "domain", {}, "tiered") == ["a skill"]
    frozen.record_loaded(1, ["a skill"])
    frozen.record_usage(1, 2, ["a skill"], True, 0.1)
    assert inner.writes == 0


def test_kept_rate_bins_group_attempts_by_inventory_size_and_skip_unscored_ones() -> None:
    from haste_dagster.bench.transfer import kept_rate_bins

    points = [
        {"inventory_size": 0, "kept_rate": 0.2, "scored_iterations": 5},
        {"inventory_size": 3, "kept_rate": 0.4, "scored_iterations": 5},
        {"inventory_size": 7, "kept_rate": 0.6, "scored_iterations": 5},
        {"inventory_size": 8, "kept_rate": 0.0, "scored_iterations": 0},  # stopped at once
        {"inventory_size": 60, "kept_rate": 0.9, "scored_iterations": 5},
    ]
    bins = {b["inventory"]: b for b in kept_rate_bins(points)}
    assert bins["0"]["n"] == 1 and bins["0"]["mean"] == pytest.approx(0.2)
    assert bins["1-9"]["n"] == 2 and bins["1-9"]["mean"] == pytest.approx(0.5)
    assert bins["10-24"]["n"] == 0 and bins["10-24"]["mean"] is None
    assert bins["50+"]["n"] == 1 and bins["50+"]["mean"] == pytest.approx(0.9)


def test_flaml_inputs_code_labels_in_class_order_and_expand_dates(tmp_path: Path) -> None:
    from haste_dagster.bench.peers import flaml_inputs
    from haste_dagster.competitions.registry import load_competition_path

    rows = 80
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "day": pd.date_range("2024-01-01", periods=rows, freq="D").astype(str),
            "size": rng.normal(size=rows),
            "shop": rng.choice(["north", "south"], size=rows),
            "y": rng.choice(["zebra", "ant", "mole"], size=rows),
        }
    )
    frame.to_csv(tmp_path / "dated.csv", index=False)
    definition = {
        "slug": "dated",
        "title": "dated",
        "domain": "tabular_classification",
        "task": "multiclass",
        "source": "csv:dated.csv",
        "target": "y",
        "metric": "accuracy",
        "date_columns": ["day"],
        "medals": {"gold": 0.9, "silver": 0.8, "bronze": 0.7},
    }
    (tmp_path / "dated.yaml").write_text(yaml.safe_dump(definition))
    competition = load_competition_path(tmp_path / "dated.yaml")
    x_train, y_train, x_test = flaml_inputs(competition)
    classes = competition.problem.classes
    expected = [classes.index(v) for v in competition.train["y"]]
    assert y_train.tolist() == expected
    assert list(x_train.columns) == list(x_test.columns)
    assert "y" not in x_train.columns and len(x_test) == len(competition.test_features)
    assert {"day__year", "day__month", "day__dayofweek", "day__elapsed"} <= set(x_train.columns)
    assert str(x_train["shop"].dtype) == "category"


def test_a_replay_with_unchanged_code_repeats_every_evaluation_attempt_on_a_copy(
    db_url: str, server_url: str, two_tiny: Path, tmp_path: Path
) -> None:
    """The replay is a paired A/B only if, with nothing changed, it gives the report back."""
    from haste_dagster.bench.transfer import replay_evaluation, run_transfer_benchmark

    options = TransferOptions(defs_dirs=[two_tiny], iterations=4, seeds=2, modes=("tiered",),
                              peers=(), keep_databases=True)
    first = json.loads(json.dumps(run_transfer_benchmark(db_url, options).as_json()))
    names = list(first["databases"].values())
    # failures of the arms it runs again are the old code's: the replay does not keep them
    old_failures = [{"arm": arm, "slug": "tiny_eval", "seed": 9, "error": "X"}
                    for arm in ("warm", "cold")]
    first["failures"] += old_failures
    # a report from before moves were recorded: its cold rows are read again from the database
    older = json.loads(json.dumps(first))
    for attempt in older["attempts"]:
        for row in attempt["iterations"]:
            del row["move"], row["skills"]
    for skill in older["inventory"]["skills"]:
        del skill["kind"]
    try:
        again = replay_evaluation(db_url, older, source="first.json").as_json()
        assert again["failures"] == [old_failures[1]]
        names.append(again["replay"]["database"])
        # counted again by the same code over the same attempts, the priors are unchanged
        recounted = replay_evaluation(db_url, first, source="first.json",
                                      recount_priors=True).as_json()
        names.append(recounted["replay"]["database"])
        def scores(report: dict) -> list[list[tuple]]:
            return [[(i["idx"], i["score"], i["kept"]) for i in a["iterations"]]
                    for a in report["attempts"] if a["arm"] == "warm"]

        assert scores(recounted) == scores(again)
        assert again["replay"]["of"] == "first.json"
        assert again["replay"]["database"] not in first["databases"].values()

        def arm(report: dict, name: str) -> dict:
            return {(a["slug"], a["seed"]): a for a in report["attempts"] if a["arm"] == name}

        assert scores(again) == scores(first)
        warm, replayed = arm(first, "warm"), arm(again, "warm")
        assert set(replayed) == set(warm) == {("tiny_eval", 0), ("tiny_eval", 1)}
        for pair, attempt in warm.items():
            twin = replayed[pair]
            assert twin["database"] == again["replay"]["database"]
            assert (twin["test_score"], twin["skill_ids_loaded"]) == (
                attempt["test_score"], attempt["skill_ids_loaded"])
        def measured(attempts: dict) -> dict:  # the sum of rounded seconds may round apart
            return {k: {f: v for f, v in a.items() if f != "usage"} for k, a in attempts.items()}

        # not run again: the report's own, with the moves the older report lacked
        assert measured(arm(again, "cold")) == measured(arm(first, "cold"))
        assert again["proposals"]["cold"] == first["proposals"]["cold"]
        assert again["inventory"]["skills"] == first["inventory"]["skills"]  # kinds listed
        assert [a["attempt_id"] for a in again["campaign"]] == [
            a["attempt_id"] for a in first["campaign"]]
        assert again["uncertainty"]["pairs"] == first["uncertainty"]["pairs"] == 2
        assert again["warm_cold_iteration_ratio"] == first["warm_cold_iteration_ratio"]
        assert again["inventory"]["frozen"] is True
        with psycopg.connect(db.database_address(db.server_conninfo(server_url),
                                                 again["replay"]["database"])) as conn:
            labels = conn.execute("SELECT label, count(*) FROM attempts GROUP BY 1").fetchall()
        assert dict(labels)["bench:warm"] == 2  # the report's own were deleted from the copy
    finally:
        for name in names:
            db.drop_database(server_url, name)


def test_a_report_whose_databases_were_dropped_cannot_be_replayed(two_tiny: Path) -> None:
    from haste_dagster.bench.transfer import replay_evaluation

    options = TransferOptions(defs_dirs=[two_tiny], seeds=1).as_json()
    report = {"options": options, "databases": {"inventory": "x_inv", "kept": "false"}}
    with pytest.raises(BenchmarkError, match="r.json: its databases were dropped"):
        replay_evaluation("postgresql://unused", report, source="r.json")
    with pytest.raises(BenchmarkError, match="r.json: not a transfer report"):
        replay_evaluation("postgresql://unused", {"databases": {}}, source="r.json")

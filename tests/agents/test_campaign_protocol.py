"""The campaign protocol: rounds, the re-run phase with its control, and resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from tiny_competitions import write_tiny_regression

from haste_dagster.agents.attempts import AttemptConfig
from haste_dagster.agents.campaign import CampaignRun, campaign_protocol, protocol_rounds


def test_round_one_takes_the_first_competition_of_each_domain() -> None:
    domains = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "x"}
    assert protocol_rounds(list("abcde"), domains) == (["a", "c"], ["b", "d", "e"])
    # a slug whose definition could not be read has no domain: round 2, reported there
    assert protocol_rounds(["broken", "a"], {"a": "x"}) == (["a"], ["broken"])


def _defs(folder: Path) -> Path:
    write_tiny_regression(folder, "tiny_a", seed=1, rows=160, iterations=2)
    write_tiny_regression(folder, "tiny_c", seed=3, rows=160, iterations=2, domain="small_tables")
    write_tiny_regression(folder, "tiny_b", seed=2, rows=160, iterations=2)
    for slug in ("tiny_a", "tiny_c"):  # easy medals: only tiny_b goes to the re-run phase
        path = folder / f"{slug}.yaml"
        definition = yaml.safe_load(path.read_text())
        definition["medals"] = {"gold": 5.0, "silver": 6.0, "bronze": 8.0}
        path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return folder


def _finished(conn: psycopg.Connection, campaign_id: str) -> int:
    row = conn.execute(
        """SELECT count(*) AS n FROM attempts WHERE label LIKE %s AND status = 'finished'
           AND test_score IS NOT NULL""",
        (f"campaign:{campaign_id}:%",),
    ).fetchone()
    conn.commit()
    return int(row["n"])


def test_the_campaign_runs_rounds_and_a_rerun_phase_and_resumes_after_a_kill(
    db_url: str, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    defs = _defs(tmp_path / "defs")
    env = {**os.environ, "HASTE_DATABASE_URL": db_url, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "haste_dagster", "campaign", "--defs", str(defs),
         "--iterations", "2", "--campaign-id", "kill-me"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while _finished(conn, "kill-me") < 1 and time.monotonic() < deadline:
            assert child.poll() is None, "the campaign ended before it could be killed"
            time.sleep(0.2)
        assert _finished(conn, "kill-me") >= 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    done_before = _finished(conn, "kill-me")
    skills_before = conn.execute(
        "SELECT id, version FROM skills WHERE is_current ORDER BY id").fetchall()
    conn.commit()

    run = campaign_protocol(conn, ["tiny_a", "tiny_c", "tiny_b"],
                            AttemptConfig(iterations=2, campaign_id="kill-me"), defs_dir=defs)
    phases = [(s.phase, s.arm, s.slug, s.loading) for s in run.steps]
    assert phases[:3] == [("round1", "cold", "tiny_a", "none"),
                          ("round1", "cold", "tiny_c", "none"),
                          ("round2", "warm", "tiny_b", "tiered")]
    assert all(s.error is None for s in run.steps), [s.error for s in run.steps]
    missed = [s.slug for s in run.steps[:3] if s.medal == "none"]
    assert missed == ["tiny_b"]
    rerun = [(s.arm, s.slug, s.seed, s.loading) for s in run.steps[3:]]
    assert rerun == [(arm, slug, 1000, loading) for slug in missed
                     for arm, loading in (("warm", "tiered"), ("control", "none"))]
    # what the killed run finished is reused, not redone; one attempt per protocol step
    assert sum(s.reused for s in run.steps) == done_before
    labels = conn.execute(
        """SELECT label, count(*) AS n FROM attempts WHERE label LIKE 'campaign:kill-me:%'
           GROUP BY label""").fetchall()
    assert len(labels) == len(run.steps) and all(r["n"] == 1 for r in labels)
    # no skill written twice: every skill of the killed run is still there, unduplicated
    skills_after = conn.execute(
        "SELECT id, count(*) AS n FROM skills WHERE is_current GROUP BY id").fetchall()
    assert all(r["n"] == 1 for r in skills_after)
    assert {r["id"] for r in skills_before} <= {r["id"] for r in skills_after}
    hashes = conn.execute(
        """SELECT tier, coalesce(scope_key, '') AS scope, content_hash, count(*) AS n
           FROM skills WHERE is_current GROUP BY 1, 2, 3 HAVING count(*) > 1""").fetchall()
    assert hashes == []
    # the controls wrote no skills; the figures separate transfer from retrying
    controls = {s.attempt_id for s in run.steps if s.arm == "control"}
    sources = {r["source_attempt"] for r in conn.execute(
        "SELECT source_attempt FROM skills WHERE source_attempt IS NOT NULL").fetchall()}
    assert not controls & sources
    summary = run.summary()
    assert summary["cold_pass"]["attempts"] == 3
    assert summary["rerun_warm"]["attempts"] == summary["rerun_control"]["attempts"] == len(
        missed)
    assert set(run.inventory["by_tier"]) <= {"competition", "domain", "global"}
    # a second resume changes nothing
    count = conn.execute("SELECT count(*) AS n FROM attempts").fetchone()["n"]
    again = campaign_protocol(conn, ["tiny_a", "tiny_c", "tiny_b"],
                              AttemptConfig(iterations=2, campaign_id="kill-me"), defs_dir=defs)
    assert all(s.reused for s in again.steps)
    assert conn.execute("SELECT count(*) AS n FROM attempts").fetchone()["n"] == count


def test_a_campaign_with_two_workers_records_every_step_once_with_the_same_cold_scores(
    db_url: str, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    defs = _defs(tmp_path / "defs")
    slugs = ["tiny_a", "tiny_c", "tiny_b"]
    queued = campaign_protocol(conn, slugs, AttemptConfig(iterations=2, campaign_id="queue"),
                               defs_dir=defs, workers=2, database_url=db_url)
    assert all(s.error is None for s in queued.steps), [s.error for s in queued.steps]
    # round 1 (tiny_a, tiny_c) ran side by side; steps keep the protocol's order
    assert [(s.phase, s.arm, s.slug) for s in queued.steps[:3]] == [
        ("round1", "cold", "tiny_a"), ("round1", "cold", "tiny_c"), ("round2", "warm", "tiny_b")]
    labels = conn.execute(
        """SELECT label, count(*) AS n FROM attempts WHERE label LIKE 'campaign:queue:%'
           GROUP BY label""").fetchall()
    assert len(labels) == len(queued.steps) and all(r["n"] == 1 for r in labels)
    # the workers wrote their skills to the shared store, and promotion saw them
    sources = {r["source_attempt"] for r in conn.execute(
        "SELECT source_attempt FROM skills WHERE source_attempt IS NOT NULL").fetchall()}
    assert {s.attempt_id for s in queued.steps[:2]} <= sources
    # attempts without skills do not depend on how the campaign was scheduled
    line = campaign_protocol(conn, slugs, AttemptConfig(iterations=2, campaign_id="line"),
                             defs_dir=defs)

    def cold(run: CampaignRun) -> list[tuple]:
        return [(s.phase, s.arm, s.slug, s.score) for s in run.steps if s.loading == "none"]

    assert cold(queued) == cold(line)


def test_a_parallel_phase_loads_the_store_as_it_began_so_any_worker_count_gives_one_campaign(
    server_url: str, db_url: str, conn: psycopg.Connection, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round 2 holds three competitions of one domain. Each one's skills are fixed before
    any of them runs, so none sees the search prior or skills its phase-mates rewrite, and
    two workers (two of them, then one) and three (all at once) make the same campaign."""
    from haste_dagster import db

    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    defs = tmp_path / "defs"
    for i, slug in enumerate(["tiny_a", "tiny_c", "tiny_b", "tiny_d", "tiny_e"]):
        write_tiny_regression(defs, slug, seed=i + 1, rows=160, iterations=4,
                              domain="small_tables" if slug == "tiny_c" else "tabular_regression")
    slugs = ["tiny_a", "tiny_c", "tiny_b", "tiny_d", "tiny_e"]
    at_phase_start: set[tuple[str, int]] = set()

    def on_start(step: object) -> None:  # a parallel phase starts its first step after
        if getattr(step, "phase", "") == "round2" and not at_phase_start:  # fixing them all
            at_phase_start.update((r["id"], r["version"]) for r in conn.execute(
                "SELECT id, version FROM skills").fetchall())
            conn.commit()

    def campaign(url: str, workers: int, hook: object = None) -> tuple[list, list, dict]:
        with db.connection(url) as c:
            run = campaign_protocol(
                c, slugs, AttemptConfig(iterations=4, campaign_id="same"), defs_dir=defs,
                rerun=False, workers=workers, database_url=url, on_start=hook,
            )
            assert all(s.error is None for s in run.steps), [s.error for s in run.steps]
            loaded = [(r["label"], r["skills_loaded"]) for r in c.execute(
                "SELECT label, skills_loaded FROM attempts ORDER BY label").fetchall()]
            skills = [tuple(r.values()) for r in c.execute(
                """SELECT id, version, tier, status FROM skills ORDER BY id, version"""
            ).fetchall()]
        steps = [(s.phase, s.arm, s.slug, s.score, s.medal) for s in run.steps]
        return steps, loaded, {"skills": skills, "inventory": run.inventory}

    two = campaign(db_url, 2, on_start)
    round2 = [entries for label, entries in two[1] if ":round2:" in label]
    assert len(round2) == 3 and all(entries for entries in round2)  # the prior, at least
    fixed = {(e["id"], e["version"]) for entries in round2 for e in entries}
    assert fixed <= at_phase_start
    # ...while the store did move on during the phase (the domain prior was recounted)
    assert {(r["id"], r["version"]) for r in conn.execute(
        "SELECT id, version FROM skills").fetchall()} - at_phase_start
    three = campaign(db.create_database(server_url, f"t_{uuid.uuid4().hex[:12]}"), 3)
    assert three == two


def test_campaign_workers_must_be_positive_and_need_the_database_url(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    from haste_dagster.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 1"):
        campaign_protocol(conn, ["tiny_a"], AttemptConfig(), defs_dir=tmp_path, workers=0)
    with pytest.raises(ConfigError, match="database_url"):
        campaign_protocol(conn, ["tiny_a"], AttemptConfig(), defs_dir=tmp_path, workers=2)


def test_a_competition_is_expected_to_cost_what_its_own_or_else_its_domains_attempts_did(
    conn: psycopg.Connection,
) -> None:
    from haste_dagster.agents.campaign import expected_seconds

    def finished(slug: str, domain: str, seconds: list[float], status: str = "finished") -> None:
        conn.execute(
            """INSERT INTO competitions (slug, domain, task, metric, definition)
               VALUES (%s, %s, 'regression', 'rmse', '{}') ON CONFLICT DO NOTHING""",
            (slug, domain))
        attempt = conn.execute(
            """INSERT INTO attempts (slug, policy, loading, seed, budget_iterations, status)
               VALUES (%s, 'heuristic', 'none', 0, 3, %s) RETURNING id""",
            (slug, status)).fetchone()["id"]
        for idx, s in enumerate(seconds):
            conn.execute("INSERT INTO iterations (attempt_id, idx, seconds) VALUES (%s, %s, %s)",
                         (attempt, idx, s))

    finished("text_a", "text", [100.0, 200.0])
    finished("text_a", "text", [50.0, 50.0])
    finished("text_b", "text", [1000.0], status="running")  # unfinished: no evidence yet
    finished("table_a", "tables", [2.0, 4.0])
    conn.commit()
    domains = {"text_a": "text", "text_b": "text", "table_b": "tables", "new": "images"}
    assert expected_seconds(conn, domains) == {
        "text_a": 200.0,  # the mean of its own two attempts
        "text_b": 200.0,  # its domain's mean
        "table_a": 6.0,
        "table_b": 6.0,
    }  # "new" has no evidence: the queue runs it after those that have, in step order


def test_a_parallel_campaign_stopped_after_fixing_a_phase_resumes_it_with_the_skills_it_fixed(
    db_url: str, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from haste_dagster.agents.factory import open_skill_store
    from haste_dagster.competitions.profile import profile_data
    from haste_dagster.competitions.registry import load_competition
    from haste_dagster.skills.model import Skill

    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    defs = _defs(tmp_path / "defs")
    slugs = ["tiny_a", "tiny_c", "tiny_b"]
    config = AttemptConfig(iterations=2, campaign_id="stopped")

    class Stopped(Exception):
        pass

    def stop_in_round_two(step: object) -> None:  # after the phase fixed its skills
        if getattr(step, "phase", "") == "round2":
            raise Stopped

    with pytest.raises(Stopped):
        campaign_protocol(conn, slugs, config, defs_dir=defs, workers=2, database_url=db_url,
                          on_start=stop_in_round_two)
    query = "SELECT id, skills_loaded FROM attempts WHERE label LIKE 'campaign:stopped:round2:%'"
    fixed = [dict(r) for r in conn.execute(query).fetchall()]
    assert len(fixed) == 1 and fixed[0]["skills_loaded"] is not None
    # The store moves on before the resume: a domain skill tiny_b would load if it loaded now.
    store = open_skill_store(conn)
    late = store.add(Skill(tier="domain", scope_key="tabular_regression",
                           domain="tabular_regression", title="Prefer shallow trees",
                           guidance="Shallow trees generalise on small tables."))
    conn.commit()
    profile = profile_data(load_competition("tiny_b", defs)).as_dict()
    assert late.id in {s.id for s in store.scoped_skills("tiny_b", "tabular_regression",
                                                           profile, "tiered")}

    run = campaign_protocol(conn, slugs, config, defs_dir=defs, workers=2, database_url=db_url)
    assert all(s.error is None for s in run.steps), [s.error for s in run.steps]
    assert [s.reused for s in run.steps[:3]] == [True, True, False]
    assert [dict(r) for r in conn.execute(query).fetchall()] == fixed  # one attempt, same skills
    assert late.id not in {e["id"] for e in fixed[0]["skills_loaded"]}

"""Concurrent writers on one skill store.

* Four competition partitions solved at once by Dagster's multiprocess executor (the
  `campaign` job fans out one `solve_one` step per competition, each in its own process),
  all loading, applying and writing skills and usage in the same database.
* Promotion and consolidation started at the same instant from two processes.

Neither may lose or duplicate a row."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import (
    DOMAIN,
    child_env,
    duplicate_skills,
    fresh_db,
    seed_skills,
    snapshot,
    usage_mismatches,
    write_competition,
)

from haste_dagster import db

SLUGS = ("conc_a", "conc_b", "conc_c", "conc_d")
ITERATIONS = 4


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def test_four_partitions_solved_at_once_by_the_multiprocess_executor_lose_and_duplicate_nothing(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Counter
) -> None:
    from dagster import DagsterEventType, DagsterRunStatus

    from haste_dagster.agents.factory import open_skill_store
    from haste_dagster.agents.orchestrator import extract_skills, promote
    from haste_dagster.competitions.registry import load_competition
    from haste_dagster.defs.instance import dagster_instance

    defs = tmp_path / "defs"
    for seed, slug in enumerate(SLUGS, start=1):
        write_competition(defs, slug, seed=seed, iterations=ITERATIONS)
    url = fresh_db(server_url)
    for slug in SLUGS:  # the global and domain skills are shared by all four
        seed_skills(url, slug)
    monkeypatch.setenv("HASTE_DAGSTER_PG_URL", "")
    monkeypatch.setenv("HASTE_COMPETITION_DEFS", str(defs))
    home = tmp_path / "dagster_home"
    instance = dagster_instance(url, home)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "execution": {"config": {"max_concurrent": 4}},
        # one attempt per competition: the re-run phase (more attempts) is tested elsewhere
        "ops": {
            "solve_one": {"config": {"iterations": ITERATIONS}},
            "solve_round_two": {"config": {"iterations": ITERATIONS}},
            "rerun_phase": {"config": {"rerun": False}},
        },
    }))
    env = child_env(
        url,
        DAGSTER_HOME=str(home),
        HASTE_COMPETITION_DEFS=str(defs),
        HASTE_ARTIFACTS=str(tmp_path / "artifacts"),
        HASTE_SKILL_ASSETS=str(tmp_path / "skill_assets"),
        HASTE_DAGSTER_EXECUTOR="multiprocess",
    )
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "execute", "-m",
         "haste_dagster.defs.definitions", "-j", "campaign", "-c", str(config)],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (run,) = instance.get_runs()
    assert run.status == DagsterRunStatus.SUCCESS

    # The four solve steps really ran at the same time, in separate processes. The campaign
    # protocol solves round 1 (one competition per domain: here the first) before round 2
    # (the other three, at once), whose op is solve_round_two.
    started: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    pids: set[int] = set()
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None or not (event.step_key or "").startswith(("solve_one", "solve_round_two")):
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
            pids.add(event.pid)
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            spans.append((started[event.step_key], entry.timestamp))
    assert len(spans) == 4 and len(pids) == 4
    overlap = _max_overlap(spans)
    tally["concurrent_steps_max"] = max(tally["concurrent_steps_max"], overlap)
    assert overlap >= 2, f"the steps did not overlap: {spans}"

    with db.connection(url) as conn:
        attempts = conn.execute(
            """SELECT a.id, a.slug, a.status, a.budget_iterations, a.test_score,
                      (SELECT array_agg(idx ORDER BY idx) FROM iterations i
                       WHERE i.attempt_id = a.id) AS idx,
                      (SELECT count(*) FROM submissions s WHERE s.attempt_id = a.id) AS graded
               FROM attempts a ORDER BY a.slug"""
        ).fetchall()
        counts = conn.execute(
            """SELECT (SELECT count(*) FROM iterations) AS iterations,
                      (SELECT count(*) FROM skill_usage) AS usage,
                      (SELECT count(*) FROM skills) AS skills,
                      (SELECT count(*) FROM skill_edges) AS edges"""
        ).fetchone()
    assert [a["slug"] for a in attempts] == list(SLUGS)
    for a in attempts:
        assert a["status"] == "finished" and a["graded"] == 1, a
        assert a["idx"] == list(range(len(a["idx"]))) and len(a["idx"]) <= ITERATIONS + 1
    mismatches = usage_mismatches(url)
    duplicates = duplicate_skills(url)
    tally["rows_checked"] += counts["iterations"] + counts["usage"] + counts["skills"]
    tally["rows_lost"] += sum(1 for m in mismatches if "missing" in m)
    tally["duplicates"] += len(duplicates) + sum(1 for m in mismatches if "duplicated" in m)
    assert mismatches == []
    assert duplicates == []
    assert counts["usage"] > 4 * 3  # every attempt loaded the shared skills and applied some

    # Nothing the concurrent writers should have written is missing: extracting each
    # attempt's skills again and promoting again (both idempotent) write no new row.
    with db.connection(url) as conn:
        store = open_skill_store(conn)
        extracted = 0
        for a in attempts:
            competition = load_competition(a["slug"], defs)
            extracted += len(extract_skills(conn, competition, a["id"], store))
        promote(conn, [DOMAIN], store)
        again = conn.execute(
            """SELECT (SELECT count(*) FROM skills) AS skills,
                      (SELECT count(*) FROM skill_edges) AS edges"""
        ).fetchone()
    assert extracted > 0
    tally["rows_lost"] += (again["skills"] - counts["skills"]) + (again["edges"] - counts["edges"])
    assert (again["skills"], again["edges"]) == (counts["skills"], counts["edges"])
    instance.dispose()


def promote_as(promoter: str, conn: Any, store: Any) -> None:
    """Promotion as a campaign runs it (`orchestrator`) or as the Dagster `domain_skills` and
    `global_skills` assets do (`assets`: one call per domain, then global, no outer lock)."""
    from haste_dagster.agents.orchestrator import promote
    from haste_dagster.skills.promotion import promote_domain, promote_global

    if promoter == "orchestrator":
        promote(conn, ["tab_a", "tab_b"], store)
    else:
        promote_domain(store, "tab_a")
        promote_domain(store, "tab_b")
        promote_global(store)


# Two processes, released at the same instant: one promotes then consolidates, the other
# consolidates then promotes.
PROMOTE_AND_CONSOLIDATE = r"""
import json, os, sys, time
from pathlib import Path
from haste_dagster import db
from haste_dagster.skills.consolidation import consolidate
from haste_dagster.skills.embeddings import HashingEmbedder
from haste_dagster.skills.store import SkillStore
here = os.path.dirname(sys.argv[6])
sys.path[:0] = [here, os.path.dirname(here)]  # this test module, and tests/ for its helpers
from test_reliability_concurrency import promote_as

url, order, ready, go, promoter = sys.argv[1:6]
conn = db.connect(url)
store = SkillStore(conn, HashingEmbedder())
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.001)
steps = {
    "promote": lambda: promote_as(promoter, conn, store),
    "consolidate": lambda: consolidate(store),
}
for name in order.split(","):
    steps[name]()
print(json.dumps({"ok": order}))
"""


def _seed_promotion_evidence(url: str) -> None:
    """Competition skills whose pattern recurs: max_depth 4–6 helped in three competitions
    of domain tab_a and two of tab_b (so domain and then global promotion have evidence), a
    pair of near-duplicates for consolidation to merge, and one change that hurt somewhere."""
    from haste_dagster.skills.embeddings import HashingEmbedder
    from haste_dagster.skills.model import Condition, Evidence, Skill
    from haste_dagster.skills.store import SkillStore

    def skill(slug: str, domain: str, depth: int, delta: float, tail: str = "") -> Skill:
        return Skill(
            tier="competition", scope_key=slug, domain=domain,
            title=f"{slug}: set model.params.max_depth to {depth}{tail}",
            guidance=f"On {slug} deeper trees captured interactions between the columns and "
                     f"the cross-validated error dropped on every fold{tail}.",
            conditions=[Condition(key="task", op="==", value="regression")],
            action={"ops": [{"op": "set", "path": "model.params.max_depth", "value": depth}]},
            evidence=[Evidence(slug=slug, delta=delta, iteration=1)],
            created_by="extraction",
        )

    skills = [
        skill("a1", "tab_a", 4, 0.10), skill("a2", "tab_a", 5, 0.20), skill("a3", "tab_a", 6, 0.05),
        skill("a4", "tab_a", 5, -0.30),
        skill("b1", "tab_b", 5, 0.15), skill("b2", "tab_b", 6, 0.10),
        skill("a1", "tab_a", 4, 0.02, tail=" again"),  # near-duplicate of the first
    ]
    with db.connection(url) as conn:
        SkillStore(conn, HashingEmbedder()).add_many(skills)


def _skill_state(url: str) -> dict[str, Any]:
    shot = snapshot(url)
    return {"skills": shot["skills"], "edges": shot["edges"]}


@pytest.mark.parametrize("promoter", ["orchestrator", "assets"])
def test_promotion_and_consolidation_from_two_processes_at_once_end_as_a_serial_order_would(
    server_url: str, tmp_path: Path, tally: Counter, promoter: str
) -> None:
    from haste_dagster.skills.consolidation import consolidate
    from haste_dagster.skills.embeddings import HashingEmbedder
    from haste_dagster.skills.store import SkillStore

    url = fresh_db(server_url)
    _seed_promotion_evidence(url)
    # Copies of the starting state for the serial runs, one per order the two can take.
    source = urlsplit(url).path.lstrip("/")
    serial: dict[str, dict[str, Any]] = {}
    for order in ("promote,consolidate", "consolidate,promote"):
        name = f"{source}_{order.split(',')[0]}_first"
        copy = db.create_database(server_url, name, template=source)
        with db.connection(copy) as conn:
            store = SkillStore(conn, HashingEmbedder())
            for step in order.split(","):
                if step == "promote":
                    promote_as(promoter, conn, store)
                else:
                    consolidate(store)
        serial[order] = _skill_state(copy)
        assert any(s[0] == "global" for s in serial[order]["skills"])  # promoted all the way
        assert any(s[4] == "merged" for s in serial[order]["skills"])  # and merged a pair

    procs = []
    for i, order in enumerate(("promote,consolidate", "consolidate,promote")):
        procs.append(subprocess.Popen(
            [sys.executable, "-c", PROMOTE_AND_CONSOLIDATE, url, order,
             str(tmp_path / f"ready{i}"), str(tmp_path / "go"), promoter, __file__],
            env=child_env(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (tmp_path / "go").touch()
    tally["faults_injected"] += 1  # a race, deliberately provoked
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["ok"]

    got = _skill_state(url)
    duplicates = duplicate_skills(url)
    tally["duplicates"] += len(duplicates)
    tally["rows_checked"] += len(got["skills"]) + len(got["edges"])
    assert duplicates == []
    # serialisable: the outcome is that of one of the serial orders
    assert got in list(serial.values())
    with db.connection(url) as conn:
        assert SkillStore(conn, HashingEmbedder()).validate_all() == []



def test_two_asset_promotions_at_once_write_each_promoted_skill_once(
    server_url: str, tmp_path: Path, tally: Counter
) -> None:
    """Two `domain_skills`/`global_skills` materializations racing on the same evidence (e.g. a
    campaign's and a backfill's) both succeed, write each promoted skill once and leave a
    valid store.

    What it proves is that outcome, not that the promotion lock is needed for it: with the
    lock removed it still passed (3 runs; the store's ON CONFLICT inserts absorb this race).
    The lock is needed for the promotion-vs-consolidation race above, which failed without it
    (docs/reliability.md, "what the tests found and fixed")."""
    from haste_dagster.skills.embeddings import HashingEmbedder
    from haste_dagster.skills.store import SkillStore

    url = fresh_db(server_url)
    _seed_promotion_evidence(url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTE_AND_CONSOLIDATE, url, "promote",
             str(tmp_path / f"ready{i}"), str(tmp_path / "go"), "assets", __file__],
            env=child_env(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (tmp_path / "go").touch()
    tally["faults_injected"] += 1
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    got = _skill_state(url)
    tally["rows_checked"] += len(got["skills"]) + len(got["edges"])
    assert duplicate_skills(url) == []
    assert any(s[0] == "global" for s in got["skills"])
    with db.connection(url) as conn:
        assert SkillStore(conn, HashingEmbedder()).validate_all() == []

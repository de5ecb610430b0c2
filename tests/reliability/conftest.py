"""Shared pieces of the reliability suite: tiny competitions, a seeded skill store, real
child processes with fault hooks, snapshots of what the database recorded, and the tally of
faults injected / inputs tried / rows lost that ``docs/reliability.md`` reports.

Every test here runs the real code against a real PostgreSQL (the session's embedded
server, or a dedicated one where the test stops it). The only stand-in is the loopback
OpenAI-compatible server of ``tests/llm/fake_openai.py``.

Run the suite and print the counts::

    HASTE_RELIABILITY_COUNTS=out/reliability_counts.json .venv/bin/pytest tests/reliability -q
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tiny_competitions import write_tiny_regression

from haste_dagster import db

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "llm"))  # fake_openai: the loopback LLM server

DOMAIN = "tabular_regression"

# ---- the tally -------------------------------------------------------------------------

TALLY: Counter[str] = Counter()
MEASURES = ("faults_injected", "inputs_tried", "rows_checked", "rows_lost", "duplicates")


@pytest.fixture(scope="session")
def tally() -> Counter[str]:
    """Counts reported in docs/reliability.md: faults_injected, inputs_tried, rows_checked,
    rows_lost, duplicates. Tests add to it *before* asserting, so a failing run still
    reports what it measured."""
    return TALLY


# Distinct bad inputs: (kind, digest). Hypothesis replays an example while shrinking, and one
# input may go through two commands; each is still one input.
_TRIED: set[tuple[str, str]] = set()


def record_input(
    tally: Counter[str], kind: str, value: object, seen: set[tuple[str, str]] | None = None
) -> None:
    """Count one bad input by its content, so a repeat is not counted again."""
    tried = _TRIED if seen is None else seen
    text = value if isinstance(value, bytes) else repr(value).encode()
    tried.add((kind, hashlib.sha256(text).hexdigest()))
    tally["inputs_tried"] = len(tried)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY:
        return
    # Only what this run measured: a count no test touched is reported as not measured,
    # never as 0 (rows_lost 0 from a run that checked no rows would read as a guarantee).
    counts = {k: TALLY[k] for k in sorted(TALLY)}
    unmeasured = [k for k in MEASURES if k not in TALLY]
    terminalreporter.write_line("reliability counts: " + json.dumps(counts, sort_keys=True))
    if unmeasured:
        terminalreporter.write_line("not measured by this run: " + ", ".join(unmeasured))
    target = os.environ.get("HASTE_RELIABILITY_COUNTS")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
    doc = os.environ.get("HASTE_RELIABILITY_DOC")
    if doc:  # regenerate the counts table of docs/reliability.md from this run
        passed = len(terminalreporter.stats.get("passed", []))
        seconds = time.monotonic() - _STARTED[0]
        Path(doc).write_text(counts_doc(Path(doc).read_text(), counts, passed, seconds))
        terminalreporter.write_line(f"wrote the counts into {doc}")


# The rows of the counts table in docs/reliability.md, by the tally key each shows.
DOC_ROWS = {
    "faults injected": "faults_injected",
    "inputs tried": "inputs_tried",
    "rows checked": "rows_checked",
    "rows lost": "rows_lost",
    "duplicates": "duplicates",
    "concurrent steps": "concurrent_steps_max",
}
_STARTED = [time.monotonic()]


def pytest_sessionstart(session: Any) -> None:
    _STARTED[0] = time.monotonic()


def counts_doc(text: str, counts: dict[str, int], passed: int, seconds: float) -> str:
    """``text`` with each counts-table value replaced by this run's (``not measured`` when
    no test of the run touched it) and the run line set to ``passed`` / ``seconds``."""
    lines = []
    for line in text.splitlines():
        cells = line.split(" | ")
        label = cells[0].removeprefix("| ") if len(cells) == 3 else None
        if label in DOC_ROWS:
            key = DOC_ROWS[label]
            cells[1] = f"**{counts[key]}**" if key in counts else "not measured"
            line = " | ".join(cells)
        lines.append(line)
    out = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    return re.sub(r"\*\*\d+ passed in \d+ s\*\*", f"**{passed} passed in {seconds:.0f} s**", out)


# ---- environment -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _hashing_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lexical embeddings (no model to load) in this process and every child."""
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")


def child_env(db_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "HASTE_EMBEDDINGS": "hashing",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }
    if db_url is not None:
        env["HASTE_DATABASE_URL"] = db_url
    return env


def haste(*args: str) -> list[str]:
    return [sys.executable, "-m", "haste_dagster", *args]


def fresh_db(server_url: str, prefix: str = "rel") -> str:
    """A new, migrated database on the session's server."""
    url = db.create_database(server_url, f"{prefix}_{uuid.uuid4().hex[:10]}")
    with db.connection(url):
        pass
    return url


# ---- tiny competitions -------------------------------------------------------------------


def write_competition(
    folder: Path,
    slug: str,
    seed: int = 1,
    rows: int = 200,
    *,
    iterations: int = 6,
    domain: str = DOMAIN,
) -> Path:
    """A CSV regression competition small enough to solve in about a second."""
    return write_tiny_regression(folder, slug, seed, rows, iterations=iterations, domain=domain)


def set_action(path: str, value: Any) -> dict[str, Any]:
    return {"ops": [{"op": "set", "path": path, "value": value}]}


def seed_skills(url: str, slug: str, domain: str = DOMAIN) -> list[str]:
    """Three untried skills in scope of ``slug`` (global, domain, competition). Untried skills
    are proposed as iterations, so every attempt on ``slug`` applies them and writes usage."""
    from haste_dagster.skills.embeddings import HashingEmbedder
    from haste_dagster.skills.model import Skill
    from haste_dagster.skills.store import SkillStore

    skills = [
        Skill(
            tier="global", scope_key=None, domain=None, title="Shallower boosted trees",
            guidance="Small tabular data: cap tree depth at 3.",
            action=set_action("model.params.max_depth", 3), created_by="seed",
        ),
        Skill(
            tier="domain", scope_key=domain, domain=domain, title="Faster learning rate",
            guidance="Few rows: a learning rate of 0.1 converges within the tree budget.",
            action=set_action("model.params.learning_rate", 0.1), created_by="seed",
        ),
        Skill(
            tier="competition", scope_key=slug, domain=domain, title="Ordinal colours",
            guidance="Encode the colour column as ordinal codes.",
            action=set_action("categorical.encoding", "ordinal"), created_by="seed",
        ),
    ]
    with db.connection(url) as conn:
        return [s.id for s in SkillStore(conn, HashingEmbedder()).add_many(skills)]


# ---- the tiny attempt every crash and fault test runs -------------------------------------

TINY = "rel_tiny"
TINY_ITERATIONS, TINY_SEED = 6, 5


@pytest.fixture(scope="session")
def tiny_defs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reliability_defs")
    write_competition(folder, TINY, seed=3, iterations=TINY_ITERATIONS)
    return folder


def tiny_solve(defs: Path) -> tuple[str, ...]:
    """`haste solve` arguments of the tiny attempt (tiered loading of the seeded skills)."""
    return ("solve", TINY, "--iterations", str(TINY_ITERATIONS), "--seed", str(TINY_SEED),
            "--defs", str(defs))


@pytest.fixture(scope="session")
def tiny_reference(server_url: str, tiny_defs: Path) -> dict[str, Any]:
    """The uninterrupted tiny attempt (same skills, same seed) in its own database: what
    every crashed-and-resumed run must end up equal to."""
    import subprocess

    url = fresh_db(server_url, "ref")
    seed_skills(url, TINY)
    done = subprocess.run(
        haste(*tiny_solve(tiny_defs)), env=child_env(url), capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shot = snapshot(url)
    # the comparison only means something if the attempt applied skills and wrote some
    assert any(u[4] == "applied" for u in shot["usage"])
    assert any(s[7] == "extraction" for s in shot["skills"])
    return shot


# ---- what the database recorded ----------------------------------------------------------


def iteration_rows(conn: psycopg.Connection, attempt_id: int) -> list[tuple]:
    return [
        (r["idx"], r["patch"], r["cv_mean"], r["fold_scores"], r["kept"], r["skill_ids"],
         r["error"], r["incumbent_before"], r["rationale"])
        for r in conn.execute(
            """SELECT idx, patch, cv_mean, fold_scores, kept, skill_ids, error,
                      incumbent_before, rationale
               FROM iterations WHERE attempt_id = %s ORDER BY idx""",
            (attempt_id,),
        ).fetchall()
    ]


def snapshot(url: str) -> dict[str, Any]:
    """Everything an attempt leaves behind, in a form two databases can be compared by.

    Attempt ids are replaced by the attempt's slug (so databases whose attempts were
    numbered in another order compare equal); skills are identified by content.
    """
    with db.connection(url) as conn:
        attempts = conn.execute(
            """SELECT id, slug, status, policy, loading, seed, best_cv, best_spec, test_score,
                      medal, skills_loaded, initial_spec FROM attempts ORDER BY id"""
        ).fetchall()
        slug_of = {a["id"]: a["slug"] for a in attempts}
        out: dict[str, Any] = {
            "attempts": sorted(
                (a["slug"], a["status"], a["policy"], a["loading"], a["seed"], a["best_cv"],
                 json.dumps(a["best_spec"], sort_keys=True), a["test_score"], a["medal"],
                 json.dumps(a["skills_loaded"], sort_keys=True),
                 json.dumps(a["initial_spec"], sort_keys=True))
                for a in attempts
            ),
            "iterations": {a["slug"]: iteration_rows(conn, a["id"]) for a in attempts},
            "usage": sorted(
                (slug_of[u["attempt_id"]], -1 if u["iteration_idx"] is None else u["iteration_idx"],
                 u["skill_id"], u["skill_version"], u["event"], u["kept"], u["delta"])
                for u in conn.execute(
                    """SELECT attempt_id, iteration_idx, skill_id, skill_version, event, kept,
                              delta FROM skill_usage"""
                ).fetchall()
            ),
            "skills": sorted(
                (r["tier"], r["scope_key"] or "", r["title"],
                 json.dumps(r["action"], sort_keys=True), r["status"], r["version"],
                 r["is_current"], r["created_by"],
                 json.dumps(_evidence_by_slug(r["evidence"], slug_of), sort_keys=True))
                for r in conn.execute(
                    """SELECT tier, scope_key, title, action, status, version, is_current,
                              created_by, evidence FROM skills"""
                ).fetchall()
            ),
            "edges": sorted(
                (r["src"], r["src_version"], r["dst"], r["dst_version"], r["kind"])
                for r in conn.execute(
                    """SELECT a.title AS src, e.src_version, b.title AS dst, e.dst_version, e.kind
                       FROM skill_edges e
                       JOIN skills a ON a.id = e.src_id AND a.version = e.src_version
                       JOIN skills b ON b.id = e.dst_id AND b.version = e.dst_version"""
                ).fetchall()
            ),
            "grades": sorted(
                (slug_of[r["attempt_id"]], json.dumps(r["grade"], sort_keys=True))
                for r in conn.execute("SELECT attempt_id, grade FROM submissions").fetchall()
            ),
        }
    return out


def _evidence_by_slug(evidence: list[dict], slug_of: dict[int, str]) -> list[dict]:
    return [
        {**e, "attempt_id": slug_of.get(e.get("attempt_id"), e.get("attempt_id"))}
        for e in evidence
    ]


def duplicate_skills(url: str) -> list[dict]:
    """Current skills that share tier, scope and content: must always be empty."""
    with db.connection(url) as conn:
        return conn.execute(
            """SELECT tier, coalesce(scope_key, '') AS scope, content_hash, count(*) AS n
               FROM skills WHERE is_current GROUP BY 1, 2, 3 HAVING count(*) > 1"""
        ).fetchall()


def usage_mismatches(url: str) -> list[str]:
    """Usage rows that disagree with the iterations and attempts they describe: every
    'applied' row matches one iteration that cites the skill (and each citation of a known
    skill has its row), every 'loaded' row matches the attempt's skills_loaded."""
    problems: list[str] = []
    with db.connection(url) as conn:
        known = {r["id"] for r in conn.execute("SELECT DISTINCT id FROM skills").fetchall()}
        cited = {
            (r["attempt_id"], r["idx"], s)
            for r in conn.execute(
                "SELECT attempt_id, idx, skill_ids FROM iterations WHERE idx > 0"
            ).fetchall()
            for s in r["skill_ids"]
            if s in known
        }
        applied = Counter(
            (r["attempt_id"], r["iteration_idx"], r["skill_id"])
            for r in conn.execute(
                "SELECT attempt_id, iteration_idx, skill_id FROM skill_usage "
                "WHERE event = 'applied'"
            ).fetchall()
        )
        loaded_rows = Counter(
            (r["attempt_id"], r["skill_id"], r["skill_version"])
            for r in conn.execute(
                "SELECT attempt_id, skill_id, skill_version FROM skill_usage "
                "WHERE event = 'loaded'"
            ).fetchall()
        )
        loaded = {
            (a["id"], e["id"], e["version"])
            for a in conn.execute(
                "SELECT id, skills_loaded FROM attempts WHERE initial_spec IS NOT NULL"
            ).fetchall()
            for e in a["skills_loaded"]
        }
    problems += [f"applied usage missing for {k}" for k in sorted(cited - set(applied))]
    problems += [f"applied usage without iteration {k}" for k in sorted(set(applied) - cited)]
    problems += [f"applied usage duplicated {k}" for k, n in applied.items() if n > 1]
    problems += [f"loaded usage missing for {k}" for k in sorted(loaded - set(loaded_rows))]
    problems += [f"loaded usage duplicated {k}" for k, n in loaded_rows.items() if n > 1]
    return problems


def recorded(url: str) -> dict[str, Any]:
    """What the killed process had committed: iterations, usage rows, skill rows."""
    with db.connection(url) as conn:
        attempts = conn.execute("SELECT id, status FROM attempts ORDER BY id").fetchall()
        return {
            "attempts": [dict(a) for a in attempts],
            "iterations": [r for a in attempts for r in iteration_rows(conn, a["id"])],
            "usage": {
                (r["attempt_id"], r["iteration_idx"], r["skill_id"], r["event"], r["kept"],
                 r["delta"])
                for r in conn.execute("SELECT * FROM skill_usage").fetchall()
            },
            "skills": {
                (r["id"], r["version"], r["content_hash"])
                for r in conn.execute("SELECT id, version, content_hash FROM skills").fetchall()
            },
        }


def lost_rows(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Rows committed before the kill that are missing or changed after the resume."""
    kept = set(map(json.dumps, after["iterations"]))
    lost = sum(1 for row in before["iterations"] if json.dumps(row) not in kept)
    lost += len(before["usage"] - after["usage"])
    lost += len(before["skills"] - after["skills"])
    return lost


def check_resumed(
    url: str, before: dict[str, Any], reference: dict[str, Any], tally: Counter
) -> None:
    """After a resume: nothing committed before the fault is lost or changed, the attempt
    was continued (not restarted), and the end state equals the uninterrupted run."""
    after = recorded(url)
    lost = lost_rows(before, after)
    tally["rows_checked"] += sum(len(before[k]) for k in ("iterations", "usage", "skills"))
    tally["rows_lost"] += lost
    assert lost == 0
    assert [a["id"] for a in after["attempts"]] == [a["id"] for a in before["attempts"]]
    assert_matches_reference(url, reference, tally)


def assert_matches_reference(url: str, reference: dict[str, Any], tally: Counter) -> None:
    duplicates = duplicate_skills(url)
    tally["duplicates"] += len(duplicates)
    assert duplicates == []
    assert usage_mismatches(url) == []
    resumed = snapshot(url)
    for table in ("attempts", "iterations", "usage", "skills", "edges", "grades"):
        assert resumed[table] == reference[table], f"{table} differ from the uninterrupted run"


# ---- a real `haste` process with a fault hook ---------------------------------------------

# `python -c CHILD_WITH_FAULT '<json>' haste-args...`: the real `haste` CLI in a real process,
# with one hook that SIGKILLs the process at a chosen point. The hook only kills; every
# database write and every computation is the production code's.
CHILD_WITH_FAULT = r"""
import json, os, signal, sys
fault = json.loads(sys.argv[1])
at, idx = fault["at"], fault.get("idx")

def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

from haste_dagster.agents import competition_agent, records
from haste_dagster.skills.store import SkillStore

if at == "during_baseline":
    # the attempt row, its loaded skills and its initial spec are written; the baseline
    # cross-validation is running
    def cross_validate(*args, **kwargs):
        die()
    competition_agent.cross_validate = cross_validate
elif at == "after_iteration_write":
    # iteration `idx` (and its usage rows) committed; nothing of the next one has started
    real_report = competition_agent.RefinementLoop._report
    def report(self, row, budget):
        real_report(self, row, budget)
        if row.idx == idx:
            die()
    competition_agent.RefinementLoop._report = report
elif at == "inside_iteration_write":
    # the iteration row of `idx` is sent, the usage rows of its skills are not
    real_record = records.record_iteration
    def record_iteration(conn, row):
        real_record(conn, row)
        if row.idx == idx:
            die()
    records.record_iteration = record_iteration
elif at == "during_skill_write":
    # inside the skill store's INSERT transaction: the rows are sent, not committed
    def resolve_added(self, skills):
        die()
    SkillStore._resolve_added = resolve_added
else:
    raise SystemExit(f"unknown fault point {at!r}")

from haste_dagster.cli import main
sys.argv = ["haste", *sys.argv[2:]]
main()
"""


def with_fault(fault: dict[str, Any], *haste_args: str) -> list[str]:
    return [sys.executable, "-c", CHILD_WITH_FAULT, json.dumps(fault), *haste_args]

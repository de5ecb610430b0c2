"""Campaigns: competitions solved in order with promotion after each (``campaign``), and
the paper's campaign protocol (``campaign_protocol``: cold round, tiered round, re-runs)."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from haste_dagster.agents.attempts import AttemptConfig, ProgressFn
from haste_dagster.agents.factory import open_skill_store
from haste_dagster.agents.orchestrator import SolveResult, extract_skills, promote, solve
from haste_dagster.competitions.registry import load_competition
from haste_dagster.errors import ConfigError, HasteError

log = logging.getLogger(__name__)


@dataclass
class CampaignEntry:
    slug: str
    result: SolveResult | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        if self.result is not None:
            return self.result.as_json()
        return {"slug": self.slug, "error": self.error}


def campaign(
    conn: psycopg.Connection,
    slugs: list[str],
    config: AttemptConfig,
    *,
    defs_dir: Path | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[CampaignEntry], None] | None = None,
    progress: ProgressFn | None = None,
) -> list[CampaignEntry]:
    """Solve ``slugs`` in order; a failing competition is reported and the next one runs.

    All attempts share one campaign id, so an LLM token budget spans the campaign; when it
    is spent the campaign stops cleanly after recording what it has.
    """
    from haste_dagster.errors import HasteError
    from haste_dagster.llm.client import TokenBudgetExceeded

    if config.campaign_id is None:
        config = replace(config, campaign_id=f"campaign-{uuid.uuid4().hex[:12]}")
    entries: list[CampaignEntry] = []
    for slug in slugs:
        if on_start:
            on_start(slug)
        try:
            result = solve(conn, slug, config, defs_dir=defs_dir, progress=progress)
            promote(conn, [load_competition(slug, defs_dir).definition.domain])
            entry = CampaignEntry(slug, result=result)
        except TokenBudgetExceeded as exc:
            entries.append(CampaignEntry(slug, error=f"token budget spent: {exc}"))
            log.warning("campaign %s stopped: %s", config.campaign_id, exc)
            if on_done:
                on_done(entries[-1])
            break
        except (HasteError, ValueError, KeyError) as exc:
            entry = CampaignEntry(slug, error=f"{type(exc).__name__}: {exc}")
            log.error("competition %s failed: %s", slug, entry.error)
        entries.append(entry)
        if on_done:
            on_done(entry)
    return entries


# ---- the paper's campaign protocol -------------------------------------------------------

RERUN_SEED_OFFSET = 1000  # the re-run phase's new seed: config.seed + this


@dataclass
class ProtocolStep:
    """One attempt of the protocol: its phase (round1 | round2 | rerun), arm (cold | warm |
    control), loading mode, seed and whether its skills are extracted."""

    phase: str
    arm: str
    slug: str
    loading: str
    seed: int
    extract: bool = True
    attempt_id: int | None = None
    score: float | None = None
    medal: str | None = None
    error: str | None = None
    reused: bool = False  # finished and graded by an earlier (interrupted) run

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "phase", "arm", "slug", "loading", "seed", "extract", "attempt_id", "score",
            "medal", "error", "reused")}


@dataclass
class CampaignRun:
    campaign_id: str
    steps: list[ProtocolStep] = field(default_factory=list)
    inventory: dict[str, Any] = field(default_factory=dict)

    def _rate(self, phases: tuple[str, ...], arm: str | None = None) -> dict[str, Any]:
        done = [s for s in self.steps if s.phase in phases and arm in (None, s.arm)
                and s.error is None and s.medal is not None]
        medals = sum(1 for s in done if s.medal != "none")
        return {"attempts": len(done), "medals": medals,
                "medal_rate": medals / len(done) if done else None}

    def summary(self) -> dict[str, Any]:
        """Medal rates of the first pass (round 1 cold, round 2 warm), of the warm re-run
        and of the retry without skills (same new seed): the re-run phase separates
        transfer (warm) from mere retrying (control)."""
        return {
            "cold_pass": self._rate(("round1", "round2")),
            "round1_cold": self._rate(("round1",), "cold"),
            "round2_warm": self._rate(("round2",), "warm"),
            "rerun_warm": self._rate(("rerun",), "warm"),
            "rerun_control": self._rate(("rerun",), "control"),
        }

    def as_json(self) -> dict[str, Any]:
        return {"campaign_id": self.campaign_id, "summary": self.summary(),
                "inventory": self.inventory, "steps": [s.as_json() for s in self.steps]}


def latest_campaign(conn: psycopg.Connection) -> CampaignRun | None:
    """The newest campaign's steps read back from its labelled attempts (for reports)."""
    row = conn.execute(
        """SELECT split_part(label, ':', 2) AS cid FROM attempts WHERE label LIKE 'campaign:%%'
           ORDER BY id DESC LIMIT 1"""
    ).fetchone()
    if row is None:
        return None
    run = CampaignRun(row["cid"])
    for r in conn.execute(
        """SELECT id, label, loading, seed, status, test_score, medal, error FROM attempts
           WHERE label LIKE %s ORDER BY id""",
        (f"campaign:{row['cid']}:%",),
    ).fetchall():
        _, _, phase, arm, slug = r["label"].split(":", 4)
        run.steps.append(ProtocolStep(
            phase, arm, slug, r["loading"], r["seed"], extract=arm != "control",
            attempt_id=r["id"], score=r["test_score"], medal=r["medal"],
            error=r["error"] if r["status"] == "failed" else None,
        ))
    return run


def protocol_label(campaign_id: str, phase: str, arm: str, slug: str) -> str:
    return f"campaign:{campaign_id}:{phase}:{arm}:{slug}"


def protocol_rounds(slugs: list[str], domains: dict[str, str]) -> tuple[list[str], list[str]]:
    """Round 1: the first competition of each domain (in the given order); round 2: the
    rest. Slugs without a known domain (broken definitions) go to round 2, to be reported."""
    first: dict[str, str] = {}
    for slug in slugs:
        domain = domains.get(slug)
        if domain is not None and domain not in first:
            first[domain] = slug
    round1 = [s for s in slugs if s in first.values()]
    return round1, [s for s in slugs if s not in round1]


def _labelled(conn: psycopg.Connection, label: str) -> dict[str, Any] | None:
    row = conn.execute(
        """SELECT id, status, test_score, medal FROM attempts WHERE label = %s
           ORDER BY id DESC LIMIT 1""",
        (label,),
    ).fetchone()
    return dict(row) if row else None


def inventory_by_tier(conn: psycopg.Connection) -> dict[str, Any]:
    """Active skills per tier, and per domain and kind for the domain tier."""
    rows = conn.execute(
        """SELECT tier, coalesce(scope_key, '') AS scope, kind, count(*) AS n FROM skills
           WHERE is_current AND status = 'active' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    ).fetchall()
    by_tier: dict[str, int] = {}
    domain: dict[str, dict[str, int]] = {}
    for r in rows:
        by_tier[r["tier"]] = by_tier.get(r["tier"], 0) + int(r["n"])
        if r["tier"] == "domain":
            domain.setdefault(r["scope"], {})[r["kind"]] = int(r["n"])
    return {"by_tier": by_tier, "domain_by_kind": domain}


@dataclass(frozen=True)
class StepJob:
    """What a worker needs to solve one protocol step (picklable: no connection)."""

    slug: str
    config: AttemptConfig
    extract: bool
    resume_attempt_id: int | None
    defs_dir: Path | None


@dataclass(frozen=True)
class StepOutcome:
    attempt_id: int | None = None
    score: float | None = None
    medal: str | None = None
    error: str | None = None
    budget_spent: bool = False  # the LLM token budget ended the campaign here


def solve_step(
    conn: psycopg.Connection, job: StepJob, progress: ProgressFn | None = None
) -> StepOutcome:
    """Solve one step; its failure is an outcome (reported), never an exception."""
    from haste_dagster.llm.client import TokenBudgetExceeded

    try:
        result = solve(
            conn, job.slug, job.config, defs_dir=job.defs_dir, extract=job.extract,
            resume_attempt_id=job.resume_attempt_id, progress=progress,
        )
    except TokenBudgetExceeded as exc:
        return StepOutcome(error=f"token budget spent: {exc}", budget_spent=True)
    except (HasteError, ValueError, KeyError) as exc:
        return StepOutcome(error=f"{type(exc).__name__}: {exc}")
    return StepOutcome(result.attempt.attempt_id, result.grade.score, result.grade.medal)


def _exit_with_campaign(campaign_pid: int, poll_seconds: float = 1.0) -> None:
    """Worker initializer: end this worker as soon as the campaign process is gone.

    A campaign killed with SIGKILL cannot shut its pool down, and a worker only notices when
    it asks for its next job, so it would solve its attempt to the end while a resumed
    campaign resumes the same attempt. The worker's parent is the forkserver, which exits
    when the campaign does, so a changed parent (or a vanished campaign pid) means gone.
    The attempt's open transaction rolls back; the resume rule picks the attempt up.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            try:
                os.kill(campaign_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-campaign", daemon=True).start()


def _solve_step_in_worker(database_url: str, job: StepJob) -> StepOutcome:
    from haste_dagster import db

    with db.connect(database_url) as conn:
        return solve_step(conn, job)


def expected_seconds(conn: psycopg.Connection, domains: dict[str, str]) -> dict[str, float]:
    """Each competition's expected search seconds, from the finished attempts in the store:
    the mean of its own, else of its domain's; 0 when nothing is known yet. Only the order
    in which a parallel phase runs its attempts depends on it, never what they load."""
    rows = conn.execute(
        """SELECT a.slug, c.domain, sum(i.seconds) AS seconds FROM attempts a
           JOIN competitions c ON c.slug = a.slug JOIN iterations i ON i.attempt_id = a.id
           WHERE a.status = 'finished' GROUP BY a.id, a.slug, c.domain"""
    ).fetchall()
    own: dict[str, list[float]] = {}
    by_domain: dict[str, list[float]] = {}
    for r in rows:
        own.setdefault(r["slug"], []).append(float(r["seconds"]))
        by_domain.setdefault(r["domain"], []).append(float(r["seconds"]))
    known = own | {slug: by_domain[d] for slug, d in domains.items()
                   if slug not in own and d in by_domain}
    return {slug: sum(v) / len(v) for slug, v in known.items()}


def campaign_protocol(
    conn: psycopg.Connection,
    slugs: list[str],
    config: AttemptConfig,
    *,
    defs_dir: Path | None = None,
    rerun: bool = True,
    workers: int = 1,
    database_url: str | None = None,
    on_start: Callable[[ProtocolStep], None] | None = None,
    on_done: Callable[[ProtocolStep], None] | None = None,
    progress: ProgressFn | None = None,
) -> CampaignRun:
    """The paper's campaign: round 1 = one competition per domain, cold (no skills loaded);
    round 2 = the rest, warm (``config.loading``, tiered by default); consolidation between
    rounds; then the re-run phase: every competition that did not medal is attempted again
    warm *and* again without skills (the control), both with the new seed
    ``config.seed + RERUN_SEED_OFFSET``. Skills are extracted from every attempt but the
    controls.

    ``workers=1`` solves the steps one after the other and promotes after each, so a
    round-2 competition sees what every competition before it taught. ``workers`` > 1
    solves a phase as a work queue on that many worker processes connected to
    ``database_url``: first every attempt of the phase has its skills fixed against the
    store as the phase begins (`attempts.fix_attempt_skills`), then the queue runs them,
    the longest expected first (`expected_seconds`), a new one as soon as a worker is free,
    and promotion follows the phase, in step order. What an attempt loads therefore depends
    on neither the order nor the number of workers: every ``workers`` > 1 gives the same
    campaign (but for attempts cut by their wall-clock budget), and the phases promote
    between them as the paper's protocol does. (Only in-process steps report ``progress``.)

    Resumable: every attempt is labelled ``campaign:<id>:<phase>:<arm>:<slug>``; running
    again with the same ``config.campaign_id`` reuses graded attempts, resumes unfinished
    ones (with the skills fixed for them), and re-extracts idempotently, so no skill is
    duplicated.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from contextlib import ExitStack
    from multiprocessing import get_context

    from haste_dagster.agents.attempts import fix_attempt_skills
    from haste_dagster.agents.orchestrator import load_solvable
    from haste_dagster.competitions.definition import load_definition
    from haste_dagster.skills import consolidate

    if workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}")
    if workers > 1 and database_url is None:
        raise ConfigError("workers > 1 needs the database_url the worker processes connect to")
    campaign_id = config.campaign_id or f"campaign-{uuid.uuid4().hex[:12]}"
    config = replace(config, campaign_id=campaign_id)
    run = CampaignRun(campaign_id)
    domains: dict[str, str] = {}
    folder = defs_dir
    for slug in slugs:
        try:
            if folder is None:
                from haste_dagster.config import competition_defs_dir

                folder = competition_defs_dir()
            domains[slug] = load_definition(Path(folder) / f"{slug}.yaml").domain
        except (HasteError, ValueError, KeyError, OSError):
            pass  # reported when its attempt is tried
    round1, round2 = protocol_rounds(slugs, domains)
    store = open_skill_store(conn)
    warm = config.loading if config.loading != "none" else "tiered"

    def begin(step: ProtocolStep, *, fix_skills: bool) -> StepJob | StepOutcome:
        """The job that solves ``step`` (its skills fixed now when ``fix_skills``), or its
        outcome when an earlier run graded it or it cannot start."""
        label = protocol_label(campaign_id, step.phase, step.arm, step.slug)
        found = _labelled(conn, label)
        if found and found["status"] == "finished" and found["test_score"] is not None:
            step.reused = True
            if step.extract:  # finish what a kill between grading and skills left
                try:
                    extract_skills(conn, load_competition(step.slug, defs_dir), found["id"],
                                   store)
                except (HasteError, ValueError, KeyError) as exc:
                    return StepOutcome(found["id"], found["test_score"], found["medal"],
                                       error=f"{type(exc).__name__}: {exc}")
            return StepOutcome(found["id"], found["test_score"], found["medal"])
        resume_id = found["id"] if found and found["status"] != "finished" else None
        step_config = replace(config, loading=step.loading, seed=step.seed, label=label)
        if fix_skills:
            try:
                competition = load_solvable(step.slug, defs_dir)
                if not competition.definition.is_multi_target:  # its targets fix their own
                    resume_id = fix_attempt_skills(conn, store, competition, step_config,
                                                   resume_attempt_id=resume_id)
            except (HasteError, ValueError, KeyError) as exc:
                return StepOutcome(error=f"{type(exc).__name__}: {exc}")
        return StepJob(step.slug, step_config, step.extract, resume_id, defs_dir)

    def record(step: ProtocolStep, outcome: StepOutcome) -> None:
        step.attempt_id = outcome.attempt_id
        step.score, step.medal, step.error = outcome.score, outcome.medal, outcome.error
        if step.error and not outcome.budget_spent:
            log.error("campaign %s: %s %s failed: %s", campaign_id, step.phase, step.slug,
                      step.error)

    def promote_after(step: ProtocolStep) -> None:
        if step.error is None and step.slug in domains and step.arm != "control":
            try:
                promote(conn, [domains[step.slug]], store)
            except (HasteError, ValueError, KeyError) as exc:
                step.error = f"{type(exc).__name__}: {exc}"
                log.error("campaign %s: promotion after %s failed: %s", campaign_id,
                          step.slug, step.error)
        run.steps.append(step)

    def run_in_order(steps: list[ProtocolStep]) -> bool:
        """One step after the other, promotion after each; False: the budget is spent."""
        for step in steps:
            if on_start:
                on_start(step)
            work = begin(step, fix_skills=False)
            outcome = solve_step(conn, work, progress) if isinstance(work, StepJob) else work
            record(step, outcome)
            promote_after(step)
            if on_done:
                on_done(step)
            if outcome.budget_spent:
                return False
        return True

    def run_queue(steps: list[ProtocolStep], pool: ProcessPoolExecutor) -> bool:
        """Every step's skills fixed first, then the queue, then promotion in step order;
        False: the budget is spent (no new step starts once one says so)."""
        work = [begin(step, fix_skills=True) for step in steps]
        expected = expected_seconds(conn, domains)
        queue = sorted((i for i, w in enumerate(work) if isinstance(w, StepJob)),
                       key=lambda i: -expected.get(steps[i].slug, 0.0))
        outcomes = {i: w for i, w in enumerate(work) if isinstance(w, StepOutcome)}
        for i in sorted(outcomes):
            if on_start:
                on_start(steps[i])
            record(steps[i], outcomes[i])
            if on_done:
                on_done(steps[i])
        running: dict[Future[StepOutcome], int] = {}
        spent = False
        while running or (queue and not spent):
            while queue and not spent and len(running) < workers:
                i = queue.pop(0)
                if on_start:
                    on_start(steps[i])
                running[pool.submit(_solve_step_in_worker, database_url, work[i])] = i
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                i = running.pop(future)
                outcomes[i] = future.result()
                spent = spent or outcomes[i].budget_spent
                record(steps[i], outcomes[i])
                if on_done:
                    on_done(steps[i])
        for i, step in enumerate(steps):
            if i in outcomes:
                promote_after(step)
        return not spent

    with ExitStack() as stack:
        pool = (
            stack.enter_context(ProcessPoolExecutor(
                workers, mp_context=get_context("forkserver"),
                initializer=_exit_with_campaign, initargs=(os.getpid(),),
            ))
            if workers > 1 else None
        )

        def run_phase(steps: list[ProtocolStep]) -> bool:
            """The phase's steps, then consolidation (merge duplicates, retire poor skills,
            promote); False, and no consolidation, when the token budget is spent."""
            go_on = run_in_order(steps) if pool is None else run_queue(steps, pool)
            if go_on:
                consolidate(store)
            return go_on

        go_on = run_phase(
            [ProtocolStep("round1", "cold", s, "none", config.seed) for s in round1]
        ) and run_phase([ProtocolStep("round2", "warm", s, warm, config.seed) for s in round2])
        if go_on and rerun:
            seed = config.seed + RERUN_SEED_OFFSET
            missed = [s.slug for s in run.steps if s.error is None and s.medal == "none"]
            run_phase([step for slug in missed for step in (
                ProtocolStep("rerun", "warm", slug, warm, seed),
                ProtocolStep("rerun", "control", slug, "none", seed, extract=False),
            )])
    run.inventory = inventory_by_tier(conn)
    return run

"""Running the transfer benchmark: throwaway databases, the attempt runners, the peers."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg.pq import TransactionStatus

from haste_dagster import db
from haste_dagster.bench.measure import Stopwatch, Usage, cpu_seconds
from haste_dagster.bench.transfer.plan import (
    Arm,
    BenchmarkError,
    Loading,
    Plan,
    TransferOptions,
    plan_benchmark,
)
from haste_dagster.bench.transfer.report import (
    AttemptRecord,
    Graded,
    PeerRecord,
    TransferReport,
)
from haste_dagster.competitions.registry import Competition, load_competition
from haste_dagster.errors import HasteError

if TYPE_CHECKING:  # the skill store loads when the benchmark runs
    from haste_dagster.skills.store import SkillStore

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Throwaway databases
# ---------------------------------------------------------------------------------------


# db.server_conninfo, db.scratch_database and db.connect (autocommit, so every recorded
# row is durable at once) create, open and drop them.


# ---------------------------------------------------------------------------------------
# Skill store access
# ---------------------------------------------------------------------------------------


class FrozenStore:
    """A read-through view of a skill store that records no usage.

    Evaluation attempts run against the campaign's inventory; with the store's usage writes
    switched off, every one of them sees the same skills with the same utilities, whatever
    ran before it.
    """

    def __init__(self, store: SkillStore) -> None:
        self._store = store

    def record_usage(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_loaded(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def inventory(conn: psycopg.Connection) -> dict[str, Any]:
    """Active skills by tier, and a fingerprint of every skill version and usage row.

    Two equal fingerprints mean no skill was added, versioned, retired or used in between.
    """
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    if conn.execute("SELECT to_regclass('skills') AS t").fetchone()["t"] is None:
        if idle:
            conn.commit()
        return {"active": 0, "by_tier": {}, "fingerprint": hashlib.sha256(b"").hexdigest()}
    rows = conn.execute(
        """SELECT tier, count(*) AS n FROM skills WHERE is_current AND status = 'active'
           GROUP BY tier ORDER BY tier"""
    ).fetchall()
    by_tier = {r["tier"]: int(r["n"]) for r in rows}
    versions = conn.execute(
        "SELECT id, version, is_current, status FROM skills ORDER BY id, version"
    ).fetchall()
    usage = conn.execute(
        "SELECT count(*) AS n, coalesce(max(id), 0) AS last FROM skill_usage"
    ).fetchone()
    if idle:  # end the transaction these reads opened; leave a caller's own one alone
        conn.commit()
    digest = hashlib.sha256(json.dumps([versions, usage], default=str).encode())
    return {"active": sum(by_tier.values()), "by_tier": by_tier, "fingerprint": digest.hexdigest()}


def inventory_listing(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every current active skill: id, version, tier, scope, kind, title, action, provenance."""
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    rows = conn.execute(
        """SELECT id, version, tier, scope_key, kind, title, action, created_by FROM skills
           WHERE is_current AND status = 'active'
           ORDER BY array_position(ARRAY['global','domain','competition'], tier), scope_key, id"""
    ).fetchall()
    if idle:
        conn.commit()
    return [dict(r) for r in rows]


def search_priors(conn: psycopg.Connection) -> dict[str, dict[str, list[int]]]:
    """The current domain search priors' counts: domain → move → [tried, kept]."""
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    rows = conn.execute(
        """SELECT scope_key, payload FROM skills WHERE is_current AND status = 'active'
           AND kind = 'prior' AND tier = 'domain' ORDER BY scope_key"""
    ).fetchall()
    if idle:
        conn.commit()
    return {r["scope_key"]: dict(r["payload"].get("moves") or {}) for r in rows}


def _slim_iterations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the report keeps of each iteration: its score and verdict, the skills that
    proposed it and its move (``heuristic.move_key``: which parameter, family or step)."""
    from haste_dagster.agents.heuristic import move_key

    return [
        {
            "idx": r["idx"],
            "branch": r.get("branch", "main"),
            "score": r["score"],
            "kept": bool(r["kept"]),
            "error": r.get("error"),
            "tokens": r.get("tokens", 0),
            "seconds": r.get("seconds"),
            "skills": list(r.get("skills") or []),
            "move": move_key(r.get("patch")),
        }
        for r in rows
    ]


def _graded(
    conn: psycopg.Connection, competition: Competition, attempt_id: int, gradeable: bool
) -> Graded:
    """Grade the attempt's best spec on the hidden split (score only without thresholds)."""
    from haste_dagster.agents import records
    from haste_dagster.agents.submission import make_submission
    from haste_dagster.competitions.grading import score_hidden
    from haste_dagster.solution.evaluate import fit_predict
    from haste_dagster.solution.spec import SolutionSpec

    if gradeable:
        g = make_submission(conn, competition, attempt_id)
        return Graded(g.score, g.medal, g.rank, g.n_teams or None, g.bootstrap_se)
    attempt = records.get_attempt(conn, attempt_id)
    spec = SolutionSpec.model_validate(attempt.best_spec)
    predictions = fit_predict(
        spec, competition.problem, competition.train, competition.test_features, attempt.seed
    )
    return Graded(score_hidden(competition, predictions), None)


def _grade_predictions(competition: Competition, predictions: Any, gradeable: bool) -> Graded:
    from haste_dagster.competitions.grading import grade, score_hidden

    if gradeable:
        g = grade(competition, predictions)
        return Graded(g.score, g.medal, g.rank, g.n_teams or None, g.bootstrap_se)
    return Graded(score_hidden(competition, predictions), None)


def _run_one(
    conn: psycopg.Connection,
    database: str,
    store: SkillStore | FrozenStore,
    competition: Competition,
    *,
    phase: Literal["campaign", "evaluation"],
    arm: Arm,
    loading: Loading,
    seed: int,
    options: TransferOptions,
    plan: Plan,
    extract: bool = True,
) -> AttemptRecord:
    from haste_dagster.agents.attempts import AttemptConfig
    from haste_dagster.agents.competition_agent import run_attempt
    from haste_dagster.agents.orchestrator import extract_skills

    size = inventory(conn)["active"]
    config = AttemptConfig(
        policy=options.policy,
        pipeline=options.pipeline,
        loading=loading,
        iterations=options.iterations,
        seed=seed,
        label=f"bench:{arm}",
    )
    with Stopwatch() as search:
        result = run_attempt(conn, competition, config, store=store)
    with Stopwatch() as submit:
        graded = _graded(conn, competition, result.attempt_id, plan.graded[competition.slug])
    new_skills: list[str] = []
    if phase == "campaign" and extract:
        new_skills = [s.id for s in extract_skills(conn, competition, result.attempt_id, store)]
    control = result.extra.get("control")
    tiers: dict[str, int] = {}
    for entry in result.skills_loaded:
        tiers[entry.get("tier", "?")] = tiers.get(entry.get("tier", "?"), 0) + 1
    scored = max(0, len(result.iterations) - 1)
    llm = None
    if options.policy == "llm":
        from haste_dagster.llm.ledger import TokenLedger

        llm = TokenLedger(conn).attempt_totals(result.attempt_id).as_json()
    return AttemptRecord(
        phase=phase,
        arm=arm,
        slug=competition.slug,
        domain=plan.domains[competition.slug],
        seed=seed,
        loading=loading,
        attempt_id=result.attempt_id,
        database=database,
        higher_is_better=competition.metric.higher_is_better,
        budget=options.iterations or competition.definition.budget.iterations,
        inventory_size=size,
        skills_loaded=len(result.skills_loaded),
        skills_loaded_by_tier=tiers,
        skill_ids_loaded=[entry["id"] for entry in result.skills_loaded],
        best_cv=result.best_cv,
        kept_rate=result.kept_rate,
        scored_iterations=scored,
        stopped=result.stopped,
        iterations=_slim_iterations(result.iterations),
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        search=search.usage,
        submission=submit.usage,
        test_score=graded.score,
        medal=graded.medal,
        rank=graded.rank,
        n_teams=graded.n_teams,
        percentile=graded.percentile,
        bootstrap_se=graded.bootstrap_se,
        new_skills=new_skills,
        llm=llm,
        control_evaluations=1 if control else 0,
        control_won=bool(control["control_won"]) if control else None,
        inert_skipped=int(result.extra.get("inert_skipped", 0)),
    )


# ---------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------


def _say(options: TransferOptions, message: str) -> None:
    log.info(message)
    if options.log is not None:
        options.log(message)


def _describe(r: AttemptRecord) -> str:
    score = "—" if r.test_score is None else f"{r.test_score:.5g}"
    cv = "—" if r.best_cv is None else f"{r.best_cv:.5g}"
    return (
        f"{r.arm:<8} {r.slug} seed {r.seed}: cv {cv} test {score} medal {r.medal or 'n/a'} "
        f"kept {r.kept_rate:.0%} skills {r.skills_loaded}/{r.inventory_size} "
        f"cpu {r.usage.cpu_seconds:.1f}s"
    )


def run_transfer_benchmark(
    conn_or_url: psycopg.Connection | str, options: TransferOptions | None = None
) -> TransferReport:
    """Run the whole benchmark on the server behind ``conn_or_url`` (see the module doc).

    Nothing is written to the database ``conn_or_url`` names: the campaign and the cold
    attempts run in two databases created for the purpose and dropped at the end (kept
    with ``options.keep_databases``; their names are in ``report.databases``).
    """
    from haste_dagster.agents.campaign import (
        RERUN_SEED_OFFSET,
        inventory_by_tier,
        protocol_rounds,
    )
    from haste_dagster.agents.factory import open_skill_store
    from haste_dagster.agents.orchestrator import promote
    from haste_dagster.skills import consolidate

    options = options or TransferOptions()
    plan = plan_benchmark(options)
    base = db.server_conninfo(conn_or_url)
    tag = f"haste_bench_{datetime.now(UTC):%Y%m%d%H%M%S}_{uuid.uuid4().hex[:6]}"
    names = {"inventory": f"{tag}_inv", "cold": f"{tag}_cold"}
    report = TransferReport(
        options=options,
        plan=plan,
        databases={**names, "kept": str(options.keep_databases).lower()},
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    competitions = {s: load_competition(s, plan.folders[s]) for s in plan.folders}
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    _say(options, f"development: {', '.join(plan.development)}")
    _say(options, f"evaluation: {', '.join(plan.evaluation)}; seeds {plan.seeds}")

    def attempt(
        conn: psycopg.Connection,
        database: str,
        store: SkillStore | FrozenStore,
        slug: str,
        arm: Arm,
        loading: Loading,
        seed: int,
    ) -> AttemptRecord | None:
        return _attempt(report, competitions[slug], conn, database, store, arm, loading, seed)

    keep = options.keep_databases
    arms = _evaluation_arms(options)
    with (
        db.scratch_database(base, names["inventory"], keep=keep) as inv_url,
        db.scratch_database(base, names["cold"], keep=keep) as cold_url,
    ):
        with db.connect(inv_url) as conn:
            store = open_skill_store(conn)
            # The campaign protocol (campaign.campaign_protocol): round 1 one competition
            # per domain cold, round 2 the rest warm, consolidation between rounds, then the
            # re-run phase (warm, and without skills as the control, with a new seed).
            round1, round2 = protocol_rounds(plan.development, plan.domains)
            for loading, slugs in (("none", round1), ("tiered", round2)):
                for slug in slugs:
                    attempt(conn, names["inventory"], store, slug, "campaign", loading,
                            options.campaign_seed)
                    promote(conn, [plan.domains[slug]], store)
                consolidate(store)
            missed = [r.slug for r in report.campaign if r.medal == "none"]
            rerun_seed = options.campaign_seed + RERUN_SEED_OFFSET
            for slug in missed:
                attempt(conn, names["inventory"], store, slug, "rerun_warm", "tiered", rerun_seed)
                promote(conn, [plan.domains[slug]], store)
                attempt(conn, names["inventory"], store, slug, "rerun_control", "none",
                        rerun_seed)
            if missed:
                consolidate(store)
            report.inventory_before = inventory(conn)
            report.inventory_domains = inventory_by_tier(conn)
            report.inventory_skills = inventory_listing(conn)
            report.search_priors = search_priors(conn)
            _say(
                options,
                f"inventory: {report.inventory_before['active']} active skills "
                f"{report.inventory_before['by_tier']}",
            )
            frozen = FrozenStore(store)
            for slug in plan.evaluation:
                for seed in plan.seeds:
                    for arm, loading in arms:
                        attempt(conn, names["inventory"], frozen, slug, arm, loading, seed)
            report.inventory_after = inventory(conn)
        with db.connect(cold_url) as conn:
            store = open_skill_store(conn)
            for slug in plan.evaluation:
                for seed in plan.seeds:
                    attempt(conn, names["cold"], store, slug, "cold", "tiered", seed)
    _run_peers(report, competitions)
    report.usage = Usage(time.perf_counter() - wall0, cpu_seconds() - cpu0)
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    return report


def _evaluation_arms(options: TransferOptions) -> list[tuple[Arm, Loading]]:
    """(arm, loading) of the attempts run against the frozen inventory: warm, then the
    ablation's other loading modes."""
    arms: list[tuple[Arm, Loading]] = [("warm", "tiered")]
    return arms + [(m, m) for m in options.modes if m != "tiered"]  # type: ignore[misc]


def _attempt(
    report: TransferReport,
    competition: Competition,
    conn: psycopg.Connection,
    database: str,
    store: SkillStore | FrozenStore,
    arm: Arm,
    loading: Loading,
    seed: int,
) -> AttemptRecord | None:
    """One attempt, recorded in ``report``; a failing one is reported (as `haste campaign`
    does) and skipped."""
    options, slug = report.options, competition.definition.slug
    phase: Literal["campaign", "evaluation"] = (
        "campaign" if arm in ("campaign", "rerun_warm", "rerun_control") else "evaluation"
    )
    try:
        record = _run_one(
            conn,
            database,
            store,
            competition,
            phase=phase,
            arm=arm,
            loading=loading,
            seed=seed,
            options=options,
            plan=report.plan,
            extract=arm != "rerun_control",
        )
    except (HasteError, ValueError, KeyError) as exc:
        conn.rollback()
        error = f"{type(exc).__name__}: {exc}"
        report.failures.append({"arm": arm, "slug": slug, "seed": seed, "error": error})
        _say(options, f"{arm:<8} {slug} seed {seed}: FAILED {error}")
        return None
    (report.campaign if phase == "campaign" else report.evaluation).append(record)
    extra = f" (+{len(record.new_skills)} skills)" if phase == "campaign" else ""
    _say(options, _describe(record) + extra)
    return record


def replay_evaluation(
    conn_or_url: psycopg.Connection | str,
    payload: dict[str, Any],
    *,
    source: str,
    recount_priors: bool = False,
    log: Callable[[str], None] | None = None,
) -> TransferReport:
    """Run a report's evaluation phase again, with this code, against its campaign's store.

    A paired A/B of anything the evaluation reads (loading, the policy, the search): the
    campaign, its inventory, the cold attempts and the peers are the report's own, and only
    the attempts against the frozen inventory (warm and the ablation's arms) run again, with
    the same seeds. They run in a copy of the report's kept inventory database
    (``<inventory>_replay_<time>``, kept for inspection) from which the report's own
    evaluation attempts are deleted: they recorded no usage, so the copy is the store as
    that evaluation saw it. The replayed report is a whole report (``--pool`` reads it);
    its ``replay`` entry names the source and the copy. ``recount_priors``: first count the
    domains' search priors again with this code (for a change to what a prior holds).
    A :class:`BenchmarkError` names ``source`` when it cannot be replayed.
    """
    from haste_dagster.agents.factory import open_skill_store

    try:
        options = replace(TransferOptions.from_json(payload["options"]), log=log)
        databases = payload["databases"]
    except (KeyError, TypeError) as exc:
        raise BenchmarkError(
            f"{source}: not a transfer report (haste bench transfer --json): missing {exc}"
        ) from exc
    if databases.get("kept") != "true":
        raise BenchmarkError(
            f"{source}: its databases were dropped after the run; only a report run with "
            "--keep-databases can be replayed"
        )
    plan = plan_benchmark(options)
    if (plan.evaluation, plan.seeds) != (payload.get("evaluation"), payload.get("seeds")):
        raise BenchmarkError(
            f"{source}: its evaluation {payload.get('evaluation')} with seeds "
            f"{payload.get('seeds')} is not what its options plan here ({plan.evaluation}, "
            f"{plan.seeds}): were the competition definitions changed?"
        )
    try:
        report = TransferReport.from_json(payload, options, plan)
    except (KeyError, TypeError) as exc:
        raise BenchmarkError(f"{source}: a transfer report without {exc}") from exc
    base = db.server_conninfo(conn_or_url)
    original = databases["inventory"]
    copy = f"{original}_replay_{datetime.now(UTC):%H%M%S}"
    try:
        copy_url = db.create_database(base, copy, template=original)
    except HasteError as exc:
        raise BenchmarkError(
            f"{source}: cannot copy its inventory database {original} on this server (is "
            f"HASTE_HOME or HASTE_DATABASE_URL the one it ran on? is a session open on it?): "
            f"{exc}"
        ) from exc
    arms = _evaluation_arms(options)
    replayed = {arm for arm, _ in arms}
    report.evaluation = [r for r in report.evaluation if r.arm not in replayed]
    report.failures = [f for f in report.failures if f["arm"] not in replayed]
    _reread_iterations(base, report.evaluation)
    competitions = {s: load_competition(s, plan.folders[s]) for s in plan.evaluation}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with Stopwatch() as clock, db.connect(copy_url) as conn:
        conn.execute("DELETE FROM attempts WHERE label = ANY(%s)",
                     ([f"bench:{arm}" for arm in replayed],))
        store = open_skill_store(conn)
        if recount_priors:
            _recount_priors(conn, store, sorted(set(plan.domains.values())))
        frozen = FrozenStore(store)
        report.inventory_before = inventory(conn)
        report.inventory_skills = inventory_listing(conn)
        report.search_priors = search_priors(conn)
        for slug in plan.evaluation:
            for seed in plan.seeds:
                for arm, loading in arms:
                    _attempt(report, competitions[slug], conn, copy, frozen, arm, loading, seed)
        report.inventory_after = inventory(conn)
    report.replay = {
        "of": source,
        "database": copy,
        "recount_priors": recount_priors,
        "started_at": started,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **clock.usage.as_json(),
    }
    return report


def _reread_iterations(base: str, kept: list[AttemptRecord]) -> None:
    """Read the iterations of the attempts a replay keeps (the cold arm) again from their
    databases: the same rows, slimmed by this code, so a report written before a field of
    them existed (``move``, ``skills``) gains it."""
    from haste_dagster.agents.attempts import iteration_json
    from haste_dagster.agents.records import load_iterations

    for name in sorted({r.database for r in kept}):
        with db.connect(db.database_address(base, name), migrate_schema=False) as conn:
            for record in (r for r in kept if r.database == name):
                rows = load_iterations(conn, record.attempt_id)
                record.iterations = _slim_iterations([iteration_json(r) for r in rows])


def _recount_priors(conn: psycopg.Connection, store: SkillStore, domains: list[str]) -> None:
    """Count each domain's search prior again, with this code, over the attempts its stored
    version counted: those finished when it was written (the re-run phase's control, which
    no promotion follows, is held out)."""
    from haste_dagster.agents.orchestrator import update_search_priors

    for domain in domains:
        with conn.transaction():
            held = conn.execute(
                """UPDATE attempts SET status = 'running' WHERE status = 'finished'
                   AND slug IN (SELECT slug FROM competitions WHERE domain = %s)
                   AND finished_at > (SELECT max(created_at) FROM skills
                                      WHERE kind = 'prior' AND scope_key = %s)
                   RETURNING id""",
                (domain, domain),
            ).fetchall()
            update_search_priors(conn, domain, store)
            conn.execute("UPDATE attempts SET status = 'finished' WHERE id = ANY(%s)",
                         ([r["id"] for r in held],))


def _run_peers(report: TransferReport, competitions: dict[str, Competition]) -> None:
    from haste_dagster.bench.peers import PeerUnavailable, flaml_status, run_flaml

    options = report.options
    for name in options.peers:
        if name != "flaml":
            report.peers_unavailable[name] = f"unknown peer {name!r} (known: flaml)"
            continue
        available, why = flaml_status()
        if not available:
            report.peers_unavailable[name] = why or "not installed"
            _say(options, f"peer {name} skipped: {why}")
            continue
        for warm in report.arm("warm"):
            competition = competitions[warm.slug]
            budget = warm.usage.cpu_seconds
            try:
                run = run_flaml(competition, budget, seed=warm.seed)
            except PeerUnavailable as exc:  # pragma: no cover - checked above
                report.peers_unavailable[name] = str(exc)
                break
            graded = Graded(float("nan"), None)
            if run.error is None:
                try:
                    graded = _grade_predictions(
                        competition, run.predictions, report.plan.graded[warm.slug]
                    )
                except HasteError as exc:
                    run.error = f"grading failed: {exc}"
            record = PeerRecord(
                peer=name,
                slug=warm.slug,
                seed=warm.seed,
                budget_cpu_seconds=budget,
                time_budget=run.time_budget,
                usage=run.usage,
                test_score=None if run.error else graded.score,
                medal=None if run.error else graded.medal,
                percentile=None if run.error else graded.percentile,
                best_estimator=run.best_estimator,
                error=run.error,
            )
            report.peers.append(record)
            score = (
                "failed: " + run.error
                if run.error
                else f"test {graded.score:.5g} medal {graded.medal or 'n/a'}"
            )
            _say(
                options,
                f"{name:<8} {warm.slug} seed {warm.seed}: {score} cpu "
                f"{run.usage.cpu_seconds:.1f}s (budget {budget:.1f}s)",
            )

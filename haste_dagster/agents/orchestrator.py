"""The orchestrator: solves competitions (attempt → submission → skills) and runs campaigns,
promoting skills upward after each competition."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from haste_dagster.agents import records
from haste_dagster.agents.competition_agent import (
    AttemptConfig,
    AttemptResult,
    ProgressFn,
    run_attempt,
)
from haste_dagster.agents.factory import make_policy, open_skill_store
from haste_dagster.agents.submission import make_submission
from haste_dagster.competitions.grading import Grade, competition_thresholds
from haste_dagster.competitions.profile import profile_data
from haste_dagster.competitions.registry import check_solvable, load_competition
from haste_dagster.errors import HasteError

log = logging.getLogger(__name__)


@dataclass
class SolveResult:
    attempt: AttemptResult
    grade: Grade
    new_skills: list[str] = field(default_factory=list)
    resumed: bool = False
    llm: dict[str, Any] | None = None  # ledger totals of every LLM call of the attempt

    def as_json(self) -> dict[str, Any]:
        return {
            "slug": self.attempt.slug,
            "score": self.grade.score,
            "medal": self.grade.medal,
            "rank": self.grade.rank,
            "n_teams": self.grade.n_teams,
            "bootstrap_se": self.grade.bootstrap_se,
            "thresholds": (
                self.grade.thresholds.model_dump(mode="json") if self.grade.thresholds else None
            ),
            "above_median": self.grade.above_median,
            "resumed": self.resumed,
            "new_skills": self.new_skills,
            **self.attempt.as_json(),
            **({"llm": self.llm} if self.llm is not None else {}),
        }


def kept_changes(conn: psycopg.Connection, attempt_id: int, higher_is_better: bool) -> list[Any]:
    """The attempt's kept refinement steps, each with the incumbent spec it was applied to."""
    from haste_dagster.skills.extraction import KeptChange
    from haste_dagster.solution.spec import SolutionSpec, apply_patch, parse_patch

    sign = 1.0 if higher_is_better else -1.0
    attempt = records.get_attempt(conn, attempt_id)
    # A staged attempt's changes count from the branch that went on (the other branch's
    # patches were made against a different prototype).
    branch = (attempt.result or {}).get("best_branch", "main")
    spec = (SolutionSpec.model_validate(attempt.initial_spec)
            if attempt.initial_spec is not None and branch == "main" else None)
    out = []
    for r in records.load_iterations(conn, attempt_id):
        if r.branch != branch:
            continue
        if r.spec is not None:  # the start of a branch: the whole spec it evaluated
            spec = SolutionSpec.model_validate(r.spec)
        if r.idx == 0 or not r.kept or r.patch is None:
            continue
        before = spec.model_dump(mode="json") if spec is not None else None
        if spec is not None:
            try:
                spec = apply_patch(spec, parse_patch(r.patch))
            except HasteError:
                spec = None
        if r.cv_mean is None or r.incumbent_before is None:
            continue
        out.append(KeptChange(
            idx=r.idx,
            patch=r.patch,
            delta=sign * (r.cv_mean - r.incumbent_before),
            rationale=r.rationale,
            skill_ids=list(r.skill_ids),
            before=before,
        ))
    return out


def best_spec_margin(
    conn: psycopg.Connection, competition: Any, attempt_id: int
) -> Any:
    """The recipe material of an attempt: its best spec, the domain default and the best's
    measured margin over the default (best vs the start of its line, plus that start's
    measured delta against the plain-default control when skills shaped it); None when the
    margin over the default was not measured (a staged attempt whose winning branch started
    from a skill's recipe: that recipe's screen usage is its evidence)."""
    from haste_dagster.skills.extraction import BestSpec
    from haste_dagster.skills.model import canonical_json as canonical
    from haste_dagster.solution.space import default_spec

    attempt = records.get_attempt(conn, attempt_id)
    branch = (attempt.result or {}).get("best_branch", "main")
    rows = [r for r in records.load_iterations(conn, attempt_id) if r.branch == branch]
    if attempt.best_spec is None or attempt.best_cv is None or not rows:
        return None
    base = rows[0]
    if base.cv_mean is None:
        return None
    sign = 1.0 if competition.metric.higher_is_better else -1.0
    default = default_spec(competition.problem).model_dump(mode="json")
    margin = sign * (attempt.best_cv - base.cv_mean)
    start = base.spec if base.spec is not None else attempt.initial_spec
    if start != default:
        if branch != "main":
            # the screen scored the branch's prototype and the domain default on one fold
            screen = {canonical(r.spec): r.cv_mean for r in records.load_iterations(
                conn, attempt_id) if r.branch == "screen" and r.spec is not None}
            there, plain = screen.get(canonical(start)), screen.get(canonical(default))
            if base.skill_ids or there is None or plain is None:
                return None
            return BestSpec(spec=attempt.best_spec, default=default,
                            margin=margin + sign * (there - plain))
        row = conn.execute(
            """SELECT delta FROM skill_usage WHERE attempt_id = %s AND event = 'screened'
               AND iteration_idx = 0 AND delta IS NOT NULL LIMIT 1""",
            (attempt_id,),
        ).fetchone()
        if row is None:
            return None  # no control measured: the margin over the default is unknown
        margin += float(row["delta"])
    return BestSpec(spec=attempt.best_spec, default=default, margin=margin)


def extract_skills(
    conn: psycopg.Connection,
    competition: Any,
    attempt_id: int,
    store: Any = None,
    *,
    dagster_run_id: str | None = None,
) -> list[Any]:
    """Write the competition skills the attempt taught: kept changes, normalised rules and
    the whole-spec recipe (idempotent); each records the attempt and, run from Dagster, the
    run that wrote it."""
    from haste_dagster.skills.extraction import extract_competition_skills

    store = store if store is not None else open_skill_store(conn)
    definition = competition.definition
    higher = competition.metric.higher_is_better
    return extract_competition_skills(
        store,
        attempt_id=attempt_id,
        slug=definition.slug,
        domain=definition.domain,
        profile=profile_data(competition).as_dict(),
        kept_changes=kept_changes(conn, attempt_id, higher),
        dagster_run_id=dagster_run_id,
        best=best_spec_margin(conn, competition, attempt_id),
    )


def update_search_priors(conn: psycopg.Connection, domain: str, store: Any) -> Any:
    """Recount the domain's exploratory moves (tried, kept) into its prior skill."""
    from haste_dagster.agents.heuristic import move_key
    from haste_dagster.skills.priors import write_domain_prior

    rows = conn.execute(
        """SELECT i.attempt_id, i.patch, i.kept FROM iterations i
           JOIN attempts a ON a.id = i.attempt_id JOIN competitions c ON c.slug = a.slug
           WHERE c.domain = %s AND i.idx > 0 AND i.patch IS NOT NULL AND i.error IS NULL
             AND jsonb_array_length(i.skill_ids) = 0 AND a.status = 'finished'
           ORDER BY i.attempt_id, i.idx""",
        (domain,),
    ).fetchall()
    moves: dict[str, list[int]] = {}
    for r in rows:
        key = move_key(r["patch"])
        if key is None:
            continue
        pair = moves.setdefault(key, [0, 0])
        pair[0] += 1
        pair[1] += int(bool(r["kept"]))
    return write_domain_prior(store, domain, moves, len({r["attempt_id"] for r in rows}))


def reflect_with_llm(
    conn: psycopg.Connection,
    competition: Any,
    attempt_id: int,
    store: Any,
    client: Any,
    *,
    dagster_run_id: str | None = None,
) -> list[str]:
    """LLM reflection: the competition agent states 2–5 learnings, the orchestrator labels
    each (skip | competition | domain | global | conflict) and the evidence rule decides
    whether a promotion stands. Writes one skill per kept decision; returns their ids.
    An LLM failure here is logged and costs only the reflection, never the attempt."""
    from haste_dagster.agents.reflection import AttemptSummary, label_learnings, reflect
    from haste_dagster.errors import LLMError
    from haste_dagster.skills.model import Evidence, Skill
    from haste_dagster.skills.promotion import evidence_allows

    slug, domain = competition.definition.slug, competition.definition.domain
    try:
        learnings = reflect(client, AttemptSummary.from_db(conn, attempt_id), attempt_id=attempt_id)
        existing = store.list(tier="domain", scope_key=domain) + store.list(tier="global")
        decisions = label_learnings(
            client,
            learnings,
            existing,
            competition=slug,
            domain=domain,
            attempt_id=attempt_id,
            conn=conn,
            evidence_allows=evidence_allows,
        )
    except LLMError as exc:
        log.warning("reflection on attempt %s failed: %s", attempt_id, exc)
        return []
    written: list[str] = []
    for decision in decisions:
        tier = decision.promote_to
        if tier is None:
            continue
        learning = decision.learning
        when = f"\nWhen: {learning.conditions}" if learning.conditions else ""
        skill = store.add(
            Skill(
                tier=tier,
                scope_key={"global": None, "domain": domain}.get(tier, slug),
                domain=None if tier == "global" else domain,
                title=learning.title,
                guidance=(decision.abstraction or learning.text) + when,
                evidence=[Evidence(attempt_id=attempt_id, slug=slug, delta=learning.delta)]
                if learning.delta is not None
                else [],
                created_by="extraction" if tier == "competition" else "promotion",
                parent_ids=list(decision.related_skill_ids),
                source_attempt=attempt_id,
                dagster_run_id=dagster_run_id,
            )
        )
        written.append(skill.id)
        if decision.label == "conflict":
            for other in decision.related_skill_ids:
                store.add_edge(skill.id, other, "conflicts_with", reason=decision.reason)
    return written


def promote(
    conn: psycopg.Connection,
    domains: Iterable[str],
    store: Any = None,
    *,
    dagster_run_id: str | None = None,
) -> list[Any]:
    """Promote recurring competition skills to their domains, then domain skills to global.

    Holds the consolidation advisory lock for the whole promotion: promotion and
    consolidation write new versions of the same promoted skills, and two of them
    interleaving fail on the store's unique indexes (a second campaign, or the nightly
    consolidation, running at the same time). The second one waits and then finds the
    first one's result."""
    from haste_dagster.skills.promotion import (
        lock_promotions,
        promote_domain_skills,
        promote_global_skills,
    )

    store = store if store is not None else open_skill_store(conn)
    promoted: list[Any] = []
    with store.conn.transaction():
        lock_promotions(store)
        for domain in sorted(set(domains)):
            update_search_priors(conn, domain, store)
            promoted += promote_domain_skills(store, domain, dagster_run_id=dagster_run_id)
        promoted += promote_global_skills(store, dagster_run_id=dagster_run_id)
    return promoted


def solve(
    conn: psycopg.Connection,
    slug: str,
    config: AttemptConfig,
    *,
    defs_dir: Path | None = None,
    resume: bool = False,
    extract: bool = True,
    progress: ProgressFn | None = None,
    dagster_run_id: str | None = None,
    policy: Any = None,
    resume_attempt_id: int | None = None,
) -> SolveResult:
    """Attempt → skills → graded submission for one competition. ``resume_attempt_id``
    resumes that attempt (``resume`` alone: the newest ungraded one of ``slug``)."""
    competition = load_competition(slug, defs_dir)
    if competition.definition.is_multi_target:  # one sub-attempt per target column
        from haste_dagster.agents.multitarget import solve_multitarget

        return solve_multitarget(
            conn, competition, config, resume=resume, extract=extract, progress=progress,
            dagster_run_id=dagster_run_id, policy=policy,
        )
    # Everything that would fail after the budget is spent fails here, before any compute:
    # what the solver cannot model, and a broken leaderboard (an ungraded competition, with
    # neither medals nor a leaderboard, is fine: it is scored with medal None).
    check_solvable(competition)
    competition_thresholds(competition)
    store = open_skill_store(conn)
    if policy is None:
        policy = make_policy(config.policy, conn, campaign_id=config.campaign_id)
    resume_id = resume_attempt_id or (
        records.resumable_attempt(conn, slug, config) if resume else None
    )
    if resume and resume_id is None:
        log.warning("nothing to resume for %s: starting a new attempt", slug)
    attempt = run_attempt(
        conn,
        competition,
        config,
        store=store,
        policy=policy,
        dagster_run_id=dagster_run_id,
        resume_attempt_id=resume_id,
        progress=progress,
    )
    # Skills are written before the grade: `--resume` picks an attempt up until it is graded
    # (records.resumable_attempt), so a crash while skills are written is finished by resuming
    # (extraction is idempotent) instead of leaving a graded attempt without its skills.
    new_skills = (
        [
            s.id
            for s in extract_skills(
                conn, competition, attempt.attempt_id, store, dagster_run_id=dagster_run_id
            )
        ]
        if extract
        else []
    )
    llm = None
    if attempt.policy == "llm":
        from haste_dagster.llm.ledger import TokenLedger

        client = getattr(policy, "client", None)
        if extract and client is not None:
            new_skills += reflect_with_llm(
                conn, competition, attempt.attempt_id, store, client, dagster_run_id=dagster_run_id
            )
        llm = TokenLedger(conn).attempt_totals(attempt.attempt_id).as_json()
    grade = make_submission(conn, competition, attempt.attempt_id)
    return SolveResult(
        attempt=attempt, grade=grade, new_skills=new_skills, resumed=resume_id is not None, llm=llm
    )


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


def campaign_protocol(
    conn: psycopg.Connection,
    slugs: list[str],
    config: AttemptConfig,
    *,
    defs_dir: Path | None = None,
    rerun: bool = True,
    on_start: Callable[[ProtocolStep], None] | None = None,
    on_done: Callable[[ProtocolStep], None] | None = None,
    progress: ProgressFn | None = None,
) -> CampaignRun:
    """The paper's campaign: round 1 = one competition per domain, cold (no skills loaded);
    round 2 = the rest, warm (``config.loading``, tiered by default); promotion after every
    competition and consolidation between rounds; then the re-run phase: every competition
    that did not medal is attempted again warm *and* again without skills (the control),
    both with the new seed ``config.seed + RERUN_SEED_OFFSET``. Skills are extracted from
    every attempt but the controls.

    Resumable: every attempt is labelled ``campaign:<id>:<phase>:<arm>:<slug>``; running
    again with the same ``config.campaign_id`` reuses graded attempts, resumes unfinished
    ones, and re-extracts idempotently, so no skill is duplicated.
    """
    from haste_dagster.competitions.definition import load_definition
    from haste_dagster.llm.client import TokenBudgetExceeded
    from haste_dagster.skills import consolidate

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

    def attempt(step: ProtocolStep) -> bool:
        """Run (or reuse) one step; False when the token budget ends the campaign."""
        label = protocol_label(campaign_id, step.phase, step.arm, step.slug)
        if on_start:
            on_start(step)
        found = _labelled(conn, label)
        try:
            if found and found["status"] == "finished" and found["test_score"] is not None:
                step.attempt_id, step.score, step.medal = found["id"], found["test_score"], \
                    found["medal"]
                step.reused = True
                if step.extract:  # finish what a kill between grading and skills left
                    extract_skills(conn, load_competition(step.slug, defs_dir), found["id"],
                                   store)
            else:
                resume_id = found["id"] if found and found["status"] != "finished" else None
                result = solve(
                    conn, step.slug,
                    replace(config, loading=step.loading, seed=step.seed, label=label),
                    defs_dir=defs_dir, extract=step.extract, progress=progress,
                    resume_attempt_id=resume_id,
                )
                step.attempt_id = result.attempt.attempt_id
                step.score, step.medal = result.grade.score, result.grade.medal
            if step.slug in domains and step.arm != "control":
                promote(conn, [domains[step.slug]], store)
        except TokenBudgetExceeded as exc:
            step.error = f"token budget spent: {exc}"
            run.steps.append(step)
            if on_done:
                on_done(step)
            return False
        except (HasteError, ValueError, KeyError) as exc:
            step.error = f"{type(exc).__name__}: {exc}"
            log.error("campaign %s: %s %s failed: %s", campaign_id, step.phase, step.slug,
                      step.error)
        run.steps.append(step)
        if on_done:
            on_done(step)
        return True

    phases = [
        [ProtocolStep("round1", "cold", s, "none", config.seed) for s in round1],
        [ProtocolStep("round2", "warm", s, warm, config.seed) for s in round2],
    ]
    for steps in phases:
        for step in steps:
            if not attempt(step):
                run.inventory = inventory_by_tier(conn)
                return run
        consolidate(store)  # between rounds: merge duplicates, retire poor skills, promote
    if rerun:
        seed = config.seed + RERUN_SEED_OFFSET
        missed = [s.slug for s in run.steps if s.error is None and s.medal == "none"]
        for slug in missed:
            for step in (ProtocolStep("rerun", "warm", slug, warm, seed),
                         ProtocolStep("rerun", "control", slug, "none", seed, extract=False)):
                if not attempt(step):
                    run.inventory = inventory_by_tier(conn)
                    return run
        consolidate(store)
    run.inventory = inventory_by_tier(conn)
    return run

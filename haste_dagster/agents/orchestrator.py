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
    from haste_dagster.skills.extraction import KeptChange

    sign = 1.0 if higher_is_better else -1.0
    # A staged attempt's changes count from the branch that went on (the other branch's
    # patches were made against a different prototype).
    branch = (records.get_attempt(conn, attempt_id).result or {}).get("best_branch", "main")
    return [
        KeptChange(
            idx=r.idx,
            patch=r.patch,
            delta=sign * (r.cv_mean - r.incumbent_before),
            rationale=r.rationale,
            skill_ids=list(r.skill_ids),
        )
        for r in records.load_iterations(conn, attempt_id)
        if r.idx > 0
        and r.branch == branch
        and r.kept
        and r.patch is not None
        and r.cv_mean is not None
        and r.incumbent_before is not None
    ]


def extract_skills(
    conn: psycopg.Connection,
    competition: Any,
    attempt_id: int,
    store: Any = None,
    *,
    dagster_run_id: str | None = None,
) -> list[Any]:
    """Write 2–5 competition skills from what the attempt kept (idempotent); each records
    the attempt and, run from Dagster, the run that wrote it."""
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
    )


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
) -> SolveResult:
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
    resume_id = records.resumable_attempt(conn, slug, config) if resume else None
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

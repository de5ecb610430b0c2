"""The orchestrator: solves competitions (attempt → submission → skills) and promotes skills
upward; campaigns (``agents.campaign``) run it competition after competition."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from haste_dagster.agents import records
from haste_dagster.agents.attempts import AttemptConfig, AttemptResult, ProgressFn
from haste_dagster.agents.competition_agent import run_attempt
from haste_dagster.agents.factory import make_policy, open_skill_store
from haste_dagster.agents.submission import make_submission
from haste_dagster.competitions.grading import Grade, competition_thresholds
from haste_dagster.competitions.profile import profile_data
from haste_dagster.competitions.registry import check_solvable, load_competition
from haste_dagster.errors import HasteError

if TYPE_CHECKING:  # skills and the LLM client load lazily, when an attempt needs them
    from haste_dagster.agents.policy import Policy
    from haste_dagster.competitions.registry import Competition
    from haste_dagster.llm.client import LLMClient
    from haste_dagster.skills.extraction import BestSpec
    from haste_dagster.skills.model import Skill
    from haste_dagster.skills.store import SkillStore

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
    conn: psycopg.Connection, competition: Competition, attempt_id: int
) -> BestSpec | None:
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
    competition: Competition,
    attempt_id: int,
    store: SkillStore | None = None,
    *,
    dagster_run_id: str | None = None,
) -> list[Skill]:
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


def update_search_priors(
    conn: psycopg.Connection, domain: str, store: SkillStore
) -> Skill | None:
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
    competition: Competition,
    attempt_id: int,
    store: SkillStore,
    client: LLMClient,
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
    store: SkillStore | None = None,
    *,
    dagster_run_id: str | None = None,
) -> list[Skill]:
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
    promoted: list[Skill] = []
    with store.conn.transaction():
        lock_promotions(store)
        for domain in sorted(set(domains)):
            update_search_priors(conn, domain, store)
            promoted += promote_domain_skills(store, domain, dagster_run_id=dagster_run_id)
        promoted += promote_global_skills(store, dagster_run_id=dagster_run_id)
    return promoted


def load_solvable(slug: str, defs_dir: Path | None = None) -> Competition:
    """The competition, with everything that would fail after the budget is spent failing
    here, before any compute: what the solver cannot model, and a broken leaderboard (an
    ungraded competition, with neither medals nor a leaderboard, is fine: it is scored with
    medal None). A multi-target competition is checked per target, by its sub-attempts."""
    competition = load_competition(slug, defs_dir)
    if not competition.definition.is_multi_target:
        check_solvable(competition)
        competition_thresholds(competition)
    return competition


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
    policy: Policy | None = None,
    resume_attempt_id: int | None = None,
) -> SolveResult:
    """Attempt → skills → graded submission for one competition. ``resume_attempt_id``
    resumes that attempt (``resume`` alone: the newest ungraded one of ``slug``)."""
    competition = load_solvable(slug, defs_dir)
    if competition.definition.is_multi_target:  # one sub-attempt per target column
        from haste_dagster.agents.multitarget import solve_multitarget

        return solve_multitarget(
            conn, competition, config, resume=resume, extract=extract, progress=progress,
            dagster_run_id=dagster_run_id, policy=policy,
        )
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

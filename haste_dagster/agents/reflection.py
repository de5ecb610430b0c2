"""Reflection and LLM promotion labelling: what an attempt taught, and where it belongs.

* ``reflect(client, summary)``: the competition agent writes 2–5 learnings about a
  finished attempt, each with a proposed tier (competition | domain | global). Learnings
  may only cite iterations that exist; a reply citing others is sent back for repair.
* ``label_learnings(client, learnings, existing_skills, ...)``: the orchestrator labels
  each learning ``skip | competition | domain | global | conflict`` with a reason;
  ``domain``/``global`` come with an LLM-written abstraction, ``conflict`` names the
  contradicted skill and the conditions under which each holds (both are kept).

The LLM proposes, evidence decides: a ``domain``/``global`` label is only ``allowed`` when
the skill store's evidence rule (``skills.promotion.evidence_allows``) holds for the
sources the label rests on: this attempt's competition plus the related skills the LLM
cited. Every decision, allowed or not, is written to ``promotion_decisions`` with its
reason. Writing the promoted skill itself is the skill store's job (see the report of
``PromotionDecision.as_json``); this module never edits skills.

If the LLM fails (invalid replies, endpoint down, budget spent) ``label_learnings``
records every learning as ``competition`` with the failure as the reason, so the
orchestrator never loses a learning and never promotes without a label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from haste_dagster.errors import LLMError, NotFoundError
from haste_dagster.llm.client import LLMClient, ReplyRejected
from haste_dagster.llm.prompts import compress_history, labelling_messages, reflection_messages
from haste_dagster.llm.schema import ShortText, Text

log = logging.getLogger(__name__)

Tier = Literal["competition", "domain", "global"]
Label = Literal["skip", "competition", "domain", "global", "conflict"]
LABELS: tuple[str, ...] = ("skip", "competition", "domain", "global", "conflict")


class Learning(BaseModel):
    title: ShortText = Field(description="short imperative summary")
    text: Text = Field(description="what to do, when, and the measured effect")
    proposed_tier: Tier
    conditions: Text = Field(default="", description="when it applies, on the data profile")
    iterations: list[int] = Field(
        default_factory=list, description="indices of the iterations that support it"
    )
    delta: float | None = Field(
        default=None,
        description="measured improvement in the metric's direction (positive = better)",
    )


class ReflectionReply(BaseModel):
    learnings: list[Learning] = Field(min_length=2, max_length=5)


class LabelItem(BaseModel):
    index: int = Field(description="index of the learning in the learnings block")
    label: Label
    reason: Text
    abstraction: Text | None = Field(
        default=None, description="for domain/global: the learning without competition names"
    )
    conditions: Text | None = Field(
        default=None, description="for conflict: when this learning holds vs the other skill"
    )
    related_skill_ids: list[str] = Field(
        default_factory=list, description="existing skills showing the same pattern, or in conflict"
    )


class LabelReply(BaseModel):
    decisions: list[LabelItem]


@dataclass
class AttemptSummary:
    """What reflection sees of a finished attempt."""

    slug: str
    domain: str
    task: str
    metric: str
    higher_is_better: bool
    history: list[Any]  # IterationRecord-like: idx, patch, skill_ids, cv_mean, cv_std, kept, error
    attempt_id: int | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    baseline_cv: float | None = None
    best_cv: float | None = None
    best_spec: dict[str, Any] | None = None
    skills_loaded: list[str] = field(default_factory=list)

    def as_prompt_data(self) -> dict[str, Any]:
        return {
            "competition": self.slug,
            "domain": self.domain,
            "task": self.task,
            "metric": self.metric,
            "direction": "higher is better" if self.higher_is_better else "lower is better",
            "baseline_cv": self.baseline_cv,
            "best_cv": self.best_cv,
            "best_spec": self.best_spec,
            "profile": self.profile,
            "skills_loaded": self.skills_loaded,
            "iterations": len(self.history),
            "kept": sum(1 for r in self.history if _get(r, "kept") and _get(r, "idx", 0) > 0),
        }

    @classmethod
    def from_db(cls, conn: psycopg.Connection, attempt_id: int) -> AttemptSummary:
        """Read an attempt, its iterations and its competition row (0001 schema)."""
        from haste_dagster.agents.policy import IterationRecord
        from haste_dagster.competitions.metrics import get_metric

        with conn.transaction():
            attempt = conn.execute(
                """SELECT a.id, a.slug, a.best_spec, a.best_cv, a.skills_loaded,
                          c.domain, c.task, c.metric, c.profile
                   FROM attempts a LEFT JOIN competitions c ON c.slug = a.slug
                   WHERE a.id = %s""",
                (attempt_id,),
            ).fetchone()
            if attempt is None:
                raise NotFoundError(f"no attempt with id {attempt_id}")
            rows = conn.execute(
                """SELECT idx, patch, skill_ids, cv_mean, cv_std, kept, error
                   FROM iterations WHERE attempt_id = %s ORDER BY idx""",
                (attempt_id,),
            ).fetchall()
        history = [IterationRecord(**r) for r in rows]
        metric = attempt["metric"] or ""
        try:
            higher = get_metric(metric).higher_is_better
        except Exception:  # unknown or missing metric: direction only affects wording
            higher = True
        return cls(
            slug=attempt["slug"], domain=attempt["domain"] or "unknown",
            task=attempt["task"] or "unknown", metric=metric, higher_is_better=higher,
            history=history, attempt_id=attempt["id"], profile=attempt["profile"] or {},
            baseline_cv=history[0].cv_mean if history else None, best_cv=attempt["best_cv"],
            best_spec=attempt["best_spec"],
            skills_loaded=[str(s.get("id")) for s in attempt["skills_loaded"] or []],
        )


@dataclass
class PromotionDecision:
    learning: Learning
    label: Label
    allowed: bool  # the evidence verdict (always True for skip/competition)
    reason: str
    abstraction: str | None = None
    conditions: str | None = None
    related_skill_ids: list[str] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    attempt_id: int | None = None
    decision_id: int | None = None

    @property
    def promote_to(self) -> str | None:
        """The tier a new skill should be written at, or None to write nothing."""
        if self.label == "skip":
            return None
        if self.label in ("domain", "global"):
            return self.label if self.allowed else "competition"
        return "competition"  # competition, and each side of a conflict

    def as_json(self) -> dict[str, Any]:
        return {
            "learning": self.learning.model_dump(mode="json"),
            "label": self.label,
            "allowed": self.allowed,
            "promote_to": self.promote_to,
            "reason": self.reason,
            "abstraction": self.abstraction,
            "conditions": self.conditions,
            "related_skill_ids": self.related_skill_ids,
            "evidence": self.evidence,
            "attempt_id": self.attempt_id,
            "decision_id": self.decision_id,
        }


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


# -- reflection ---------------------------------------------------------------------------


def reflect(
    client: LLMClient, summary: AttemptSummary, *, attempt_id: int | None = None
) -> list[Learning]:
    """2–5 learnings about a finished attempt, each with a proposed tier.

    Raises ``LLMError`` (incl. ``TokenBudgetExceeded``) when the LLM cannot deliver; the
    heuristic extraction of the skill store is the fallback the caller keeps.
    """
    history_lines = compress_history(summary.history, summary.higher_is_better)
    known = {int(_get(r, "idx")) for r in summary.history}

    def validate(reply: ReflectionReply) -> None:
        unknown = sorted({i for lr in reply.learnings for i in lr.iterations} - known)
        if unknown:
            raise ReplyRejected(
                f"learnings cite iterations {unknown} that do not exist; "
                f"existing iterations: {sorted(known)}"
            )

    reply, _ = client.complete_json(
        reflection_messages(summary.as_prompt_data(), history_lines), ReflectionReply,
        agent_level="competition", attempt_id=attempt_id or summary.attempt_id,
        purpose="reflect", validate=validate,
    )
    return list(reply.learnings)  # tokens are in the ledger under purpose "reflect"


# -- labelling ----------------------------------------------------------------------------


def _default_evidence_allows() -> Callable[[str, Any], Any]:
    from haste_dagster.skills.promotion import evidence_allows

    return evidence_allows


def _verdict(result: Any) -> tuple[bool, str]:
    """``evidence_allows`` returns (allowed, reason); a bare bool is accepted too."""
    if isinstance(result, tuple):
        return bool(result[0]), str(result[1]) if len(result) > 1 else ""
    return bool(result), ""


def _source_json(item: Any) -> dict[str, Any]:
    """An evidence source as stored in ``promotion_decisions.evidence``."""
    from dataclasses import asdict

    from haste_dagster.skills.promotion import as_source

    try:
        return asdict(as_source(item))
    except TypeError:  # a view that is not a Skill: keep what it says about its scope
        tier = _get(item, "tier")
        scope = _get(item, "scope_key")
        return {
            "competition": scope if tier == "competition" else None,
            "domain": _get(item, "domain") or (scope if tier == "domain" else None),
            "delta": None,
            "skill_id": str(_get(item, "id")),
        }


def record_decision(conn: psycopg.Connection, decision: PromotionDecision) -> int:
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO promotion_decisions (attempt_id, learning, proposed_tier, label,
                   allowed, reason, abstraction, conditions, related_skill_ids, evidence)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            (
                decision.attempt_id,
                f"{decision.learning.title}: {decision.learning.text}",
                decision.learning.proposed_tier,
                decision.label,
                decision.allowed,
                decision.reason[:4000],
                decision.abstraction,
                decision.conditions,
                Jsonb(decision.related_skill_ids),
                Jsonb(decision.evidence),
            ),
        ).fetchone()
    return int(row["id"] if isinstance(row, dict) else row[0])


def label_learnings(
    client: LLMClient,
    learnings: Sequence[Learning],
    existing_skills: Sequence[Any],
    *,
    competition: str,
    domain: str,
    attempt_id: int | None = None,
    conn: psycopg.Connection | None = None,
    evidence_allows: Callable[[str, Any], Any] | None = None,
) -> list[PromotionDecision]:
    """One ``PromotionDecision`` per learning, in order, recorded when ``conn`` is given.

    ``existing_skills`` are the store's skills the learning may recur in or conflict with
    (e.g. the active skills of ``domain`` plus global ones); anything with ``id``, ``tier``,
    ``title``, ``guidance`` and a scope key works. ``evidence_allows(tier, sources)``
    defaults to the skill store's rule.
    """
    if not learnings:
        return []
    by_id = {str(_get(s, "id")): s for s in existing_skills}

    def validate(reply: LabelReply) -> None:
        indices = sorted(d.index for d in reply.decisions)
        if indices != list(range(len(learnings))):
            raise ReplyRejected(
                f"give exactly one decision per learning, indices 0..{len(learnings) - 1}; "
                f"got indices {indices}"
            )
        for d in reply.decisions:
            if d.label in ("domain", "global") and not (d.abstraction or "").strip():
                raise ReplyRejected(f"decision {d.index}: label {d.label} needs an abstraction")
            if d.label == "conflict":
                known = [i for i in d.related_skill_ids if i in by_id]
                if not known or not (d.conditions or "").strip():
                    raise ReplyRejected(
                        f"decision {d.index}: conflict needs the id of an existing skill it "
                        "contradicts (from the skills block) and the conditions for each"
                    )

    try:
        reply, _ = client.complete_json(
            labelling_messages(
                [lr.model_dump(mode="json") for lr in learnings], list(existing_skills),
                competition=competition, domain=domain,
            ),
            LabelReply, agent_level="orchestrator", attempt_id=attempt_id,
            purpose="label_learnings", validate=validate,
        )
        items = sorted(reply.decisions, key=lambda d: d.index)
    except LLMError as exc:
        log.warning("promotion labelling failed; keeping learnings at competition tier: %s", exc)
        reason = f"LLM labelling unavailable ({type(exc).__name__}); kept at competition tier"
        items = [
            LabelItem(index=i, label="competition", reason=reason) for i in range(len(learnings))
        ]

    gate = evidence_allows or _default_evidence_allows()
    decisions: list[PromotionDecision] = []
    for item in items:
        learning = learnings[item.index]
        related = [i for i in dict.fromkeys(item.related_skill_ids) if i in by_id]
        # The sources a promotion rests on: this attempt's measurement plus every existing
        # skill the LLM says shows the same pattern (their own evidence travels with them).
        here = {"competition": competition, "domain": domain, "delta": learning.delta}
        sources = [here, *(by_id[i] for i in related)]
        reason = item.reason.strip()
        allowed = True
        if item.label in ("domain", "global"):
            allowed, why = _verdict(gate(item.label, sources))
            verdict = "evidence allows it" if allowed else "evidence does not allow it yet"
            reason = f"{reason} [{verdict}{': ' + why if why else ''}]"
        decision = PromotionDecision(
            learning=learning, label=item.label, allowed=allowed, reason=reason,
            abstraction=item.abstraction if item.label in ("domain", "global") else None,
            conditions=item.conditions if item.label == "conflict" else None,
            related_skill_ids=related, evidence=[_source_json(x) for x in sources],
            attempt_id=attempt_id,
        )
        if conn is not None:
            decision.decision_id = record_decision(conn, decision)
        decisions.append(decision)
    return decisions

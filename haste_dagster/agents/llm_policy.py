"""The ``llm`` policy: the domain specialist and the competition agent as LLM calls.

* ``initial_spec``: the domain specialist picks which in-scope skills to apply (a patch over
  ``default_spec(problem)``) and which to pass down to the competition agent.
* ``propose``: the competition agent proposes the next patch to the incumbent with a
  rationale and the skill ids that motivated it.

Every reply is parsed into a typed ``Patch`` and validated before it leaves this module:
``apply_patch`` on the incumbent (unknown step/parameter, out-of-range value), the problem
check (a family that cannot solve the task…), no validation changes mid-attempt (they make
scores incomparable), no no-op and no exact repeat of a tried patch. Each rejection goes
back to the model with the validator's message, up to ``LLMConfig.max_repairs`` times.

Failure contract (the loop never crashes and never runs an invalid patch):

* the LLM cannot produce a valid patch (invalid replies after the repair bound, HTTP
  errors after the retry bound): ``propose`` returns a ``Proposal`` with ``patch=None`` and
  ``error`` set, which the loop records as a failed iteration; its tokens are counted;
* the campaign's token budget is spent: ``propose`` returns ``None`` (the loop stops the
  attempt cleanly, keeping the incumbent) and ``budget_exhausted`` becomes True so the
  orchestrator can stop the campaign; ``initial_spec`` raises ``TokenBudgetExceeded``
  instead, because nothing has been run yet and the campaign should stop there;
* ``initial_spec`` falls back to the domain default spec when the LLM fails otherwise.

Skill ids the model cites that are not in scope are dropped, never recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from pydantic import BaseModel, Field

from haste_dagster.agents.policy import (
    PolicyContext,
    Proposal,
    SkillView,
    is_structural,
    touches_validation,
)
from haste_dagster.agents.prototypes import N_PROTOTYPES, Prototype, choose_prototypes, signature
from haste_dagster.competitions.problem import Problem
from haste_dagster.errors import LLMError
from haste_dagster.llm.client import LLMClient, ReplyRejected, TokenBudgetExceeded, Usage
from haste_dagster.llm.prompts import (
    competition_messages,
    prototype_messages,
    specialist_messages,
)
from haste_dagster.llm.schema import ShortText, Text
from haste_dagster.solution.space import check_spec_for_problem, default_spec, describe_space
from haste_dagster.solution.spec import Patch, SolutionSpec, apply_patch

log = logging.getLogger(__name__)

MAX_RATIONALE = 2000


class InitialSpecReply(BaseModel):
    rationale: Text = Field(description="why these skills fit this dataset")
    applied_skill_ids: list[str] = Field(
        default_factory=list, description="ids of skills whose advice the patch applies"
    )
    pass_down_skill_ids: list[str] = Field(
        default_factory=list, description="ids of skills the competition agent should consider"
    )
    patch: Patch | None = Field(
        default=None, description="changes to the default spec; null keeps it unchanged"
    )


class PatchReply(BaseModel):
    # The patch first: a reply cut off at max_tokens should lose the prose, not the change
    # (grammar-constrained decoding writes the properties in this order).
    patch: Patch
    rationale: Text = Field(description="why this change should beat the incumbent")
    skill_ids: list[str] = Field(
        default_factory=list, description="ids of skills that motivated this patch"
    )


class PrototypeProposal(BaseModel):
    name: ShortText = Field(description="a short name, e.g. boosted_trees")
    rationale: Text = Field(default="", description="why this prototype suits the data")
    skill_ids: list[str] = Field(default_factory=list, description="skills it comes from")
    patch: Patch | None = Field(default=None, description="changes to the default spec")


class PrototypesReply(BaseModel):
    prototypes: list[PrototypeProposal] = Field(
        description="fundamentally different prototypes (model families / feature pipelines)"
    )


@dataclass
class InitialDecision:
    """What the specialist decided (for attempt metadata); ``error`` set on a fallback."""

    spec: SolutionSpec
    applied: list[str]
    passed_down: list[str]
    rationale: str
    usage: Usage = field(default_factory=Usage)
    error: str | None = None


def _in_scope_ids(cited: Iterable[str], allowed: set[str]) -> list[str]:
    out: list[str] = []
    for skill_id in cited:
        if skill_id in allowed and skill_id not in out:
            out.append(skill_id)
    return out


def _patch_key(patch: Patch | dict | None) -> str | None:
    if patch is None:
        return None
    data = patch.model_dump(mode="json") if isinstance(patch, Patch) else patch
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _space_text(problem: Problem) -> str:
    return json.dumps(describe_space(problem), sort_keys=True, separators=(",", ":"))


class LLMPolicy:
    """Implements ``agents.policy.Policy`` with an ``LLMClient``.

    ``attempt_id`` tags ledger rows (``bind_attempt`` sets it once the attempt exists);
    ``passed_down`` restores the specialist's pass-down choice on resume.
    """

    name = "llm"

    def __init__(
        self,
        client: LLMClient,
        *,
        attempt_id: int | None = None,
        domain: str | None = None,
        passed_down: Iterable[str] | None = None,
    ) -> None:
        self.client = client
        self.attempt_id = attempt_id
        self.domain = domain
        self.passed_down: list[str] | None = list(passed_down) if passed_down is not None else None
        self.last_initial: InitialDecision | None = None
        self.budget_exhausted = False

    def bind_attempt(self, attempt_id: int | None) -> None:
        self.attempt_id = attempt_id

    # -- domain specialist -----------------------------------------------------------------

    def initial_spec(
        self, problem: Problem, profile: dict, skills: list[SkillView]
    ) -> tuple[SolutionSpec, list[str]]:
        base = default_spec(problem)
        scoped = {s.id for s in skills}
        messages = specialist_messages(
            problem, profile, skills, base, domain=self.domain, space=_space_text(problem)
        )

        def validate(reply: InitialSpecReply) -> None:
            if reply.patch is not None:
                check_spec_for_problem(apply_patch(base, reply.patch), problem)

        try:
            reply, usage = self.client.complete_json(
                messages, InitialSpecReply, agent_level="specialist",
                attempt_id=self.attempt_id, purpose="initial_spec", validate=validate,
            )
        except TokenBudgetExceeded:
            self.budget_exhausted = True
            raise
        except LLMError as exc:
            log.warning("specialist LLM failed, using the domain default spec: %s", exc)
            self.last_initial = InitialDecision(
                spec=base, applied=[], passed_down=sorted(scoped),
                rationale="domain default spec (LLM unavailable)",
                usage=getattr(exc, "usage", Usage()), error=f"{type(exc).__name__}: {exc}",
            )
            self.passed_down = None
            return base, []
        spec = apply_patch(base, reply.patch) if reply.patch is not None else base
        applied = _in_scope_ids(reply.applied_skill_ids, scoped)
        passed = _in_scope_ids(reply.pass_down_skill_ids, scoped)
        self.last_initial = InitialDecision(
            spec=spec, applied=applied, passed_down=passed,
            rationale=reply.rationale[:MAX_RATIONALE], usage=usage,
        )
        # An empty pass-down list means "none chosen", not "hide everything".
        self.passed_down = passed or None
        return spec, applied

    # -- domain specialist: the prototype screen ----------------------------------------

    def prototypes(
        self, problem: Problem, profile: dict, skills: list[SkillView]
    ) -> list[Prototype]:
        """The LLM's prototypes (each validated like a patch, of distinct signatures), then
        recipe skills and the task kind's defaults to fill up to three."""
        base = default_spec(problem)
        scoped = {s.id for s in skills}
        messages = prototype_messages(
            problem, profile, skills, base, n=N_PROTOTYPES, domain=self.domain,
            space=_space_text(problem),
        )

        def validate(reply: PrototypesReply) -> None:
            if not reply.prototypes:
                raise ReplyRejected("propose at least one prototype")
            seen: dict[tuple, str] = {}
            for j, proto in enumerate(reply.prototypes[:N_PROTOTYPES]):
                if proto.patch is not None and touches_validation(proto.patch):
                    raise ReplyRejected(
                        f"prototypes[{j}]: validation.* is fixed (every prototype is scored "
                        "on the same fold)"
                    )
                spec = apply_patch(base, proto.patch) if proto.patch is not None else base
                check_spec_for_problem(spec, problem)
                sig = signature(spec, problem)
                if sig in seen:
                    raise ReplyRejected(
                        f"prototypes[{j}] ({proto.name}) has the same model family and feature "
                        f"pipeline as {seen[sig]}: make them fundamentally different"
                    )
                seen[sig] = proto.name

        try:
            reply, _usage = self.client.complete_json(
                messages, PrototypesReply, agent_level="specialist",
                attempt_id=self.attempt_id, purpose="prototypes", validate=validate,
            )
        except TokenBudgetExceeded:
            self.budget_exhausted = True
            raise
        except LLMError as exc:
            log.warning("specialist LLM failed, screening the default prototypes: %s", exc)
            return choose_prototypes(problem, profile, skills)
        proposed = [
            Prototype(
                name=f"llm:{p.name[:60]}",
                spec=apply_patch(base, p.patch) if p.patch is not None else base,
                skill_ids=_in_scope_ids(p.skill_ids, scoped),
                source="llm",
                rationale=p.rationale[:MAX_RATIONALE],
            )
            for p in reply.prototypes[:N_PROTOTYPES]
        ]
        return choose_prototypes(problem, profile, skills, first=proposed)

    # -- competition agent -----------------------------------------------------------------

    def _visible(self, skills: list[SkillView]) -> list[SkillView]:
        if self.passed_down is None:
            return skills
        chosen = set(self.passed_down)
        return [s for s in skills if s.id in chosen]

    def propose(self, ctx: PolicyContext) -> Proposal | None:
        if self.budget_exhausted:
            return None
        visible = self._visible(ctx.skills)
        messages = competition_messages(
            replace(ctx, skills=visible), domain=self.domain, space=_space_text(ctx.problem)
        )
        tried = {
            key: rec.idx for rec in ctx.history
            if (key := _patch_key(rec.patch)) is not None
        }
        incumbent_key = ctx.incumbent.key()

        def validate(reply: PatchReply) -> None:
            if touches_validation(reply.patch):
                raise ReplyRejected(
                    "validation.*: the validation scheme is fixed during an attempt (scores "
                    "would not be comparable); change features or the model instead"
                )
            if ctx.escalate and not is_structural(reply.patch):
                raise ReplyRejected(
                    "the last two changes were not kept: this patch must be structural (a "
                    "model family, feature step, target transform or lag/window change), "
                    "not a parameter nudge"
                )
            candidate = apply_patch(ctx.incumbent, reply.patch)
            check_spec_for_problem(candidate, ctx.problem)
            if candidate.key() == incumbent_key:
                raise ReplyRejected("the patch leaves the incumbent spec unchanged; change it")
            previous = tried.get(_patch_key(reply.patch) or "")
            if previous is not None:
                raise ReplyRejected(
                    f"this exact patch was already tried at iteration #{previous}; "
                    "propose a different change"
                )

        try:
            reply, usage = self.client.complete_json(
                messages, PatchReply, agent_level="competition", attempt_id=self.attempt_id,
                purpose="propose", validate=validate,
                seed=ctx.seed * 100_003 + ctx.iteration,  # same context, same sampling seed
            )
        except TokenBudgetExceeded as exc:
            log.warning("token budget spent, stopping the attempt: %s", exc)
            self.budget_exhausted = True
            return None
        except LLMError as exc:
            usage = getattr(exc, "usage", Usage())
            return Proposal(
                patch=None,
                rationale="the LLM produced no valid patch",
                skill_ids=[],
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                error=f"{type(exc).__name__}: {exc}"[:2000],
            )
        return Proposal(
            patch=reply.patch,
            rationale=reply.rationale[:MAX_RATIONALE],
            skill_ids=_in_scope_ids(reply.skill_ids, {s.id for s in ctx.skills}),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )

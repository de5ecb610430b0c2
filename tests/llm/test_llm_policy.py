"""LLMPolicy through the loopback server: typed patches validated by the real apply_patch."""

from __future__ import annotations

import psycopg
import pytest
from fake_openai import FakeOpenAI, ok, server_error, text

from haste_dagster.agents.llm_policy import LLMPolicy
from haste_dagster.agents.policy import IterationRecord, Policy, PolicyContext, SkillView
from haste_dagster.competitions.problem import Problem
from haste_dagster.llm.client import LLMClient, LLMConfig, TokenBudgetExceeded
from haste_dagster.llm.ledger import TokenLedger
from haste_dagster.solution.space import default_spec
from haste_dagster.solution.spec import Patch, SolutionSpec, apply_patch

PROBLEM = Problem(
    slug="toy", task="binary", metric="roc_auc", target="y", numeric=["a", "b"],
    categorical=["c"], classes=[0, 1],
)
SKILLS = [
    SkillView("s1", "domain", "Shallower trees on small data", "max_depth 3-4", None, 0.01),
    SkillView("s2", "global", "One-hot low-cardinality", "one-hot encoding", None, 0.0),
]
DEPTH_4 = {"ops": [{"op": "set", "path": "model.params.max_depth", "value": 4}]}


def _reply(patch: dict, skill_ids: list[str] | None = None, **kw) -> object:
    return ok({"rationale": "try it", "skill_ids": skill_ids or [], "patch": patch}, **kw)


def _ctx(history: list[IterationRecord] | None = None) -> PolicyContext:
    return PolicyContext(
        problem=PROBLEM, profile={"rows": 500}, incumbent=default_spec(PROBLEM),
        incumbent_score=0.8,
        history=history or [IterationRecord(0, None, [], 0.8, 0.01, True, None)],
        skills=SKILLS, iteration=1, budget=5, seed=3, higher_is_better=True,
    )


def _last_feedback(server: FakeOpenAI) -> str:
    return server.bodies()[-1]["messages"][-1]["content"]


def test_llm_policy_satisfies_the_policy_protocol(llm_config: LLMConfig) -> None:
    assert isinstance(LLMPolicy(LLMClient(llm_config)), Policy)


def test_proposal_is_a_typed_patch_citing_only_in_scope_skills(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(
        _reply(DEPTH_4, ["s1", "not-in-scope"], prompt_tokens=300, completion_tokens=40)
    )
    proposal = LLMPolicy(LLMClient(llm_config)).propose(_ctx())
    assert proposal is not None and proposal.error is None
    assert isinstance(proposal.patch, Patch)
    assert apply_patch(_ctx().incumbent, proposal.patch).model.params["max_depth"] == 4
    assert proposal.skill_ids == ["s1"]
    assert (proposal.prompt_tokens, proposal.completion_tokens) == (300, 40)
    assert fake_openai.bodies()[0]["seed"] == 3 * 100_003 + 1


def test_unknown_parameter_is_reported_back_and_repaired(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    bad = {"ops": [{"op": "set", "path": "model.params.depth_max", "value": 4}]}
    fake_openai.push(_reply(bad), _reply(DEPTH_4))
    proposal = LLMPolicy(LLMClient(llm_config)).propose(_ctx())
    assert proposal is not None and proposal.patch is not None
    feedback = _last_feedback(fake_openai)
    assert "model.params.depth_max: unknown parameter" in feedback and "max_depth" in feedback
    assert (proposal.prompt_tokens, proposal.completion_tokens) == (22, 14)  # both calls


def test_out_of_range_value_is_reported_back_with_the_allowed_range(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    huge = {"ops": [{"op": "set", "path": "model.params.max_depth", "value": 99}]}
    fake_openai.push(_reply(huge), _reply(DEPTH_4))
    proposal = LLMPolicy(LLMClient(llm_config)).propose(_ctx())
    assert proposal is not None and proposal.patch is not None
    assert "integer in [1, 12]" in _last_feedback(fake_openai)


def test_malformed_patch_structure_is_reported_back(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(_reply({"ops": [{"op": "explode", "path": "x"}]}), _reply(DEPTH_4))
    proposal = LLMPolicy(LLMClient(llm_config)).propose(_ctx())
    assert proposal is not None and proposal.patch is not None
    assert "patch.ops.0" in _last_feedback(fake_openai)


def test_validation_change_repeat_and_noop_patches_are_refused(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    folds = {"ops": [{"op": "set", "path": "validation.n_folds", "value": 5}]}
    same = {"ops": [{"op": "set", "path": "model.params.max_depth", "value": 6}]}  # the default
    depth_5 = {"ops": [{"op": "set", "path": "model.params.max_depth", "value": 5}]}
    history = [
        IterationRecord(0, None, [], 0.8, 0.01, True, None),
        IterationRecord(1, depth_5, [], 0.79, 0.01, False, None),
    ]
    fake_openai.push(_reply(folds), _reply(same), _reply(depth_5))
    proposal = LLMPolicy(LLMClient(llm_config)).propose(_ctx(history))
    assert proposal is not None and proposal.patch is None  # three strikes: failed proposal
    feedback = [b["messages"][-1]["content"] for b in fake_openai.bodies()[1:]]
    assert "validation scheme is fixed" in feedback[0]
    assert "unchanged" in feedback[1]
    assert "already tried at iteration #1" in proposal.error


def test_invalid_replies_past_the_bound_give_a_failed_proposal_without_a_patch(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    fake_openai.push(*(text('{"rationale": "x", "patch": {"ops": [') for _ in range(3)))
    policy = LLMPolicy(LLMClient(llm_config, ledger=TokenLedger(conn)), attempt_id=None)
    policy.bind_attempt(21)
    proposal = policy.propose(_ctx())
    assert proposal is not None and proposal.patch is None
    assert proposal.error.startswith("LLMReplyInvalid")
    assert proposal.prompt_tokens == 33  # three calls of 11 prompt tokens
    rows = TokenLedger(conn).calls(attempt_id=21)
    assert len(rows) == 3 and {r["agent_level"] for r in rows} == {"competition"}


def test_endpoint_failure_gives_a_failed_proposal(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(*(server_error() for _ in range(3)))
    proposal = LLMPolicy(LLMClient(llm_config)).propose(_ctx())
    assert proposal is not None and proposal.patch is None
    assert proposal.error.startswith("LLMRequestFailed")


def test_spent_budget_stops_proposing_without_calling_the_endpoint(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(_reply(DEPTH_4, prompt_tokens=90, completion_tokens=20))
    config = LLMConfig(**{**llm_config.__dict__, "token_budget": 100})
    policy = LLMPolicy(LLMClient(config))
    assert policy.propose(_ctx()) is not None
    assert policy.propose(_ctx()) is None
    assert policy.budget_exhausted and len(fake_openai.requests) == 1


def test_specialist_patches_the_default_spec_and_passes_skills_down(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(
        ok({
            "rationale": "small data: shallower trees",
            "applied_skill_ids": ["s1", "ghost"],
            "pass_down_skill_ids": ["s2"],
            "patch": DEPTH_4,
        }),
        _reply({"ops": [{"op": "set", "path": "categorical.encoding", "value": "onehot"}]}),
    )
    policy = LLMPolicy(LLMClient(llm_config))
    spec, applied = policy.initial_spec(PROBLEM, {"rows": 500}, SKILLS)
    assert isinstance(spec, SolutionSpec) and spec.model.params["max_depth"] == 4
    assert applied == ["s1"]
    assert policy.last_initial is not None and policy.last_initial.passed_down == ["s2"]
    assert "Your role: the domain specialist" in fake_openai.bodies()[0]["messages"][-1]["content"]
    policy.propose(_ctx())
    competition_prompt = fake_openai.bodies()[1]["messages"][1]["content"]
    assert '"id": "s2"' in competition_prompt and '"id": "s1"' not in competition_prompt


def test_specialist_falls_back_to_the_default_spec_when_the_llm_fails(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(*(text("no idea") for _ in range(3)))
    policy = LLMPolicy(LLMClient(llm_config))
    spec, applied = policy.initial_spec(PROBLEM, {}, SKILLS)
    assert spec == default_spec(PROBLEM) and applied == []
    assert policy.last_initial.error.startswith("LLMReplyInvalid")


def test_specialist_raises_when_the_budget_is_spent(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    config = LLMConfig(**{**llm_config.__dict__, "token_budget": 0})
    policy = LLMPolicy(LLMClient(config))
    with pytest.raises(TokenBudgetExceeded):
        policy.initial_spec(PROBLEM, {}, SKILLS)
    assert policy.budget_exhausted and fake_openai.requests == []

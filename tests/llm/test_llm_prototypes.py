"""The LLM specialist's prototype screen and escalation, validated like any patch."""

from __future__ import annotations

from fake_openai import FakeOpenAI, ok, server_error

from haste_dagster.agents.llm_policy import LLMPolicy
from haste_dagster.agents.policy import IterationRecord, PolicyContext, is_structural
from haste_dagster.agents.prototypes import signature
from haste_dagster.competitions.problem import Problem
from haste_dagster.llm.client import LLMClient, LLMConfig
from haste_dagster.solution.space import default_spec

PROBLEM = Problem(
    slug="toy", task="binary", metric="roc_auc", target="y", numeric=["a", "b"],
    categorical=["c"], classes=[0, 1],
)
PROFILE = {"rows": 500, "task": "binary"}
FOREST = {"ops": [{"op": "set_model", "family": "random_forest", "params": {}}]}
DEPTH_4 = {"ops": [{"op": "set", "path": "model.params.max_depth", "value": 4}]}


def _protos(*patches: dict | None) -> object:
    return ok({"prototypes": [
        {"name": f"p{j}", "rationale": "r", "skill_ids": [], "patch": p}
        for j, p in enumerate(patches)
    ]})


def test_llm_prototypes_of_one_signature_are_sent_back_and_defaults_fill_the_screen(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    # first reply: the default and a depth nudge are one family/pipeline → rejected
    fake_openai.push(_protos(None, DEPTH_4), _protos(None, FOREST))
    prototypes = LLMPolicy(LLMClient(llm_config)).prototypes(PROBLEM, PROFILE, [])
    feedback = fake_openai.bodies()[-1]["messages"][-1]["content"]
    assert "fundamentally different" in feedback
    assert [p.source for p in prototypes] == ["llm", "llm", "default"]
    assert prototypes[1].family == "random_forest"
    assert len({signature(p.spec, PROBLEM) for p in prototypes}) == 3


def test_llm_failure_screens_the_default_prototypes(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(*[server_error() for _ in range(10)])
    prototypes = LLMPolicy(LLMClient(llm_config)).prototypes(PROBLEM, PROFILE, [])
    assert [p.source for p in prototypes] == ["default"] * 3


def test_escalated_llm_proposal_must_be_structural(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    ctx = PolicyContext(
        problem=PROBLEM, profile=PROFILE, incumbent=default_spec(PROBLEM), incumbent_score=0.8,
        history=[IterationRecord(0, None, [], 0.8, 0.01, True, None)], skills=[], iteration=3,
        budget=5, seed=1, higher_is_better=True, escalate=True,
    )
    reply = {"rationale": "r", "skill_ids": []}
    fake_openai.push(ok({**reply, "patch": DEPTH_4}), ok({**reply, "patch": FOREST}))
    proposal = LLMPolicy(LLMClient(llm_config)).propose(ctx)
    assert proposal is not None and proposal.patch is not None
    assert is_structural(proposal.patch)
    bodies = fake_openai.bodies()
    assert "MUST be structural" in bodies[0]["messages"][-1]["content"]
    assert "must be structural" in bodies[-1]["messages"][-1]["content"]

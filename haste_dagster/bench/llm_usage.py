"""What the LLM did in a benchmark run: valid replies, tokens per iteration, kept rate, medals.

Reads the transfer benchmark's attempt records (duck-typed: ``arm``, ``iterations``,
``prompt_tokens``, ``completion_tokens``, ``scored_iterations``, ``kept_rate``, ``medal``
and ``llm``, the attempt's token-ledger totals). Two validity rates, because they answer
different questions:

* ``valid_reply_rate``: HTTP calls whose reply parsed and validated / all calls (the
  specialist's and every repair round included; from the ledger);
* ``valid_proposal_rate``: refinement iterations that ran a validated patch / iterations
  proposed (an iteration fails only after its repair rounds are spent).

Tokens per iteration are the competition agent's proposal tokens (repairs included) over
the proposed iterations; the specialist's call is counted in the ledger totals only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Iteration errors the LLM policy records when no valid patch came back (llm_policy.propose).
LLM_FAILURES = ("LLMReplyInvalid", "LLMRequestFailed")


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def arm_llm_summary(records: Sequence[Any]) -> dict[str, Any]:
    proposed = [it for r in records for it in r.iterations if it["idx"] > 0]
    failed = [it for it in proposed if (it.get("error") or "").startswith(LLM_FAILURES)]
    ledgers = [r.llm for r in records if r.llm]
    calls = sum(int(t["calls"]) for t in ledgers)
    failed_calls = sum(int(t["failed_calls"]) for t in ledgers)
    prompt = sum(r.prompt_tokens for r in records)
    completion = sum(r.completion_tokens for r in records)
    graded = [r for r in records if r.medal is not None]
    return {
        "attempts": len(records),
        "calls": calls,
        "failed_calls": failed_calls,
        "valid_reply_rate": _rate(calls - failed_calls, calls),
        "iterations": len(proposed),
        "failed_iterations": len(failed),
        "valid_proposal_rate": _rate(len(proposed) - len(failed), len(proposed)),
        "tokens_per_iteration": {
            "prompt": _rate(prompt, len(proposed)),
            "completion": _rate(completion, len(proposed)),
        },
        "ledger_tokens": {
            "prompt": sum(int(t["prompt_tokens"]) for t in ledgers),
            "completion": sum(int(t["completion_tokens"]) for t in ledgers),
        },
        "kept_rate": _rate(
            sum(1 for r in records for it in r.iterations if it["idx"] > 0 and it["kept"]),
            sum(r.scored_iterations for r in records),
        ),
        "medals": sum(1 for r in graded if r.medal != "none"),
        "graded": len(graded),
    }


def llm_summary(records: Sequence[Any]) -> dict[str, Any]:
    """Per arm and overall, plus flat vs tiered output tokens (the paper: flat 1.67x)."""
    arms = sorted({r.arm for r in records})
    by_arm = {arm: arm_llm_summary([r for r in records if r.arm == arm]) for arm in arms}
    completion = {arm: sum(r.completion_tokens for r in records if r.arm == arm) for arm in arms}
    tiered, flat = completion.get("warm"), completion.get("flat")
    return {
        "overall": arm_llm_summary(records),
        "by_arm": by_arm,
        "completion_tokens": {"tiered": tiered, "flat": flat},
        "flat_over_tiered_completion": flat / tiered if tiered and flat is not None else None,
    }

"""The LLM figures of the transfer benchmark, computed from attempt records."""

from __future__ import annotations

from types import SimpleNamespace

from haste_dagster.bench.llm_usage import llm_summary


def _record(arm: str, iterations: list[tuple[bool, str | None]], calls: int, failed: int,
            prompt: int, completion: int, medal: str | None) -> SimpleNamespace:
    rows = [{"idx": 0, "kept": True, "error": None}] + [
        {"idx": i + 1, "kept": kept, "error": error} for i, (kept, error) in enumerate(iterations)
    ]
    ledger = {"calls": calls, "failed_calls": failed, "prompt_tokens": prompt + 100,
              "completion_tokens": completion + 10}
    return SimpleNamespace(arm=arm, iterations=rows, scored_iterations=len(iterations),
                           prompt_tokens=prompt, completion_tokens=completion, medal=medal,
                           llm=ledger)


def test_llm_summary_separates_reply_and_proposal_validity_and_compares_flat_to_tiered() -> None:
    records = [
        _record("warm", [(True, None), (False, "LLMReplyInvalid: cut off")], 4, 2, 900, 100,
                "gold"),
        _record("flat", [(False, None), (False, "ValueError: fit crashed")], 3, 0, 1200, 250,
                "none"),
    ]
    summary = llm_summary(records)
    warm, flat, overall = summary["by_arm"]["warm"], summary["by_arm"]["flat"], summary["overall"]
    assert warm["valid_reply_rate"] == 0.5 and warm["valid_proposal_rate"] == 0.5
    # A fit that crashed after a valid patch is not an LLM failure.
    assert flat["valid_reply_rate"] == 1.0 and flat["valid_proposal_rate"] == 1.0
    assert warm["tokens_per_iteration"] == {"prompt": 450, "completion": 50}
    assert warm["ledger_tokens"] == {"prompt": 1000, "completion": 110}
    assert warm["kept_rate"] == 0.5 and flat["kept_rate"] == 0.0
    assert (overall["medals"], overall["graded"], overall["calls"]) == (1, 2, 7)
    assert summary["completion_tokens"] == {"tiered": 100, "flat": 250}
    assert summary["flat_over_tiered_completion"] == 2.5


def test_llm_summary_without_a_flat_arm_has_no_ratio() -> None:
    summary = llm_summary([_record("warm", [], 1, 0, 10, 5, None)])
    assert summary["flat_over_tiered_completion"] is None
    assert summary["overall"]["valid_proposal_rate"] is None  # no iteration proposed

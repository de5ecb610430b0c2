"""LLM access for the agents: the openai client wrapper, the token ledger and the prompts.

Nothing here is needed by the offline default (heuristic policy). Names are imported
lazily so ``import haste_dagster.llm.ledger`` does not pay for importing ``openai``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LLMClient": "client",
    "LLMConfig": "client",
    "Usage": "client",
    "TokenBudgetExceeded": "client",
    "LLMCallError": "client",
    "LLMRequestFailed": "client",
    "LLMReplyInvalid": "client",
    "ReplyRejected": "client",
    "TokenLedger": "ledger",
    "LedgerTotals": "ledger",
    "CallRecord": "ledger",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)

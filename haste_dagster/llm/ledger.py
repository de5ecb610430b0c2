"""The token ledger: one ``llm_calls`` row per HTTP call to the LLM, failed calls included.

Totals per attempt and per campaign are read back from the same table, so the campaign
token budget holds across processes (several Dagster ops may share one campaign).

Transactions: each write is its own ``conn.transaction()`` block and reads are wrapped in
one too, so the ledger never leaves an implicit transaction open on the connection. If the
caller's connection is already inside a transaction, the block is a savepoint and the row
becomes durable only when the caller commits (and a rollback loses it). ``LLMClient``
therefore never writes on the caller's connection: it uses ``TokenLedger.beside(conn)``, a
dedicated autocommit connection to the same database, so every call is recorded at once
whatever the caller's transaction does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg

from haste_dagster.config import redact

AgentLevel = Literal["orchestrator", "specialist", "competition"]
AGENT_LEVELS: tuple[str, ...] = ("orchestrator", "specialist", "competition")


@dataclass(frozen=True)
class CallRecord:
    """What one HTTP call cost; written to ``llm_calls`` as is."""

    agent_level: AgentLevel
    purpose: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    ok: bool
    error: str | None = None
    attempt_id: int | None = None
    campaign_id: str | None = None
    cached_tokens: int = 0  # of prompt_tokens, served from the server's prompt cache


@dataclass(frozen=True)
class LedgerTotals:
    calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_json(self) -> dict[str, int | float]:
        return {
            "calls": self.calls,
            "failed_calls": self.failed_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "total_tokens": self.total_tokens,
            "latency_s": round(self.latency_s, 3),
        }


_TOTALS_SQL = """SELECT count(*) AS calls,
                        count(*) FILTER (WHERE NOT ok) AS failed_calls,
                        coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
                        coalesce(sum(completion_tokens), 0) AS completion_tokens,
                        coalesce(sum(cached_tokens), 0) AS cached_tokens,
                        coalesce(sum(latency_s), 0) AS latency_s
                 FROM llm_calls WHERE {where}"""


class TokenLedger:
    def __init__(self, conn: psycopg.Connection, *, owns_connection: bool = False) -> None:
        self.conn = conn
        self._owns = owns_connection

    @classmethod
    def open(cls, url: str | None = None) -> TokenLedger:
        """A ledger on a dedicated autocommit connection (rows durable at once)."""
        from haste_dagster import db

        conn = db.connect(url)
        conn.autocommit = True
        return cls(conn, owns_connection=True)

    @classmethod
    def beside(cls, conn: psycopg.Connection) -> TokenLedger:
        """A ledger on a new autocommit connection to ``conn``'s database (same credentials)."""
        from psycopg.rows import dict_row

        try:
            own = psycopg.connect(
                conn.info.dsn, password=conn.info.password or None, autocommit=True,
                row_factory=dict_row, connect_timeout=10,
            )
        except psycopg.Error as exc:
            raise psycopg.OperationalError(
                f"token ledger: cannot open a second connection: {redact(str(exc))}"
            ) from None
        return cls(own, owns_connection=True)

    def close(self) -> None:
        """Close the connection if the ledger opened it (``open``/``beside``)."""
        if self._owns and not self.conn.closed:
            self.conn.close()

    def record(self, call: CallRecord) -> int:
        if call.agent_level not in AGENT_LEVELS:
            raise ValueError(f"agent_level must be one of {AGENT_LEVELS}, not {call.agent_level!r}")
        # Errors are redacted here as a last line of defence; the client redacts too.
        error = redact(call.error)[:2000] if call.error else None
        with self.conn.transaction():
            row = self.conn.execute(
                """INSERT INTO llm_calls (agent_level, purpose, attempt_id, campaign_id, model,
                       prompt_tokens, completion_tokens, cached_tokens, latency_s, ok, error)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                (
                    call.agent_level, call.purpose, call.attempt_id, call.campaign_id,
                    call.model, call.prompt_tokens, call.completion_tokens, call.cached_tokens,
                    float(call.latency_s), call.ok, error,
                ),
            ).fetchone()
        return int(_first(row))

    def _totals(self, where: str, value: object) -> LedgerTotals:
        with self.conn.transaction():
            row = self.conn.execute(_TOTALS_SQL.format(where=where), (value,)).fetchone()
        data = row if isinstance(row, dict) else dict(
            zip(("calls", "failed_calls", "prompt_tokens", "completion_tokens", "cached_tokens",
                 "latency_s"), row, strict=True)
        )
        return LedgerTotals(
            calls=int(data["calls"]),
            failed_calls=int(data["failed_calls"]),
            prompt_tokens=int(data["prompt_tokens"]),
            completion_tokens=int(data["completion_tokens"]),
            latency_s=float(data["latency_s"]),
            cached_tokens=int(data["cached_tokens"]),
        )

    def attempt_totals(self, attempt_id: int) -> LedgerTotals:
        return self._totals("attempt_id = %s", attempt_id)

    def campaign_totals(self, campaign_id: str) -> LedgerTotals:
        return self._totals("campaign_id = %s", campaign_id)

    def calls(
        self, *, attempt_id: int | None = None, campaign_id: str | None = None
    ) -> list[dict]:
        """Ledger rows in call order, filtered by attempt and/or campaign."""
        clauses, params = [], []
        if attempt_id is not None:
            clauses.append("attempt_id = %s")
            params.append(attempt_id)
        if campaign_id is not None:
            clauses.append("campaign_id = %s")
            params.append(campaign_id)
        where = " AND ".join(clauses) or "true"
        with self.conn.transaction():
            cur = self.conn.execute(
                f"""SELECT id, created_at, agent_level, purpose, attempt_id, campaign_id, model,
                           prompt_tokens, completion_tokens, cached_tokens, latency_s, ok,
                           error
                    FROM llm_calls WHERE {where} ORDER BY id""",
                params,
            )
            names = [d.name for d in cur.description or []]
            return [r if isinstance(r, dict) else dict(zip(names, r, strict=True)) for r in cur]


def _first(row: object) -> object:
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]  # type: ignore[index]

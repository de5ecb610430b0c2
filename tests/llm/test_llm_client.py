"""LLMClient against the loopback server: the real openai client, a real Postgres ledger."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Literal

import psycopg
import pytest
from fake_openai import (
    SECRET_KEY,
    FakeOpenAI,
    Reply,
    ok,
    rate_limited,
    reject_response_format,
    server_error,
    slow,
    text,
)
from pydantic import BaseModel

from haste_dagster.errors import LLMError
from haste_dagster.llm.client import (
    LLMClient,
    LLMConfig,
    LLMReplyInvalid,
    LLMRequestFailed,
    ReplyRejected,
    TokenBudgetExceeded,
    prompt_schema,
)
from haste_dagster.llm.ledger import TokenLedger


class Answer(BaseModel):
    answer: str
    n: int


GOOD = {"answer": "forty-two", "n": 42}
MESSAGES = [{"role": "system", "content": "You answer."}, {"role": "user", "content": "Go."}]


def ask(client: LLMClient, **kw) -> tuple[Answer, object]:
    return client.complete_json(
        MESSAGES, Answer, agent_level=kw.pop("agent_level", "competition"),
        purpose=kw.pop("purpose", "test"), **kw,
    )


def test_reply_is_parsed_and_its_tokens_land_in_the_ledger(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    fake_openai.push(ok(GOOD, prompt_tokens=20, completion_tokens=5))
    client = LLMClient(llm_config, ledger=TokenLedger(conn), campaign_id="camp")
    reply, usage = ask(client, attempt_id=7, purpose="propose")
    assert reply == Answer(**GOOD)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.calls) == (20, 5, 1)
    sent = fake_openai.requests[0]
    assert sent["headers"]["authorization"] == f"Bearer {SECRET_KEY}"
    assert sent["body"]["model"] == "fake-model"
    assert sent["body"]["response_format"]["type"] == "json_schema"
    assert sent["body"]["response_format"]["json_schema"]["schema"]["required"] == ["answer", "n"]
    [row] = TokenLedger(conn).calls(attempt_id=7)
    assert (row["prompt_tokens"], row["completion_tokens"], row["ok"]) == (20, 5, True)
    assert row["cached_tokens"] == 0  # the server reported no prompt_tokens_details
    assert row["agent_level"] == "competition"
    assert (row["purpose"], row["campaign_id"]) == ("propose", "camp")
    assert row["model"] == "fake-model" and row["latency_s"] >= 0


def test_rate_limit_is_retried_after_the_servers_retry_after(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    fake_openai.push(rate_limited(retry_after="0.3"), ok(GOOD))
    client = LLMClient(llm_config, ledger=TokenLedger(conn)).with_config(max_backoff_s=2.0)
    started = time.monotonic()
    reply, usage = ask(client, attempt_id=1)
    assert reply.n == 42
    assert time.monotonic() - started >= 0.3  # backoff_s alone would be 0.01 s
    assert usage.calls == 2
    rows = TokenLedger(conn).calls(attempt_id=1)
    assert [r["ok"] for r in rows] == [False, True]
    assert "429" in rows[0]["error"]


def test_timeout_is_retried_and_recorded_as_a_failed_call(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    # A short timeout of its own, three times below the delay: load only makes it fire sooner.
    llm_config = replace(llm_config, timeout_s=0.5)
    fake_openai.push(slow(ok(GOOD), delay_s=1.5), ok(GOOD))
    client = LLMClient(llm_config, ledger=TokenLedger(conn))
    reply, _ = ask(client, attempt_id=3)
    assert reply.n == 42
    rows = TokenLedger(conn).calls(attempt_id=3)
    assert [r["ok"] for r in rows] == [False, True]
    assert "Timeout" in rows[0]["error"]
    assert rows[0]["latency_s"] >= llm_config.timeout_s * 0.9


def test_server_errors_past_the_retry_bound_raise_llm_error(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    fake_openai.push(*(server_error(503) for _ in range(llm_config.max_retries + 2)))
    client = LLMClient(llm_config, ledger=TokenLedger(conn))
    with pytest.raises(LLMRequestFailed, match="after 2 retries") as info:
        ask(client, attempt_id=4)
    assert isinstance(info.value, LLMError)
    assert len(fake_openai.requests) == llm_config.max_retries + 1
    assert info.value.usage.calls == llm_config.max_retries + 1
    rows = TokenLedger(conn).calls(attempt_id=4)
    assert len(rows) == 3 and not any(r["ok"] for r in rows)


def test_client_errors_are_not_retried(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(Reply(status=401, error="invalid api key"), ok(GOOD))
    with pytest.raises(LLMRequestFailed, match="401"):
        ask(LLMClient(llm_config))
    assert len(fake_openai.requests) == 1


def test_malformed_json_is_repaired_after_feedback(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    broken = '{"answer": "forty-two", "n": '
    fake_openai.push(text(broken), ok(GOOD))
    reply, usage = ask(LLMClient(llm_config, ledger=TokenLedger(conn)), attempt_id=5)
    assert reply.n == 42 and usage.calls == 2
    retry_messages = fake_openai.bodies()[1]["messages"]
    assert retry_messages[-2] == {"role": "assistant", "content": broken}
    assert "not valid JSON" in retry_messages[-1]["content"]
    rows = TokenLedger(conn).calls(attempt_id=5)
    assert [r["ok"] for r in rows] == [False, True]
    assert rows[0]["error"].startswith("invalid reply: not valid JSON")
    assert rows[0]["prompt_tokens"] > 0  # a bad reply still costs tokens


def test_schema_violation_is_named_in_the_feedback(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(ok({"answer": "x", "n": "many"}), ok(GOOD))
    reply, _ = ask(LLMClient(llm_config))
    assert reply.n == 42
    feedback = fake_openai.bodies()[1]["messages"][-1]["content"]
    assert "n:" in feedback and "integer" in feedback


def test_code_fenced_json_is_accepted_without_a_repair_round(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(text('```json\n{"answer": "a", "n": 1}\n```'))
    reply, usage = ask(LLMClient(llm_config))
    assert reply.n == 1 and usage.calls == 1


def test_validate_hook_rejection_is_sent_back_to_the_model(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    def at_most_ten(reply: Answer) -> None:
        if reply.n > 10:
            raise ReplyRejected(f"n={reply.n} is out of range; use 0..10")

    fake_openai.push(ok(GOOD), ok({"answer": "small", "n": 3}))
    reply, _ = ask(LLMClient(llm_config), validate=at_most_ten)
    assert reply.n == 3
    assert "n=42 is out of range" in fake_openai.bodies()[1]["messages"][-1]["content"]


def test_invalid_replies_raise_after_the_repair_bound(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    fake_openai.push(*(text("I think the answer is 42.") for _ in range(5)))
    with pytest.raises(LLMReplyInvalid, match="still invalid after 2 repair") as info:
        ask(LLMClient(llm_config, ledger=TokenLedger(conn)), attempt_id=6)
    assert len(fake_openai.requests) == llm_config.max_repairs + 1
    assert info.value.usage.calls == 3 and info.value.usage.prompt_tokens == 33
    assert [r["ok"] for r in TokenLedger(conn).calls(attempt_id=6)] == [False] * 3


def test_rejected_response_format_falls_back_to_json_object_then_text(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(
        reject_response_format("json_schema"), reject_response_format("json_object"),
        ok(GOOD), ok(GOOD),
    )
    client = LLMClient(llm_config)
    ask(client)
    formats = [b.get("response_format", {}).get("type") for b in fake_openai.bodies()]
    assert formats == ["json_schema", "json_object", None]
    assert client.response_mode == "text"
    ask(client)  # the fallback sticks for later calls
    assert "response_format" not in fake_openai.bodies()[3]
    # Without response_format the schema must still reach the model through the prompt.
    assert '"required":["answer","n"]' in fake_openai.bodies()[3]["messages"][-1]["content"]


def test_campaign_budget_stops_before_the_next_call_across_clients(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    fake_openai.push(ok(GOOD, prompt_tokens=20, completion_tokens=15), ok(GOOD))
    config = LLMConfig(**{**llm_config.__dict__, "token_budget": 30})
    ask(LLMClient(config, ledger=TokenLedger(conn), campaign_id="c1"))
    with pytest.raises(TokenBudgetExceeded) as info:
        # A second client (as in another process) of the same campaign shares the budget.
        ask(LLMClient(config, ledger=TokenLedger(conn), campaign_id="c1"))
    assert isinstance(info.value, LLMError)
    assert (info.value.spent, info.value.budget) == (35, 30)
    assert len(fake_openai.requests) == 1  # the refused call was never sent
    # Another campaign has its own budget.
    reply, _ = ask(LLMClient(config, ledger=TokenLedger(conn), campaign_id="c2"))
    assert reply.n == 42


def test_ledger_rows_survive_a_rollback_on_the_callers_connection(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    fake_openai.push(ok(GOOD))
    conn.execute("SELECT 1")  # the caller is now inside an implicit transaction
    client = LLMClient(llm_config, conn=conn)
    try:
        ask(client, attempt_id=11)
    finally:
        client.close()
    conn.rollback()
    assert TokenLedger(conn).attempt_totals(11).calls == 1


def test_budget_without_a_ledger_counts_this_clients_calls(
    fake_openai: FakeOpenAI, llm_config: LLMConfig
) -> None:
    fake_openai.push(ok(GOOD, prompt_tokens=5, completion_tokens=5), ok(GOOD))
    client = LLMClient(LLMConfig(**{**llm_config.__dict__, "token_budget": 10}))
    ask(client)
    with pytest.raises(TokenBudgetExceeded):
        ask(client)


def test_ledger_totals_per_attempt_and_campaign_count_prompt_cache_hits(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection
) -> None:
    fake_openai.push(
        ok(GOOD, prompt_tokens=10, completion_tokens=1),
        text("{", prompt_tokens=12, completion_tokens=2, cached_tokens=8),
        ok(GOOD, prompt_tokens=14, completion_tokens=3, cached_tokens=12),
        ok(GOOD, prompt_tokens=100, completion_tokens=10),
    )
    ask(LLMClient(llm_config, ledger=TokenLedger(conn), campaign_id="A"), attempt_id=1)
    ask(LLMClient(llm_config, ledger=TokenLedger(conn), campaign_id="A"), attempt_id=2)
    ask(LLMClient(llm_config, ledger=TokenLedger(conn), campaign_id="B"), attempt_id=3)
    ledger = TokenLedger(conn)
    two = ledger.attempt_totals(2)
    assert (two.calls, two.failed_calls, two.prompt_tokens, two.completion_tokens) == (2, 1, 26, 5)
    assert two.cached_tokens == 20 and two.as_json()["cached_tokens"] == 20
    assert [c["cached_tokens"] for c in ledger.calls(attempt_id=2)] == [8, 12]
    camp = ledger.campaign_totals("A")
    assert (camp.calls, camp.total_tokens) == (3, 42)
    assert camp.as_json()["total_tokens"] == 42
    assert ledger.campaign_totals("nobody").calls == 0


def test_secrets_never_reach_errors_ledger_or_logs(
    fake_openai: FakeOpenAI, llm_config: LLMConfig, conn: psycopg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A misbehaving proxy that echoes the Authorization header and the URL back.
    echo = f"bad gateway for Bearer {SECRET_KEY} at http://bob:hunter2pw@proxy/v1"
    fake_openai.push(*(server_error(502, error=echo) for _ in range(3)))
    config = LLMConfig(**{**llm_config.__dict__, "max_retries": 2})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LLMRequestFailed) as info:
        ask(LLMClient(config, ledger=TokenLedger(conn)), attempt_id=9)
    assert "502" in str(info.value)
    leaked = [SECRET_KEY, "hunter2pw"]
    texts = [str(info.value), repr(config), caplog.text]
    texts += [r["error"] for r in TokenLedger(conn).calls(attempt_id=9)]
    for secret in leaked:
        assert not any(secret in t for t in texts), secret
    assert "***" in TokenLedger(conn).calls(attempt_id=9)[0]["error"]


def test_password_in_base_url_is_redacted_from_errors(llm_config: LLMConfig) -> None:
    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    config = LLMConfig(**{**llm_config.__dict__, "base_url": "http://u:pw-hunter2@127.0.0.1:9/v1",
                          "max_retries": 0})
    with pytest.raises(LLMRequestFailed) as info:
        ask(LLMClient(config))
    assert "pw-hunter2" not in str(info.value) and "127.0.0.1:9" in str(info.value)
    assert "pw-hunter2" not in repr(config)


def test_config_from_env_uses_a_placeholder_key_only_for_custom_endpoints() -> None:
    local = LLMConfig.from_env(
        {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "HASTE_LLM_MODEL": "qwen2.5:7b",
         "HASTE_LLM_TOKEN_BUDGET": "5000", "HASTE_LLM_TEMPERATURE": "0"}
    )
    assert local.api_key == "not-needed" and local.model == "qwen2.5:7b"
    assert local.token_budget == 5000 and local.temperature == 0.0
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        LLMConfig.from_env({"HASTE_LLM_MODEL": "gpt-4o-mini"})
    with pytest.raises(LLMError, match="HASTE_LLM_MODEL"):
        LLMConfig.from_env({"OPENAI_API_KEY": "sk-x"})
    with pytest.raises(LLMError, match="HASTE_LLM_TIMEOUT"):
        LLMConfig.from_env({"OPENAI_API_KEY": "sk-x", "HASTE_LLM_MODEL": "m",
                            "HASTE_LLM_TIMEOUT": "soon"})
    explicit = LLMConfig.from_env({"OPENAI_API_KEY": "sk-env"}, model="m", api_key="sk-arg")
    assert explicit.api_key == "sk-arg" and "sk-arg" not in repr(explicit)


def test_the_prompts_copy_of_the_schema_drops_titles_but_keeps_a_property_named_title() -> None:
    class Titled(BaseModel):
        title: str
        kind: Literal["a"] = "a"

    trimmed = prompt_schema(Titled.model_json_schema())
    assert trimmed["properties"]["title"] == {"type": "string"}  # a property, kept
    assert "title" not in trimmed and "title" not in trimmed["properties"]["kind"]
    assert trimmed["properties"]["kind"] == {"const": "a", "type": "string"}
    assert trimmed["required"] == ["title"]

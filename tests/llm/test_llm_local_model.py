"""The llm policy against a real model: SmolLM2-135M behind `haste llm serve`, on loopback.

The scripted server (fake_openai.py) injects faults; these tests prove the happy path is
real: real prompts, grammar-constrained replies, the server's own token counts, and a
small model's real failure modes (replies cut at max_tokens, values out of range). They
are slow by nature (a CPU model on one thread), so there are few of them and each bounds
its calls: two iterations, one repair round, capped replies.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from local_llm import LocalLLM, free_loopback_port, start_llm_server, stop_llm_server, wait_healthy
from openai import OpenAI
from tiny_competitions import write_tiny_regression

from haste_dagster.agents import records
from haste_dagster.agents.competition_agent import AttemptConfig, RefinementLoop
from haste_dagster.agents.llm_policy import LLMPolicy
from haste_dagster.agents.orchestrator import solve
from haste_dagster.agents.reflection import LABELS
from haste_dagster.competitions.profile import profile_data
from haste_dagster.competitions.registry import load_competition
from haste_dagster.llm.client import LLMClient, LLMConfig
from haste_dagster.llm.ledger import TokenLedger

SLUG = "tiny_local_llm"
LLM_ERRORS = ("LLMReplyInvalid", "LLMRequestFailed")
# A CPU model on shared cores may need minutes per call; the attempt's time budget must not
# be what ends these attempts (a budget stop is tested elsewhere, with the heuristic).
SECONDS = 6 * 3600


def _port_refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _port_bindable(port: int) -> bool:
    with socket.socket() as probe:
        # SO_REUSEADDR: what any server sets; a closed listener's TIME_WAIT does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
        return True


def _busy(url: str) -> bool:
    root = url.removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/slots", timeout=5) as reply:
            return any(slot.get("is_processing") for slot in json.loads(reply.read()))
    except OSError:
        return False


@pytest.mark.slow
def test_llm_serve_prints_its_exports_and_frees_the_port_on_sigterm_mid_request() -> None:
    port = free_loopback_port()
    process = start_llm_server(port, alias="smollm2")
    url = f"http://127.0.0.1:{port}/v1"
    errors: list[str] = []

    def long_request() -> None:  # a prompt that takes the server a while
        client = OpenAI(base_url=url, api_key="x", timeout=600, max_retries=0)
        try:
            client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": "word " * 3000}],
                max_tokens=50,
            )
        except Exception as exc:  # noqa: BLE001 - the server going away is the point
            errors.append(type(exc).__name__)

    try:
        wait_healthy(process, url)  # /health answered {"status": "ok"}
        assert not _port_bindable(port)
        request = threading.Thread(target=long_request, daemon=True)
        request.start()
        deadline = time.monotonic() + 120
        while not _busy(url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _busy(url), "the long request never started"
        stopped_at = time.monotonic()
    finally:
        code = stop_llm_server(process)
    # Mid-prompt, llama.cpp holds the GIL; the server process is killed, not asked.
    assert time.monotonic() - stopped_at < 60
    out, err = process.communicate()
    # 0, not -15: `haste llm serve` handled SIGTERM (ended its server) and exited.
    assert process.returncode == code == 0, err[-2000:]
    assert f"export OPENAI_BASE_URL={url}" in out.splitlines()
    assert "export HASTE_LLM_MODEL=smollm2" in out.splitlines()
    assert _port_refuses(port) and _port_bindable(port)
    request.join(timeout=30)
    assert errors == ["APIConnectionError"]  # the request in flight was cut, not answered


@pytest.mark.slow
def test_replies_cut_at_max_tokens_become_failed_iterations_not_crashes(
    local_llm: LocalLLM, local_llm_config: LLMConfig, conn: psycopg.Connection, tmp_path: Path
) -> None:
    write_tiny_regression(tmp_path, SLUG, iterations=1)
    competition = load_competition(SLUG, tmp_path)
    # 8 tokens cannot hold a patch: every reply ends with finish_reason "length" mid-JSON.
    config = replace(local_llm_config, max_output_tokens=8, max_repairs=0)
    attempt_id = records.create_attempt(
        conn, slug=SLUG, policy="llm", loading="none", seed=0, budget_iterations=1
    )
    policy = LLMPolicy(LLMClient(config, ledger=TokenLedger(conn)), attempt_id=attempt_id)
    loop = RefinementLoop(conn, competition, policy, skills=[], skills_loaded=[])
    result = loop.run(
        records.get_attempt(conn, attempt_id),
        AttemptConfig(policy="llm", iterations=1, seconds=SECONDS),
        profile_data(competition).as_dict(),
    )

    # The specialist fell back to the default spec; the iteration is failed with the reason.
    assert policy.last_initial is not None and "cut off" in (policy.last_initial.error or "")
    rows = records.load_iterations(conn, attempt_id)
    assert [r.idx for r in rows] == [0, 1]
    assert rows[0].cv_mean is not None  # the baseline still ran
    failed = rows[1]
    assert failed.patch is None and failed.cv_mean is None and not failed.kept
    assert failed.error.startswith("LLMReplyInvalid") and "cut off" in failed.error
    assert failed.prompt_tokens > 0 and failed.completion_tokens == 8  # the server's counts
    calls = TokenLedger(conn).calls(attempt_id=attempt_id)
    assert [(c["purpose"], c["ok"]) for c in calls] == [("initial_spec", False), ("propose", False)]
    assert all(c["completion_tokens"] == 8 and c["prompt_tokens"] > 100 for c in calls)
    assert result.best_cv == rows[0].cv_mean


@pytest.mark.slow
def test_llm_attempt_on_a_real_model_runs_specialist_agent_reflection_and_labels(
    local_llm: LocalLLM, local_llm_config: LLMConfig, conn: psycopg.Connection, tmp_path: Path
) -> None:
    write_tiny_regression(tmp_path, SLUG, iterations=2)
    policy = LLMPolicy(LLMClient(local_llm_config, conn=conn))
    result = solve(
        conn, SLUG, AttemptConfig(policy="llm", loading="tiered", iterations=2, seconds=SECONDS),
        defs_dir=tmp_path, policy=policy,
    )
    attempt_id = result.attempt.attempt_id

    # Every reply became a validated patch that ran, or a failed iteration with its reason.
    rows = records.load_iterations(conn, attempt_id)
    assert [r.idx for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        if row.patch is not None:
            assert row.error is None and row.cv_mean is not None, row
        else:
            assert row.error and row.error.startswith(LLM_ERRORS) and row.cv_mean is None, row
    assert policy.last_initial is not None  # the specialist decided (or fell back, with why)

    calls = TokenLedger(conn).calls(attempt_id=attempt_id)
    purposes = [c["purpose"] for c in calls]
    assert purposes[0] == "initial_spec" and calls[0]["agent_level"] == "specialist"
    assert "propose" in purposes and "reflect" in purposes
    # No HTTP failures: every row is a real completion with the server's own counts.
    assert all(c["prompt_tokens"] > 100 and c["completion_tokens"] > 0 for c in calls), calls
    propose = [c for c in calls if c["purpose"] == "propose"]
    assert sum(r.prompt_tokens for r in rows) == sum(c["prompt_tokens"] for c in propose)
    assert sum(r.completion_tokens for r in rows) == sum(c["completion_tokens"] for c in propose)
    assert result.llm is not None and result.llm["calls"] == len(calls)
    assert result.llm["prompt_tokens"] == sum(c["prompt_tokens"] for c in calls)

    # Reflection, then the orchestrator's five-way labels, each decision recorded.
    reflected = [c for c in calls if c["purpose"] == "reflect"]
    decisions = conn.execute(
        "SELECT label, reason FROM promotion_decisions WHERE attempt_id = %s", (attempt_id,)
    ).fetchall()
    if reflected[-1]["ok"]:
        assert "label_learnings" in purposes
        assert decisions and all(d["label"] in LABELS and d["reason"] for d in decisions)
    else:  # the model never wrote valid learnings: recorded, and nothing labelled from it
        assert all(c["error"] for c in reflected) and not decisions

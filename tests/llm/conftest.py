"""Fixtures for the LLM tests: a scripted loopback OpenAI server (fault injection) with a fast
client config, and the real local model behind `haste llm serve` (the happy path is real)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_openai import SECRET_KEY, FakeOpenAI
from local_llm import LocalLLM, free_loopback_port, start_llm_server, stop_llm_server, wait_healthy

from haste_dagster.llm.client import LLMConfig


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm_config(fake_openai: FakeOpenAI) -> LLMConfig:
    # Millisecond backoff keeps retry tests fast. The timeout is generous: a reply from the
    # loopback server can take seconds on a loaded machine, and a short timeout made
    # ordinary calls fail at random; the timeout test sets its own short one.
    return LLMConfig(
        model="fake-model",
        base_url=fake_openai.url,
        api_key=SECRET_KEY,
        timeout_s=30.0,
        max_retries=2,
        max_repairs=2,
        backoff_s=0.01,
        max_backoff_s=0.05,
    )


# -- the real local model ------------------------------------------------------------------


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
        timeout_s=900.0, max_retries=0, max_repairs=1, max_output_tokens=128,
        temperature=0.0,
    )

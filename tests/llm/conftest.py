"""Fixtures for the LLM tests: a scripted loopback OpenAI server and a fast client config."""

from __future__ import annotations

from collections.abc import Iterator

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

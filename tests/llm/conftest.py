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

"""Run configuration shared by the assets and jobs that run attempts."""

from typing import Literal

from dagster import Config
from pydantic import Field


class AttemptRunConfig(Config):
    """How an attempt runs; the defaults are the offline heuristic with tiered skill loading."""

    policy: Literal["heuristic", "llm"] = "heuristic"
    loading: Literal["tiered", "flat", "none"] = "tiered"
    iterations: int | None = Field(default=None, ge=1, description="None: the competition budget.")
    seed: int = 0
    label: str | None = None
    resume: bool = Field(
        default=True,
        description="Continue the newest unfinished attempt with the same policy, loading and "
        "seed (e.g. after a crashed run) instead of starting over.",
    )

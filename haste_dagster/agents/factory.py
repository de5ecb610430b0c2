"""Build the policy and the skill store an attempt runs with, from names and the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg

from haste_dagster.agents.policy import Policy
from haste_dagster.errors import ConfigError

if TYPE_CHECKING:  # the LLM client and the skill store are imported only when built
    from haste_dagster.llm.client import LLMConfig
    from haste_dagster.skills.store import SkillStore

POLICIES = ("heuristic", "llm")


def make_policy(
    name: str,
    conn: psycopg.Connection | None = None,
    *,
    campaign_id: str | None = None,
    llm_config: LLMConfig | None = None,
) -> Policy:
    """The one place a policy is built; ``llm`` uses ``llm_config`` (default: from the env)."""
    if name == "heuristic":
        from haste_dagster.agents.heuristic import HeuristicPolicy

        return HeuristicPolicy()
    if name == "llm":
        from haste_dagster.agents.llm_policy import LLMPolicy
        from haste_dagster.llm.client import LLMClient, LLMConfig

        config = llm_config if llm_config is not None else LLMConfig.from_env()
        return LLMPolicy(LLMClient(config, conn=conn, campaign_id=campaign_id))
    raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


def open_skill_store(conn: psycopg.Connection) -> SkillStore:
    from haste_dagster.skills.embeddings import default_embedder
    from haste_dagster.skills.store import SkillStore

    return SkillStore(conn, default_embedder())

"""Dagster resources: thin, configurable handles on the domain modules.

No secret is ever a config value (config is shown in the UI and stored with each run):
fields name the *environment variables* to read, and values are read when a run uses them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from dagster import ConfigurableResource
from pydantic import Field

from haste_dagster import config, db

if TYPE_CHECKING:  # the domain modules load when a resource is used, not with the definitions
    from haste_dagster.agents.policy import Policy
    from haste_dagster.skills.embeddings import Embedder
    from haste_dagster.skills.store import SkillStore


class DatabaseResource(ConfigurableResource):
    """The HASTE PostgreSQL: ``$url_env`` when set, else the embedded server."""

    url_env: str = Field(
        default="HASTE_DATABASE_URL",
        description="Environment variable holding the database URL (read at run time).",
    )

    def url(self) -> str:
        return os.environ.get(self.url_env) or db.database_url()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A migrated connection for one step, from :func:`haste_dagster.db.connect`: in
        autocommit mode, so rows recorded as they happen (iterations) are durable at once."""
        with db.connection(self.url()) as conn:
            yield conn


class EmbedderResource(ConfigurableResource):
    """Text embeddings for skills: the skills module's default embedder, chosen by
    ``HASTE_EMBEDDINGS`` (minilm | openai | hashing) so every process agrees with the store."""

    def get(self) -> Embedder:
        from haste_dagster.skills.embeddings import default_embedder

        return default_embedder()


class SkillStoreResource(ConfigurableResource):
    """The skill store on the HASTE database; attempts read their scoped skills through it."""

    database: DatabaseResource
    embedder: EmbedderResource

    @contextmanager
    def open(self) -> Iterator[tuple[psycopg.Connection, SkillStore]]:
        """(connection, SkillStore) for one step; the connection closes afterwards."""
        from haste_dagster.skills.store import SkillStore

        with self.database.connection() as conn:
            yield conn, SkillStore(conn, self.embedder.get())


class LLMResource(ConfigurableResource):
    """An OpenAI-compatible endpoint for the ``llm`` policy; unused by the heuristic one."""

    base_url_env: str = Field(default="OPENAI_BASE_URL", description="Env var with the base URL.")
    model_env: str = Field(default="HASTE_LLM_MODEL", description="Env var with the model name.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Env var with the API key.")

    def describe(self) -> dict[str, str]:
        """Safe to log or attach as metadata: the endpoint and model, never the key."""
        return {
            "base_url": config.redact(os.environ.get(self.base_url_env, "")) or "(default)",
            "model": os.environ.get(self.model_env, "") or "(unset)",
        }

    def policy(
        self, name: str, conn: psycopg.Connection, *, campaign_id: str | None = None
    ) -> Policy:
        """The policy an attempt runs with; ``llm`` reads the endpoint from the env vars above."""
        from haste_dagster.agents.factory import make_policy

        llm_config = None
        if name == "llm":
            from haste_dagster.llm.client import LLMConfig

            # Explicit overrides win over LLMConfig's own variables; unset ones fall back.
            llm_config = LLMConfig.from_env(
                base_url=os.environ.get(self.base_url_env) or None,
                api_key=os.environ.get(self.api_key_env) or None,
                model=os.environ.get(self.model_env) or None,
            )
        return make_policy(name, conn, campaign_id=campaign_id, llm_config=llm_config)


class ArtifactsResource(ConfigurableResource):
    """Where plots, reports and the exported skill inventory are written."""

    root: str = Field(
        default="",
        description="Artifacts folder; empty = $HASTE_ARTIFACTS or $HASTE_HOME/artifacts.",
    )
    skill_assets: str = Field(
        default="", description="Skill export folder; empty = $HASTE_SKILL_ASSETS or skill_assets/."
    )

    def path(self, *parts: str) -> Path:
        base = Path(self.root) if self.root else config.artifacts_dir()
        target = base.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def skill_assets_dir(self) -> Path:
        return Path(self.skill_assets) if self.skill_assets else config.skill_assets_dir()

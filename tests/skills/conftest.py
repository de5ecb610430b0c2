"""Skill-store fixtures: a store on the per-test database (see skill_helpers for builders)."""

from __future__ import annotations

import psycopg
import pytest

from haste_dagster.skills.embeddings import HashingEmbedder
from haste_dagster.skills.store import SkillStore


@pytest.fixture
def store(conn: psycopg.Connection) -> SkillStore:
    """A store with the lexical hashing embedder: instant and deterministic."""
    return SkillStore(conn, HashingEmbedder())

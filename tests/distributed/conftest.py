"""Fixtures: the environment the distributed job's steps read, and a Dagster instance on
the test's PostgreSQL (the same instance Celery workers open from its ref)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from dist_helpers import ROUTING_ENV, write_competition

from haste_dagster.defs.instance import dagster_instance


@pytest.fixture
def dist_env(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """A fresh database (HASTE_DATABASE_URL) plus the competition and artifact folders."""
    for name in ROUTING_ENV:
        monkeypatch.delenv(name, raising=False)
    paths = {"defs": tmp_path / "defs", "dagster_home": tmp_path / "dagster"}
    write_competition(paths["defs"])
    monkeypatch.setenv("HASTE_COMPETITION_DEFS", str(paths["defs"]))
    monkeypatch.setenv("HASTE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("HASTE_SKILL_ASSETS", str(tmp_path / "skill_assets"))
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")  # lexical embeddings: no model, fast
    monkeypatch.setenv("HASTE_DAGSTER_PG_URL", "")  # prepare_dagster_home sets it; restored after
    yield {**paths, "db_url": db_url}


@pytest.fixture
def instance(dist_env: dict[str, Any]) -> Iterator[DagsterInstance]:
    """Dagster's storage on the test database (also exports HASTE_DAGSTER_PG_URL)."""
    inst = dagster_instance(dist_env["db_url"], dist_env["dagster_home"])
    try:
        yield inst
    finally:
        inst.dispose()

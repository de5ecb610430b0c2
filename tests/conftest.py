"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from haste_dagster import db

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def haste_home() -> Iterator[Path]:
    """A throwaway HASTE_HOME whose embedded server lives for the test session.

    Not under pytest's tmp_path: pytest resets its base folder to mode 0700 whenever a
    session starts, and the embedded server runs as its own system user when tests run
    as root, so it would lose access to its data folder.
    """
    home = Path(tempfile.mkdtemp(prefix="haste-test-"))
    saved = {k: os.environ.get(k) for k in ("HASTE_HOME", "HASTE_DATABASE_URL")}
    os.environ["HASTE_HOME"] = str(home)
    os.environ.pop("HASTE_DATABASE_URL", None)
    try:
        yield home
    finally:
        db.stop_embedded()
        shutil.rmtree(home, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def server_url(haste_home: Path) -> str:
    """URL of the session's embedded server (its default ``postgres`` database)."""
    return db.database_url()


@pytest.fixture
def db_url(server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, migrated database for one test, also exported as HASTE_DATABASE_URL."""
    url = db.create_database(server_url, f"t_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("HASTE_DATABASE_URL", url)
    with db.connection(url):
        pass
    return url


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with db.connection(db_url) as connection:
        yield connection

"""Secrets: a database password, an API key and a password in the LLM base URL never show up
in CLI output, logs, exceptions, the database (ledger, iterations, attempts) or Dagster's run
storage, event log and metadata. The Dagster UI binds 127.0.0.1 unless told otherwise.

The role with a password is created on the session's embedded server (its socket accepts
any password, so the password's only job here is to be a string that must never leak)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from conftest import child_env, haste, record_input, write_competition
from fake_openai import SECRET_KEY, FakeOpenAI, Reply

from haste_dagster import db

SLUG = "secret_tiny"


def _all_text(url: str) -> str:
    """Every row of every table of the HASTE database, Dagster's schema included, as text."""
    chunks = []
    with psycopg.connect(db.psycopg_url(url), autocommit=True) as conn:
        tables = conn.execute(
            """SELECT table_schema, table_name FROM information_schema.tables
               WHERE table_schema IN ('public', 'dagster') AND table_type = 'BASE TABLE'"""
        ).fetchall()
        for schema, table in tables:
            rows = conn.execute(
                f'SELECT row_to_json(t)::text FROM "{schema}"."{table}" t'
            ).fetchall()
            chunks += [r[0] for r in rows]
    return "\n".join(chunks)


def _files_text(folder: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()
    )


@pytest.fixture
def secrets(server_url: str) -> Iterator[dict[str, str]]:
    """A role with a password that owns a fresh database; the URL carries the password."""
    suffix = uuid.uuid4().hex[:8]
    role, name = f"rel_user_{suffix}", f"rel_secret_{suffix}"
    password = f"Pw-{uuid.uuid4().hex}"
    with psycopg.connect(db.psycopg_url(server_url), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    admin_url = db.create_database(server_url, name, owner=role)
    with psycopg.connect(db.psycopg_url(admin_url), autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS vector")  # needs a superuser
    parts = urlsplit(db.with_database(server_url, name))
    url = urlunsplit(parts._replace(netloc=f"{role}:{quote(password)}@{parts.hostname or ''}"))
    with db.connection(url) as conn:  # migrated as the role: it owns every table
        assert conn.execute("SELECT current_user AS u").fetchone()["u"] == role
    # Left in place: the session's server is thrown away, and DROP DATABASE would force a
    # checkpoint of everything the suite wrote (tens of seconds on a busy machine).
    yield {"url": url, "password": password, "api_key": SECRET_KEY,
           "url_password": f"UrlPw-{uuid.uuid4().hex[:12]}"}


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [k for k in ("password", "api_key", "url_password") if secrets[k] in text]


@pytest.fixture
def echoing_llm() -> Iterator[FakeOpenAI]:
    """An endpoint that rejects the key and quotes it back, as careless servers do."""
    with FakeOpenAI() as server:
        server.push(*[Reply(status=401, error=f"Incorrect API key provided: {SECRET_KEY}")
                      for _ in range(40)])
        yield server


def _llm_env(secrets: dict[str, str], server: FakeOpenAI) -> dict[str, str]:
    base = urlsplit(server.url)
    with_password = urlunsplit(base._replace(
        netloc=f"user:{secrets['url_password']}@{base.hostname}:{base.port}"))
    return {"OPENAI_API_KEY": secrets["api_key"], "OPENAI_BASE_URL": with_password,
            "HASTE_LLM_MODEL": "fake-model", "HASTE_LLM_MAX_RETRIES": "0"}


def test_cli_output_errors_and_recorded_rows_never_contain_secrets(
    secrets: dict[str, str], echoing_llm: FakeOpenAI, tmp_path: Path, tally: Counter
) -> None:
    write_competition(tmp_path, SLUG, rows=120, iterations=2)
    env = child_env(secrets["url"], **_llm_env(secrets, echoing_llm))
    outputs = []
    for args in (
        ("db", "status"),
        ("solve", SLUG, "--policy", "llm", "--iterations", "2", "--defs", str(tmp_path)),
        ("skills", "list"),
    ):
        done = subprocess.run(haste(*args), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout + done.stderr)
    # the same commands failing: a database that is not there, an unreadable definition
    broken_url = secrets["url"].replace("host=", "host=/nonexistent")
    for args, url in (
        (("db", "status"), broken_url),
        (("solve", SLUG, "--defs", str(tmp_path)), broken_url),
        (("solve", "no_such_competition", "--defs", str(tmp_path)), secrets["url"]),
    ):
        done = subprocess.run(haste(*args), env={**env, "HASTE_DATABASE_URL": url},
                              capture_output=True, text=True, timeout=300)
        record_input(tally, "command", args + (url == broken_url,))  # the bad inputs only
        assert done.returncode == 2  # a clear error, not a crash
        assert "Traceback" not in done.stderr and "error:" in done.stderr, done.stderr[-3000:]
        outputs.append(done.stdout + done.stderr)
    everything = "\n".join(outputs)
    assert "***" in everything  # the URLs were printed, redacted
    assert echoing_llm.requests, "the LLM endpoint was never called"
    recorded = _all_text(secrets["url"])
    assert "Incorrect API key" in recorded  # the endpoint's errors were recorded...
    assert _leaks(everything, secrets) == []  # ...without the key, in output and rows alike
    assert _leaks(recorded, secrets) == []


def test_exceptions_and_logs_never_contain_secrets(
    secrets: dict[str, str], echoing_llm: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    from haste_dagster.errors import LLMError
    from haste_dagster.llm.client import LLMClient, LLMConfig

    caplog.set_level(logging.DEBUG)
    broken = secrets["url"].replace("host=", "host=/nonexistent")
    with pytest.raises(db.DatabaseError) as info:
        db.connect(broken)
    chain = [info.value, info.value.__cause__]
    config = LLMConfig.from_env(_llm_env(secrets, echoing_llm))
    client = LLMClient(config)
    from pydantic import BaseModel

    class Reply_(BaseModel):
        answer: str

    with pytest.raises(LLMError) as llm_info:
        client.complete_json([{"role": "user", "content": "hi"}], Reply_,
                             agent_level="competition", purpose="probe")
    chain += [llm_info.value, llm_info.value.__cause__]
    if not llm_info.value.__suppress_context__:  # `raise ... from None` hides the context
        chain.append(llm_info.value.__context__)
    texts = [str(e) for e in chain if e is not None] + [repr(config), caplog.text]
    assert any("Incorrect API key" in t for t in texts)
    assert _leaks("\n".join(texts), secrets) == []


def test_a_dagster_materialization_keeps_secrets_out_of_storage_event_log_and_metadata(
    secrets: dict[str, str],
    echoing_llm: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tally: Counter,
) -> None:
    from dagster import AssetKey, AssetRecordsFilter

    from haste_dagster.defs.instance import dagster_instance

    defs = tmp_path / "defs"
    write_competition(defs, SLUG, rows=120, iterations=2)
    monkeypatch.setenv("HASTE_DAGSTER_PG_URL", "")
    monkeypatch.setenv("HASTE_COMPETITION_DEFS", str(defs))
    home = tmp_path / "dagster_home"
    instance = dagster_instance(secrets["url"], home)
    instance.add_dynamic_partitions("competition", [SLUG])
    env = child_env(
        secrets["url"], **_llm_env(secrets, echoing_llm),
        DAGSTER_HOME=str(home), HASTE_COMPETITION_DEFS=str(defs),
        HASTE_ARTIFACTS=str(tmp_path / "artifacts"),
        HASTE_SKILL_ASSETS=str(tmp_path / "skill_assets"),
        HASTE_DAGSTER_EXECUTOR="in_process",
    )
    config = {"ops": {"attempt": {"config": {"policy": "llm", "iterations": 2}}}}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m",
         "haste_dagster.defs.definitions", "--select", "competition_data,attempt",
         "--partition", SLUG, "--config-json", json.dumps(config)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = instance.get_runs()
    events = "\n".join(str(entry) for entry in instance.all_logs(run.run_id))
    record = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("attempt"), asset_partitions=[SLUG]), limit=1
    ).records[0]
    metadata: dict[str, Any] = {
        k: v.value for k, v in record.asset_materialization.metadata.items()
    }
    assert "***" in json.dumps(metadata["llm"])  # the endpoint is shown, its password hidden
    assert echoing_llm.requests  # the policy did call the endpoint, and recorded its refusals
    assert "Incorrect API key" in _all_text(secrets["url"])
    for name, text in (
        ("process output", done.stdout + done.stderr),
        ("event log", events),
        ("run", str(run)),
        # str() per value: Dagster's table records are NamedTuples that refuse iteration
        ("metadata", "\n".join(f"{k}: {v}" for k, v in metadata.items())),
        ("database (HASTE and Dagster tables)", _all_text(secrets["url"])),
        ("DAGSTER_HOME files (dagster.yaml, compute logs)", _files_text(home)),
    ):
        assert _leaks(text, secrets) == [], f"a secret leaked into the {name}"
    instance.dispose()


def test_the_dagster_ui_binds_loopback_unless_told_otherwise() -> None:
    import typer.main

    from haste_dagster.cli import app
    from haste_dagster.cli.ui import dagster_dev_command

    command = typer.main.get_command(app)
    ui = command.commands["ui"]  # type: ignore[attr-defined]
    host = next(p for p in ui.params if p.name == "host")
    assert host.default == "127.0.0.1"
    argv = dagster_dev_command(host.default, 3000)
    assert argv[argv.index("-h") + 1] == "127.0.0.1" and "0.0.0.0" not in argv

"""`haste skills ...`, `haste consolidate` and `haste bench store` on a real database."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import typer
from skill_helpers import insert_attempt, set_action, skill_files
from typer.testing import CliRunner

from haste_dagster import db
from haste_dagster.cli.bench import app as bench_app
from haste_dagster.cli.skills import app as skills_app
from haste_dagster.cli.skills import consolidate_command
from haste_dagster.config import PROJECT_ROOT
from haste_dagster.skills.embeddings import HashingEmbedder
from haste_dagster.skills.extraction import KeptChange, extract_competition_skills
from haste_dagster.skills.promotion import promote_domain_skills
from haste_dagster.skills.store import SkillStore

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    return db_url


def _invoke(app: typer.Typer, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_import_list_show_and_export_through_the_cli(cli_env: str, tmp_path: Path) -> None:
    seeds = PROJECT_ROOT / "skill_assets"
    assert "new in the store" in _invoke(skills_app, "import", "--dir", str(seeds))
    listed = json.loads(_invoke(skills_app, "list", "--tier", "domain", "--json"))
    assert listed and {s["tier"] for s in listed} == {"domain"}
    shown = _invoke(skills_app, "show", listed[0]["id"])
    assert listed[0]["title"] in shown and "conditions:" in shown
    _invoke(skills_app, "export", "--dir", str(tmp_path))
    assert [p.name for p in skill_files(tmp_path)] == [p.name for p in skill_files(seeds)]
    bad = runner.invoke(skills_app, ["show", "sk_ffffffffffffffff"])
    assert bad.exit_code == 2 and "no skill with id" in bad.output


def test_lineage_json_and_consolidate_through_the_cli(cli_env: str) -> None:
    with db.connection(cli_env) as conn:
        store = SkillStore(conn, HashingEmbedder())
        for slug, depth in (("comp_a", 8), ("comp_b", 10)):
            extract_competition_skills(
                store, attempt_id=insert_attempt(conn, slug), slug=slug, domain="tabular",
                profile={"task": "binary", "rows": 900},
                kept_changes=[KeptChange(idx=1, patch=set_action("model.params.max_depth", depth),
                                         delta=0.01)],
            )
        (promoted,) = promote_domain_skills(store, "tabular")
    lineage = json.loads(_invoke(skills_app, "lineage", promoted.id or "", "--json"))
    assert {a["slug"] for a in lineage["source_attempts"]} == {"comp_a", "comp_b"}
    assert "promoted_from" in _invoke(skills_app, "lineage", promoted.id or "")

    app = typer.Typer()
    app.command("consolidate")(consolidate_command)
    app.command("noop")(lambda: None)  # two commands: typer keeps "consolidate" as a name
    report = json.loads(_invoke(app, "consolidate", "--json"))
    assert report["changed"] is False  # promotion already ran; nothing to merge or retire


def test_bench_store_reports_rates_and_latencies(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASTE_DATABASE_URL", server_url)
    out = tmp_path / "bench.json"
    text = _invoke(bench_app, "store", "--skills", "300", "--queries", "5", "--batch", "100",
                   "--json", str(out))
    assert "skills/s" in text and "p95" in text
    figures = json.loads(out.read_text())
    assert figures["skills"] == 300 and figures["insert"]["skills_per_second"] > 0
    assert figures["scoped_load"]["p95_ms"] >= figures["scoped_load"]["p50_ms"] > 0
    with psycopg.connect(server_url) as conn:  # the throwaway database was dropped
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    assert not [n for n in names if n.startswith("haste_bench_")]


def test_an_error_that_quotes_rich_markup_prints_as_plain_text(cli_env: str) -> None:
    # The id is user input echoed in the error; unescaped, rich would parse "[/red]" as a
    # closing tag and crash with MarkupError instead of printing the error.
    result = runner.invoke(skills_app, ["show", "[/red]no-such-skill"])
    assert result.exit_code != 0
    assert type(result.exception).__name__ != "MarkupError", result.exception
    assert "[/red]no-such-skill" in result.output

"""`haste skills ...` commands (list, show, lineage, export, import, reembed) and
`haste consolidate` (``consolidate_command``, registered at the top level)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from haste_dagster.errors import HasteError

app = typer.Typer(
    help="Skill inventory: list, show, lineage, export, import, reembed.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)


@contextmanager
def _store(*, verify: bool = True) -> Iterator[Any]:
    """A SkillStore on ``db.connect()`` with the configured embedder; errors become exit 2.

    Read-only commands pass ``verify=False``: listing does not need the embedder to be
    the one that filled the store.
    """
    from haste_dagster import db
    from haste_dagster.skills.embeddings import default_embedder
    from haste_dagster.skills.store import SkillStore

    try:
        conn = db.connect()
    except db.DatabaseError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(code=2) from exc
    try:
        yield SkillStore(conn, default_embedder(), verify=verify)
    except HasteError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(code=2) from exc
    finally:
        conn.close()


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


@app.command("list")
def list_command(
    tier: str | None = typer.Option(None, "--tier", help="global | domain | competition"),
    scope: str | None = typer.Option(None, "--scope", help="domain name or competition slug"),
    status: str = typer.Option("active", help="active | merged | retired | all"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON array"),
) -> None:
    """List current skill versions (active ones by default)."""
    if tier is not None and tier not in ("global", "domain", "competition"):
        err.print(f"[red]error:[/red] --tier {tier!r}: choose global, domain or competition")
        raise typer.Exit(code=2)
    with _store(verify=False) as store:
        skills = store.list(tier=tier, scope_key=scope, status=None if status == "all" else status)
    if as_json:
        typer.echo(_dump([s.as_json() for s in skills]))
        return
    table = Table(title=f"{len(skills)} skills")
    table.add_column("id", no_wrap=True)
    for column in ("v", "tier", "scope", "status", "utility", "applied", "kept", "title"):
        table.add_column(column, overflow="fold")
    for s in skills:
        table.add_row(
            s.id,
            str(s.version),
            s.tier,
            s.scope_key or "—",
            s.status,
            f"{s.utility:.4g}",
            str(s.stats.applied),
            str(s.stats.kept),
            s.title,
        )
    out.print(table)


@app.command("show")
def show_command(
    skill_id: str = typer.Argument(..., metavar="ID"),
    version: int | None = typer.Option(None, "--version", help="a version (default: current)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Show one skill: conditions, action, evidence, usage, provenance and guidance."""
    with _store(verify=False) as store:
        skill = store.get(skill_id, version)
    if as_json:
        typer.echo(_dump(skill.as_json()))
        return
    lines = [
        f"{skill.id} v{skill.version}  {skill.tier} {skill.scope_key or ''}  [{skill.status}]",
        f"title:      {skill.title}",
        f"created by: {skill.created_by}"
        + (f", from attempt {skill.source_attempt}" if skill.source_attempt else "")
        + (f", dagster run {skill.dagster_run_id}" if skill.dagster_run_id else ""),
        f"parents:    {', '.join(skill.parent_ids) or '—'}",
        f"conditions: {'; '.join(c.describe() for c in skill.conditions) or 'always'}",
        f"action:     {json.dumps(skill.action) if skill.action else '—'}",
        f"evidence:   {len(skill.evidence)} measurement(s)",
    ]
    lines += [
        f"  - {e.slug} attempt {e.attempt_id} iteration {e.iteration}: {e.delta:+.4g}"
        for e in skill.evidence
    ]
    st = skill.stats
    rate = f"{st.kept_rate:.0%}" if st.kept_rate is not None else "—"
    lines += [
        f"usage:      loaded by {st.loaded} attempt(s), applied {st.applied}, kept {st.kept} "
        f"({rate}), utility {skill.utility:.4g}",
        "",
        skill.guidance,
    ]
    out.print("\n".join(lines), highlight=False, markup=False)


@app.command("lineage")
def lineage_command(
    skill_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Ancestors, descendants, conflicts, and the attempts that loaded or applied a skill."""
    with _store(verify=False) as store:
        lineage = store.lineage(skill_id)
    if as_json:
        typer.echo(_dump(lineage))
        return
    root = lineage["skill"]
    lines = [
        f"{root['id']} v{root['version']} {root['tier']} {root['scope_key'] or ''}: "
        f"{root['title']} [{root['status']}]"
    ]
    for label in ("ancestors", "descendants"):
        lines.append(f"{label}:")
        lines += [
            f"  {'  ' * (n['depth'] - 1)}{n['via']} {n['id']} ({n['tier']} "
            f"{n['scope_key'] or ''}) {n['title']} [{n['status']}]"
            for n in lineage[label]
        ] or ["  —"]
    lines.append("conflicts:")
    lines += [f"  {c['id']}: {c['reason']}" for c in lineage["conflicts"]] or ["  —"]
    lines.append("attempts (loaded / applied / kept):")
    lines += [
        f"  attempt {a['attempt_id']} {a['slug']} ({a['loading']}): loaded={a['loaded']} "
        f"applied={a['applied']} kept={a['kept']}"
        + (f" delta={a['kept_delta']:+.4g}" if a["kept_delta"] is not None else "")
        for a in lineage["attempts"]
    ] or ["  —"]
    lines.append(
        "source attempts: "
        + (
            ", ".join(f"{a['id']} ({a.get('slug') or '?'})" for a in lineage["source_attempts"])
            or "—"
        )
    )
    out.print("\n".join(lines), highlight=False, markup=False)


def _assets_dir(directory: Path | None) -> Path:
    from haste_dagster.config import skill_assets_dir

    return directory or skill_assets_dir()


@app.command("export")
def export_command(
    directory: Path | None = typer.Option(
        None, "--dir", help="target folder (default $HASTE_SKILL_ASSETS or skill_assets/)"
    ),
) -> None:
    """Write every skill as Markdown with YAML front matter (one file per skill)."""
    from haste_dagster.skills.export import export_skills

    target = _assets_dir(directory)
    with _store(verify=False) as store:
        written = export_skills(store, target)
    out.print(f"exported {len(written)} skills to {target}")


@app.command("import")
def import_command(
    directory: Path | None = typer.Option(
        None, "--dir", help="source folder (default $HASTE_SKILL_ASSETS or skill_assets/)"
    ),
) -> None:
    """Load skill files into the store (seeds an empty store; idempotent)."""
    from haste_dagster.skills.export import import_skills

    source = _assets_dir(directory)
    if not source.is_dir():
        err.print(f"[red]error:[/red] {source} is not a folder")
        raise typer.Exit(code=2)
    with _store() as store:
        before = store.count()
        imported = import_skills(store, source)
        after = store.count()
    out.print(f"read {len(imported)} skill files from {source}; {after - before} new in the store")


@app.command("reembed")
def reembed_command() -> None:
    """Re-embed every skill with the configured embedder (after changing HASTE_EMBEDDINGS)."""
    with _store(verify=False) as store:
        count = store.reembed()
    out.print(f"re-embedded {count} skill versions with {store.embedder.name}")


def consolidate_command(
    threshold: float = typer.Option(
        0.92, "--threshold", min=0.0, max=1.0, help="cosine similarity above which to merge"
    ),
    min_uses: int = typer.Option(5, "--min-uses", min=1, help="applications before retiring"),
    min_kept_rate: float = typer.Option(
        0.2, "--min-kept-rate", min=0.0, max=1.0, help="retire below this kept rate"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Consolidate skills: merge near-duplicates, retire poor ones, re-run promotion."""
    from haste_dagster.skills.consolidation import consolidate

    with _store() as store:
        report = consolidate(
            store, similarity_threshold=threshold, min_uses=min_uses, min_kept_rate=min_kept_rate
        )
    if as_json:
        typer.echo(_dump(report.as_json()))
        return
    out.print(
        f"merged {len(report.merged)}, retired {len(report.retired)}, promoted "
        f"{len(report.promoted)}, edges added {report.edges_added} ({report.passes} pass(es))"
        + ("" if report.changed else "; nothing to do"),
        highlight=False,
    )
    for m in report.merged:
        out.print(f"  merged {m['skill']} into {m['into']} (similarity {m['similarity']})")
    for r in report.retired:
        out.print(f"  retired {r['skill']} (kept rate {r['kept_rate']:.0%} over {r['applied']})")

"""Export/import of skill_assets/: Markdown + YAML front matter, byte-exact round trip."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from skill_helpers import cond, insert_attempt, make_skill, set_action, skill_files

from haste_dagster import db
from haste_dagster.config import PROJECT_ROOT
from haste_dagster.errors import SkillError
from haste_dagster.skills.consolidation import consolidate
from haste_dagster.skills.embeddings import HashingEmbedder
from haste_dagster.skills.export import export_skills, import_skills
from haste_dagster.skills.extraction import KeptChange, extract_competition_skills
from haste_dagster.skills.model import Evidence
from haste_dagster.skills.store import SkillStore

SEEDS = PROJECT_ROOT / "skill_assets"


@pytest.fixture
def fresh_store(server_url: str) -> Iterator[SkillStore]:
    """A second, empty database on the same server."""
    url = db.create_database(server_url, f"t_{uuid.uuid4().hex[:12]}")
    with db.connection(url) as conn:
        yield SkillStore(conn, HashingEmbedder())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in skill_files(root)}


def _build_inventory(store: SkillStore) -> None:
    for slug, rows, depth, delta in (("comp_a", 1000, 8, 0.02), ("comp_b", 3000, 10, 0.03)):
        attempt = insert_attempt(store.conn, slug)
        extract_competition_skills(
            store, attempt_id=attempt, slug=slug, domain="tabular_regression",
            profile={"task": "regression", "rows": rows, "target_skew": 1.5},
            kept_changes=[
                KeptChange(idx=1, patch=set_action("model.params.max_depth", depth), delta=delta,
                           rationale="deeper: trees underfit"),
                KeptChange(idx=2, patch=set_action("target_transform", "log1p"), delta=0.01),
            ],
        )
    store.add(make_skill("competition", "comp_c", "comp_c: depth overfits",
                         domain="tabular_regression",
                         action=set_action("model.params.max_depth", 9),
                         conditions=[cond("rows", "<", 300)],
                         evidence=[Evidence(slug="comp_c", delta=-0.5)]))
    long = "Scale numeric columns before the linear model so the penalty treats them alike " * 4
    for tail, delta in (("", 0.01), (" again", 0.02)):  # near-duplicates: one gets merged
        store.add(make_skill("domain", "text", f"Scale numerics{tail}", guidance=long + tail,
                             action=set_action("numeric.scale", "standard"),
                             evidence=[Evidence(slug="comp_t", delta=delta)]))
    store.add(make_skill("global", None, "Unicode guidance: naïve “quotes” — fine",
                         guidance="Line one.\n\n- a bullet with: a colon\n---\nnot front matter"))
    consolidate(store)


def test_export_import_export_is_byte_identical(
    store: SkillStore, fresh_store: SkillStore, tmp_path: Path
) -> None:
    _build_inventory(store)
    first, second = tmp_path / "first", tmp_path / "second"
    written = export_skills(store, first)
    assert len(written) == store.count()
    tiers = {p.relative_to(first).parts[0] for p in written}
    assert tiers == {"global", "domain", "competition"}
    assert any("conflicts_with" in p.read_text() for p in written)
    assert any("promoted_from" in p.read_text() for p in written)
    assert any("status: merged" in p.read_text() for p in written)

    imported = import_skills(fresh_store, first)
    assert len(imported) == len(written)
    export_skills(fresh_store, second)
    assert _files(second) == _files(first)
    # lineage edges survived: the same kinds between the same ids
    def edge_set(s: SkillStore) -> set[tuple[str, str, str]]:
        return {(e["src_id"], e["dst_id"], e["kind"]) for e in s.edges()
                if e["kind"] != "supersedes"}
    assert edge_set(fresh_store) == edge_set(store)


def test_import_seeds_an_empty_store_and_is_idempotent(store: SkillStore, tmp_path: Path) -> None:
    first = import_skills(store, SEEDS)
    assert len(first) == len(skill_files(SEEDS)) >= 6
    again = import_skills(store, SEEDS)
    assert [(s.id, s.version) for s in again] == [(s.id, s.version) for s in first]
    assert store.count() == len(first)
    assert {s.created_by for s in first} == {"seed"}


def test_bundled_seed_skills_reexport_to_the_same_bytes(store: SkillStore, tmp_path: Path) -> None:
    import_skills(store, SEEDS)
    export_skills(store, tmp_path)
    assert _files(tmp_path) == _files(SEEDS)


def test_every_seed_action_applies_to_a_default_spec_of_some_model() -> None:
    from haste_dagster.skills.export import parse_skill_file
    from haste_dagster.solution.spec import SolutionSpec, apply_patch, parse_patch

    for path in skill_files(SEEDS):
        skill, _ = parse_skill_file(path)
        if skill.action is None:
            continue
        applied = []
        for family in ("xgboost", "logistic_regression", "random_forest"):
            try:
                apply_patch(SolutionSpec(model={"family": family}), parse_patch(skill.action))
                applied.append(family)
            except Exception:  # SpecError: not for this family
                continue
        assert applied, f"{path}: action applies to no model family"


def test_a_malformed_skill_file_is_reported_with_its_path(
    store: SkillStore, tmp_path: Path
) -> None:
    bad = tmp_path / "global" / "sk_0123456789abcdef.md"
    bad.parent.mkdir(parents=True)
    bad.write_text("---\nid: sk_0123456789abcdef\ntier: global\ntitle: x\n---\n\nbody\n")
    with pytest.raises(SkillError, match=r"sk_0123456789abcdef\.md: title"):
        import_skills(store, tmp_path)

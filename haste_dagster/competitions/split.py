"""The hidden test split and the checksum of its answers.

Written with numpy only (no scikit-learn splitter) so the rows a seed selects depend on as
little library code as possible; the answers checksum stored in each YAML catches any
change anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable

import numpy as np
import pandas as pd

from haste_dagster.errors import HasteError


class SplitError(HasteError, ValueError):
    """The data cannot be split as the definition asks (too few rows, classes or steps)."""


def _n_test(n: int, fraction: float) -> int:
    # At least one row on each side: an empty train or test split is useless.
    return min(max(int(round(n * fraction)), 1), n - 1)


def random_split(
    n_rows: int, test_fraction: float, seed: int, strata: pd.Series | None = None
) -> np.ndarray:
    """Boolean mask (length ``n_rows``) of the hidden test rows.

    With ``strata`` each class contributes ``round(count * test_fraction)`` rows, classes
    taken in sorted order so the draw is reproducible for a given seed.
    """
    if n_rows < 2:
        raise SplitError(f"need at least 2 rows to split, got {n_rows}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(n_rows, dtype=bool)
    if strata is None:
        chosen = rng.permutation(n_rows)[: _n_test(n_rows, test_fraction)]
        mask[chosen] = True
        return mask
    values = strata.to_numpy()
    for label in sorted_labels(pd.unique(values)):
        positions = np.flatnonzero(values == label)
        if len(positions) < 2:
            raise SplitError(
                f"class {label!r} has {len(positions)} row(s); stratifying needs at least 2"
            )
        chosen = rng.permutation(positions)[: _n_test(len(positions), test_fraction)]
        mask[chosen] = True
    return mask


def forecast_split(times: pd.Series, horizon: int, groups: pd.Series | None = None) -> np.ndarray:
    """Boolean mask of rows in the last ``horizon`` distinct time steps (per group for panels)."""
    if times.isna().any():
        raise SplitError(f"the time column has {int(times.isna().sum())} missing value(s)")
    frame = pd.DataFrame({"t": times.to_numpy()})
    frame["g"] = 0 if groups is None else groups.to_numpy()
    if frame["g"].isna().any():
        raise SplitError("the group column has missing values")
    # Dense rank of each time step within its group, counted from the end (1 = last step).
    from_end = frame.groupby("g", sort=False)["t"].rank(method="dense", ascending=False)
    steps = frame.groupby("g", sort=False)["t"].nunique()
    short = steps[steps <= horizon]
    if len(short):
        what = "the series" if groups is None else f"group {short.index[0]!r}"
        raise SplitError(
            f"{what} has {int(short.iloc[0])} time steps; a horizon of {horizon} "
            "would leave no training data"
        )
    return (from_end <= horizon).to_numpy()


def _cell(value: object) -> str:
    return repr(float(value)) if isinstance(value, float | np.floating) else str(value)


def answers_checksum(answers: pd.Series | pd.DataFrame) -> str:
    """sha256 of the hidden answers: one ``row_id<TAB>value`` line per row, by row_id
    (several targets: their values tab-separated in column order).

    Floats are written with ``repr`` (shortest round-trip form), so the text and its hash
    are the same on every platform.
    """
    frame = answers.to_frame() if isinstance(answers, pd.Series) else answers
    rows = zip(frame.index.tolist(), frame.itertuples(index=False, name=None), strict=True)
    lines = [
        f"{int(row_id)}\t" + "\t".join(_cell(v) for v in values)
        for row_id, values in sorted(rows, key=lambda r: r[0])
    ]
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def sorted_labels(labels: np.ndarray) -> list[Hashable]:
    values = list(labels)
    try:
        return sorted(values)
    except TypeError:  # mixed types (e.g. 1 and "a"): any fixed order will do
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))

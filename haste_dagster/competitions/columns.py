"""Column roles (numeric / categorical / text / date) inferred from the data.

Listed columns in the definition always win; the rules below only decide the rest:
- date: datetime dtype, or strings that look like dates (``2014-01-31``, ``9/30/1990 0:00``)
  and parse;
- text: strings that read like prose (long on average and several words);
- categorical: any other non-numeric column (strings, booleans, pandas categories);
- numeric: the remaining numeric columns.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

import pandas as pd
from pandas.api import types as ptypes

_DATE_LIKE = re.compile(
    r"^\s*(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4})([ T]\d{1,2}:\d{2}(:\d{2})?.*)?\s*$"
)
# Prose: at least this many characters and words on average over non-missing values.
TEXT_MIN_MEAN_CHARS = 30
TEXT_MIN_MEAN_WORDS = 5
_SAMPLE = 500


@dataclass
class Roles:
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    date: list[str] = field(default_factory=list)


def is_stringish(series: pd.Series) -> bool:
    return ptypes.is_object_dtype(series) or ptypes.is_string_dtype(series)


def looks_like_dates(series: pd.Series) -> bool:
    sample = series.dropna().head(_SAMPLE)
    if sample.empty or not all(isinstance(v, str) for v in sample):
        return False
    return bool(sample.map(lambda v: bool(_DATE_LIKE.match(v))).all())


def looks_like_text(series: pd.Series) -> bool:
    sample = series.dropna()
    if sample.empty or not all(isinstance(v, str) for v in sample.head(_SAMPLE)):
        return False
    sample = sample.astype(str)
    return (
        sample.str.len().mean() >= TEXT_MIN_MEAN_CHARS
        and sample.str.split().str.len().mean() >= TEXT_MIN_MEAN_WORDS
    )


def to_datetime(series: pd.Series) -> pd.Series:
    """Parse to timezone-naive ``datetime64[ns]`` (UTC wall time for aware inputs).

    Raises ValueError when more than 1% of the non-missing values do not parse.
    """
    if ptypes.is_datetime64_any_dtype(series):
        parsed = series
    elif ptypes.is_numeric_dtype(series):
        raise ValueError("numeric values are not dates")
    else:
        # Fast path infers one format from the first value; "mixed" handles the rest.
        parsed = pd.to_datetime(series, errors="coerce", utc=True)
        if parsed.isna().sum() > series.isna().sum():
            parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
        bad = int(parsed.isna().sum() - series.isna().sum())
        if bad > 0.01 * max(1, int(series.notna().sum())):
            example = series[parsed.isna() & series.notna()].iloc[0]
            raise ValueError(f"{bad} value(s) are not dates, e.g. {example!r}")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def infer_roles(
    frame: pd.DataFrame,
    features: list[str],
    *,
    text: Collection[str] = (),
    date: Collection[str] = (),
    categorical: Collection[str] = (),
) -> Roles:
    """Roles of ``features`` (in frame order); listed text/date/categorical columns win."""
    roles = Roles()
    for name in features:
        series = frame[name]
        if name in date:
            roles.date.append(name)
        elif name in text:
            roles.text.append(name)
        elif name in categorical:
            roles.categorical.append(name)
        elif ptypes.is_datetime64_any_dtype(series) or (
            is_stringish(series) and looks_like_dates(series)
        ):
            roles.date.append(name)
        elif is_stringish(series) and looks_like_text(series):
            roles.text.append(name)
        elif ptypes.is_bool_dtype(series) or not ptypes.is_numeric_dtype(series):
            roles.categorical.append(name)
        else:
            roles.numeric.append(name)
    return roles

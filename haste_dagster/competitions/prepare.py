"""Named shaping functions for bundled data sets that are not a competition as they come.

A definition names one with ``prepare: <name>``. Each is a pure pandas function of the raw
frame (no I/O, no randomness), so a definition plus its source fully fixes the data. Cell
values are only compared and mapped, never evaluated.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

PrepareFn = Callable[[pd.DataFrame], pd.DataFrame]

PREPARE: dict[str, PrepareFn] = {}


def register(name: str) -> Callable[[PrepareFn], PrepareFn]:
    def decorator(fn: PrepareFn) -> PrepareFn:
        if name in PREPARE:
            raise ValueError(f"preparation {name!r} registered twice")
        PREPARE[name] = fn
        return fn

    return decorator


def get_prepare(name: str) -> PrepareFn:
    try:
        return PREPARE[name]
    except KeyError:
        known = ", ".join(sorted(PREPARE))
        raise KeyError(f"unknown preparation {name!r}; known: {known}") from None


def _require(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"preparation {name!r} needs columns {missing} that the data lacks")


_TWEET_SOURCES = {
    "Twitter for Android": "android",
    "Twitter for iPhone": "iphone",
    "Twitter Web Client": "web",
}


@register("tweet_source")
def tweet_source(frame: pd.DataFrame) -> pd.DataFrame:
    """``source`` (the posting app) → android / iphone / web / other."""
    _require(frame, ["source"], "tweet_source")
    out = frame.copy()
    out["source"] = out["source"].map(_TWEET_SOURCES).fillna("other").astype(object)
    return out


BIRD_PHASES = ("Approach", "Take-off run", "Climb", "Landing Roll", "Descent", "En Route")


@register("bird_strike_phase")
def bird_strike_phase(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a free-text remark and one of the 6 common flight phases."""
    _require(frame, ["remarks", "phase_of_flt"], "bird_strike_phase")
    has_remark = frame["remarks"].notna() & (frame["remarks"].astype(str).str.strip() != "")
    keep = has_remark & frame["phase_of_flt"].isin(BIRD_PHASES)
    return frame.loc[keep].reset_index(drop=True)


@register("elec_demand")
def elec_demand(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the half-hourly ``datetime`` index the R ts object carried (starts 2014-01-01)."""
    out = frame.reset_index(drop=True)
    out.insert(0, "datetime", pd.date_range("2014-01-01", periods=len(out), freq="30min"))
    return out


@register("tx_housing_sales")
def tx_housing_sales(frame: pd.DataFrame) -> pd.DataFrame:
    """Monthly panel by city: drop months without a sales figure, build a real ``date``."""
    _require(frame, ["city", "year", "month", "sales"], "tx_housing_sales")
    out = frame.loc[frame["sales"].notna()].reset_index(drop=True)
    # The source's `date` is a decimal year (2000.083…); a month start is what a forecaster needs.
    out["date"] = pd.to_datetime({"year": out["year"], "month": out["month"], "day": 1}).astype(
        "datetime64[ns]"
    )
    return out

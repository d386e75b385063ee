"""The one place customer histories are cut at a cutoff (DESIGN.md, point-in-time rules).

A cutoff is an explicit business date; it means midnight at the start of that day in the business
timezone. A feature at cutoff ``c`` sees only records with ``ts < c``; a label over horizon ``H`` sees
only ``c <= ts < c + H``. There is no default "now": callers always pass the cutoff.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from features.schema import BUSINESS_TZ


def cutoff_ts(cutoff: dt.date | str | pd.Timestamp, tz: str = BUSINESS_TZ) -> pd.Timestamp:
    """Midnight of business date ``cutoff`` in ``tz``, returned tz-aware in UTC."""
    if isinstance(cutoff, pd.Timestamp) and cutoff.tzinfo is not None:
        cutoff = cutoff.tz_convert(tz).date()
    day = pd.Timestamp(cutoff).date()
    return pd.Timestamp(day).tz_localize(tz).tz_convert("UTC")


def before(df: pd.DataFrame, cutoff: pd.Timestamp, ts_col: str = "ts") -> pd.DataFrame:
    """Rows strictly before ``cutoff`` (the feature side of a cut)."""
    return df[df[ts_col] < cutoff]


def window(df: pd.DataFrame, start: pd.Timestamp, days: int, ts_col: str = "ts") -> pd.DataFrame:
    """Rows with ``start <= ts < start + days`` (the label side of a cut)."""
    end = start + pd.Timedelta(days=days)
    return df[(df[ts_col] >= start) & (df[ts_col] < end)]


def business_day_number(ts: pd.Series, tz: str = BUSINESS_TZ) -> pd.Series:
    """Business-calendar day of each timestamp as an integer (days since 1970-01-01 local)."""
    local = ts.dt.tz_convert(tz).dt.tz_localize(None).dt.normalize()
    return ((local - pd.Timestamp("1970-01-01")) // pd.Timedelta(days=1)).astype("int64")

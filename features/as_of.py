"""The one place customer histories are cut at a cutoff (DESIGN.md, point-in-time rules).

A cutoff is an explicit business date; it means midnight at the start of that day in the business
timezone. A feature at cutoff ``c`` sees only records with ``ts < c``; a label over horizon ``H`` sees
only ``c <= ts < c + H``. There is no default "now": callers always pass the cutoff.

:func:`before` and :func:`window` cut pandas frames (column ``ts``) and engine tables alike. Engine
tables (:mod:`features.engine`) carry time as UTC epoch microseconds in ``ts_us``, and the cutoff enters
an engine expression as an :class:`EngineCutoff` — two integer literals, the cutoff instant and its
business day — so a cut is integer arithmetic with no timezone logic, and one compiled query serves
every cutoff (:meth:`EngineCutoff.placeholder` and :func:`bind_cutoff`). :func:`age_us` and
:func:`business_day` derive the two clocks every feature uses (time before the cutoff, business day).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import ibis
import ibis.expr.types as ir
import pandas as pd

from features.schema import BUSINESS_TZ

#: Microseconds in a day; business days are whole 24-hour days in a fixed-offset business timezone.
US_PER_DAY = 86_400_000_000
#: Stand-ins for a cutoff's two numbers in a compiled query (far from any real value).
_SENTINEL_US = 7_654_321_987_654_321
_SENTINEL_DAY = 987_654_321

Frame = TypeVar("Frame", pd.DataFrame, ir.Table)


def cutoff_ts(cutoff: dt.date | str | pd.Timestamp, tz: str = BUSINESS_TZ) -> pd.Timestamp:
    """Midnight of business date ``cutoff`` in ``tz``, returned tz-aware in UTC."""
    if isinstance(cutoff, pd.Timestamp) and cutoff.tzinfo is not None:
        cutoff = cutoff.tz_convert(tz).date()
    day = pd.Timestamp(cutoff).date()
    return pd.Timestamp(day).tz_localize(tz).tz_convert("UTC")


def cutoff_us(cutoff: dt.date | str | pd.Timestamp, tz: str = BUSINESS_TZ) -> int:
    """:func:`cutoff_ts` as UTC epoch microseconds (the engine's clock)."""
    return cutoff_ts(cutoff, tz).value // 1000


def business_day_number(ts: pd.Series, tz: str = BUSINESS_TZ) -> pd.Series:
    """Business-calendar day of each timestamp as an integer (days since 1970-01-01 local)."""
    local = ts.dt.tz_convert(tz).dt.tz_localize(None).dt.normalize()
    return ((local - pd.Timestamp("1970-01-01")) // pd.Timedelta(days=1)).astype("int64")


def cutoff_business_day(cutoff: dt.date | str | pd.Timestamp, tz: str = BUSINESS_TZ) -> int:
    """Business day number of the cutoff itself."""
    return int(business_day_number(pd.Series([cutoff_ts(cutoff, tz)]), tz).iloc[0])


@dataclass(frozen=True)
class EngineCutoff:
    """A cutoff inside an engine expression: its instant (UTC epoch µs) and its business day number."""

    us: ir.IntegerScalar
    day: ir.IntegerScalar

    @classmethod
    def of(cls, cutoff: EngineCutoff | dt.date | str | pd.Timestamp) -> EngineCutoff:
        """The engine cutoff of a business date (or a tz-aware cutoff timestamp)."""
        if isinstance(cutoff, EngineCutoff):
            return cutoff
        require_fixed_offset(BUSINESS_TZ)
        return cls(_int(cutoff_us(cutoff)), _int(cutoff_business_day(cutoff)))

    @classmethod
    def placeholder(cls) -> EngineCutoff:
        """Stand-in literals: compile once with these, then :func:`bind_cutoff` each real cutoff."""
        require_fixed_offset(BUSINESS_TZ)
        return cls(_int(_SENTINEL_US), _int(_SENTINEL_DAY))


def _int(value: int) -> ir.IntegerScalar:
    return ibis.literal(int(value), type="int64")


def bind_cutoff(sql: str, cutoff: dt.date | str | pd.Timestamp) -> str:
    """Put a real cutoff into SQL compiled with :meth:`EngineCutoff.placeholder`."""
    values = {_SENTINEL_US: cutoff_us(cutoff), _SENTINEL_DAY: cutoff_business_day(cutoff)}
    out = sql
    for sentinel, value in values.items():
        out = re.sub(rf"(?<![\d.]){sentinel}(?![\d.])", str(value), out)
    return out


def _default_col(df: pd.DataFrame | ir.Table, ts_col: str | None) -> str:
    return ts_col or ("ts_us" if isinstance(df, ir.Table) else "ts")


def is_before(ts_us: ir.IntegerValue, cutoff: EngineCutoff | pd.Timestamp) -> ir.BooleanValue:
    """Engine condition ``ts < cutoff`` (the feature side of a cut)."""
    return ts_us < EngineCutoff.of(cutoff).us


def in_window(ts_us: ir.IntegerValue, start: EngineCutoff | pd.Timestamp, days: int) -> ir.BooleanValue:
    """Engine condition ``start <= ts < start + days`` (the label side of a cut)."""
    us = EngineCutoff.of(start).us
    return (ts_us >= us) & (ts_us < us + days * US_PER_DAY)


def before(df: Frame, cutoff: EngineCutoff | pd.Timestamp, ts_col: str | None = None) -> Frame:
    """Rows strictly before ``cutoff`` (the feature side of a cut).

    ``cutoff`` is a tz-aware timestamp (see :func:`cutoff_ts`), or for engine tables an
    :class:`EngineCutoff`; ``ts_col`` defaults to ``ts`` for pandas frames and ``ts_us`` for engine tables.
    """
    col = _default_col(df, ts_col)
    if isinstance(df, ir.Table):
        return df.filter(is_before(df[col], cutoff))
    return df[df[col] < cutoff]


def window(df: Frame, start: EngineCutoff | pd.Timestamp, days: int, ts_col: str | None = None) -> Frame:
    """Rows with ``start <= ts < start + days`` (the label side of a cut)."""
    col = _default_col(df, ts_col)
    if isinstance(df, ir.Table):
        return df.filter(in_window(df[col], start, days))
    end = start + pd.Timedelta(days=days)
    return df[(df[col] >= start) & (df[col] < end)]


def age_us(ts_us: ir.IntegerValue, cutoff: EngineCutoff | pd.Timestamp) -> ir.IntegerValue:
    """Microseconds from an engine timestamp to the cutoff (positive before it)."""
    return EngineCutoff.of(cutoff).us - ts_us


def business_day(age: ir.IntegerValue, cutoff: EngineCutoff | pd.Timestamp) -> ir.IntegerValue:
    """Business-calendar day number (as :func:`business_day_number`) of a record ``age`` µs before ``cutoff``.

    The cutoff is a business midnight, so a record ``a`` µs before it falls on business day
    ``day(cutoff) − ceil(a / 1 day)``; exact for timezones without daylight-saving shifts.
    """
    return EngineCutoff.of(cutoff).day - (age + (US_PER_DAY - 1)) // US_PER_DAY


@lru_cache(maxsize=8)
def require_fixed_offset(tz: str) -> None:
    """Refuse a business timezone whose UTC offset changes (daylight saving) since 2000."""
    stamps = pd.date_range("2000-01-01", "2040-01-01", freq="MS", tz=tz)
    offsets = {s.utcoffset() for s in stamps}
    if len(offsets) > 1:
        raise ValueError(
            f"business timezone {tz!r} changes its UTC offset (daylight saving); engine features count "
            "business days as whole 24-hour days and need a fixed-offset zone such as Asia/Shanghai"
        )

"""Calendar intensity of the synthetic world and the clock that maps world days to timestamps.

Purchases follow a Poisson process with rate ``λ · season(day) · diurnal(hour)``. ``season`` is a
daily multiplier (618 and Double-11 peaks, 12.12, the pre-festival 年货节 bump and the Spring
Festival dip) normalised to mean 1 over each calendar year; ``diurnal`` is an hourly profile with mean
1 over a day, so integrating over whole business days (cutoffs are midnights in Asia/Shanghai) sees
only the daily ``season`` value. The integrated intensity ``Λ(t)`` is piecewise linear on an hourly
grid, which makes both the forward map and its inverse exact with ``np.interp``: event times of the
inhomogeneous process are drawn uniformly in operational time and mapped back through ``Λ⁻¹``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from features.schema import BUSINESS_TZ

#: Spring Festival (正月初一) dates; the dip is centred on these days.
SPRING_FESTIVAL: tuple[str, ...] = (
    "2014-01-31", "2015-02-19", "2016-02-08", "2017-01-28", "2018-02-16", "2019-02-05",
    "2020-01-25", "2021-02-12", "2022-02-01", "2023-01-22", "2024-02-10", "2025-01-29",
    "2026-02-17", "2027-02-06", "2028-01-26", "2029-02-13", "2030-02-03", "2031-01-23",
    "2032-02-11", "2033-01-31", "2034-02-19", "2035-02-08", "2036-01-28",
)
_SF_DAYS = np.array(SPRING_FESTIVAL, dtype="datetime64[D]").astype(np.int64)
_SF_YEARS = np.array(SPRING_FESTIVAL, dtype="datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970

#: Hourly shopping profile (local hours 0..23): quiet nights, a lunch bump, an evening peak.
_DIURNAL_RAW = np.array(
    [0.35, 0.2, 0.12, 0.08, 0.06, 0.08, 0.2, 0.45, 0.75, 0.95, 1.1, 1.25,
     1.4, 1.25, 1.1, 1.05, 1.05, 1.1, 1.2, 1.45, 1.75, 1.9, 1.6, 0.9]
)
DIURNAL: np.ndarray = _DIURNAL_RAW / _DIURNAL_RAW.mean()


def _bump(d: np.ndarray, centre: np.ndarray, amp: float, sigma: float) -> np.ndarray:
    return amp * np.exp(-0.5 * ((d - centre) / sigma) ** 2)


def _window(d: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: float) -> np.ndarray:
    # A smooth plateau between lo and hi (logistic edges of about a day).
    return level / (1.0 + np.exp(-(d - lo))) / (1.0 + np.exp(-(hi - d)))


def _month_day(years: np.ndarray, month: int, day: int) -> np.ndarray:
    months = ((years - 1970) * 12 + (month - 1)).astype("datetime64[M]")
    return months.astype("datetime64[D]").astype(np.int64) + (day - 1)


def _spring_festival(years: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(_SF_YEARS, years)
    idx = np.clip(idx, 0, len(_SF_YEARS) - 1)
    known = _SF_YEARS[idx] == years
    # Outside the table: late January is a fair stand-in (the festival falls Jan 21 .. Feb 20).
    return np.where(known, _SF_DAYS[idx], _month_day(years, 2, 1))


def _raw_daily(days: np.ndarray) -> np.ndarray:
    """Un-normalised calendar intensity for day numbers (days since 1970-01-01, local dates)."""
    d = days.astype(np.float64)
    year = days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    raw = np.ones_like(d)
    # 618: a presale plateau from June 1 and the peak on June 18.
    raw += _window(d, _month_day(year, 6, 1), _month_day(year, 6, 20), 0.3)
    raw += _bump(d, _month_day(year, 6, 18), 1.4, 1.5)
    # Double 11: presale from Oct 24, a first-payment bump on Nov 1 and the big peak on Nov 11.
    raw += _window(d, _month_day(year, 10, 24), _month_day(year, 11, 12), 0.35)
    raw += _bump(d, _month_day(year, 11, 1), 0.5, 1.0)
    raw += _bump(d, _month_day(year, 11, 11), 2.4, 1.2)
    raw += _bump(d, _month_day(year, 12, 12), 0.4, 1.0)
    # Spring Festival: the 年货节 shopping bump ~2 weeks before, then logistics stop and demand dips.
    dip = np.ones_like(d)
    for offset in (-1, 0, 1):
        sf = _spring_festival(year + offset).astype(np.float64)
        raw += _bump(d, sf - 16.0, 0.25, 5.0)
        dip *= 1.0 - 0.6 * np.exp(-0.5 * ((d - sf - 2.0) / 5.0) ** 2)
    return raw * dip


def _year_means(years: np.ndarray) -> dict[int, float]:
    out: dict[int, float] = {}
    for y in np.unique(years).tolist():
        first = np.datetime64(f"{y:04d}-01-01").astype(np.int64)
        last = np.datetime64(f"{y + 1:04d}-01-01").astype(np.int64)
        out[y] = float(_raw_daily(np.arange(first, last)).mean())
    return out


def season_daily(days: np.ndarray) -> np.ndarray:
    """Calendar multiplier for local day numbers (days since 1970-01-01); mean 1 per calendar year."""
    days = np.asarray(days, dtype=np.int64)
    if days.size == 0:
        return np.zeros(0)
    years = days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    means = _year_means(years)
    uniq, inv = np.unique(years, return_inverse=True)
    norm = np.array([means[y] for y in uniq.tolist()])[inv]
    return _raw_daily(days) / norm


def _local_day_numbers(ts: object) -> np.ndarray:
    values = ts if isinstance(ts, (pd.Series, pd.Index)) else np.atleast_1d(np.asarray(ts, dtype=object))
    idx = pd.DatetimeIndex(pd.to_datetime(values))
    # Naive values are local business time; aware ones are converted to it.
    idx = idx.tz_localize(BUSINESS_TZ) if idx.tz is None else idx.tz_convert(BUSINESS_TZ)
    local = idx.tz_localize(None).normalize()
    return local.values.astype("datetime64[D]").astype(np.int64)


def season_multiplier(ts: object) -> np.ndarray:
    """Calendar purchase intensity at ``ts`` (timestamps or dates), mean ≈ 1 over each year.

    Peaks around 618 (June 18) and Double 11 (November 11), a smaller 12.12, the 年货节 bump and a
    Spring Festival dip. Naive timestamps and plain dates are read as business-timezone local time;
    the value is constant within a business day (the hourly profile of the world integrates to 1).
    """
    return season_daily(_local_day_numbers(ts))


def business_midnight(d: date | str | pd.Timestamp) -> pd.Timestamp:
    """Midnight of business date ``d`` in the business timezone, as a UTC timestamp."""
    day = pd.Timestamp(d)
    if day.tz is not None:
        day = day.tz_convert(BUSINESS_TZ).tz_localize(None)
    return pd.Timestamp(day.normalize()).tz_localize(BUSINESS_TZ).tz_convert("UTC")


@dataclass(frozen=True)
class Clock:
    """World time in fractional days since ``start`` (local midnight) with the integrated intensity.

    ``cum(t)`` is ``Λ(t) = ∫₀ᵗ season·diurnal``; ``inv`` its inverse; ``n_days`` the length of the
    observation period (``end`` inclusive), so valid world times lie in ``[0, n_days)``.
    """

    start: date
    n_days: int
    t0_ns: int
    grid: np.ndarray  # Λ at every hour boundary, length 24·n_days + 1
    daily: np.ndarray  # season multiplier of each world day

    @classmethod
    def build(cls, start: date, end: date, season: bool) -> Clock:
        n_days = (end - start).days + 1
        day0 = np.datetime64(start.isoformat(), "D").astype(np.int64)
        daily = season_daily(np.arange(day0, day0 + n_days)) if season else np.ones(n_days)
        hourly = np.repeat(daily, 24) * np.tile(DIURNAL, n_days) / 24.0
        grid = np.concatenate([[0.0], np.cumsum(hourly)])
        return cls(start, n_days, business_midnight(start).value, grid, daily)

    def cum(self, t: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(t, dtype=np.float64) * 24.0, self._hours, self.grid)

    def inv(self, tau: np.ndarray) -> np.ndarray:
        return np.interp(tau, self.grid, self._hours) / 24.0

    @property
    def _hours(self) -> np.ndarray:
        return np.arange(self.grid.size, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.grid[-1])

    def to_utc(self, t: np.ndarray) -> pd.DatetimeIndex:
        """World days → tz-aware UTC timestamps, floored to whole seconds (stays inside the period)."""
        secs = np.floor(np.asarray(t, dtype=np.float64) * 86400.0).astype(np.int64)
        ns = self.t0_ns + secs * 1_000_000_000
        return pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC")

    def from_utc(self, ts: pd.Timestamp) -> float:
        """A timestamp → world days (may fall outside the period)."""
        return (pd.Timestamp(ts).value - self.t0_ns) / 86_400e9

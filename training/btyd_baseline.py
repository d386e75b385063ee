"""BTYD inside the classifier pipeline: per-cutoff BG/NBD features, BTYD baselines, the CLV bundle.

The math lives in :mod:`training.clv`; this module only decides *what is fitted on which rows*:

* :func:`add_btyd_features` fits one BG/NBD (+ Gamma-Gamma) per cutoff on that cutoff's snapshot rows
  — every input is built from records before the cutoff, so the features are point-in-time — and adds
  P(alive), expected purchases over 30/90 days and CLV as ``btyd_*`` columns. A fit that fails even
  with the escalating penalizers gives NaN features for that cutoff (LightGBM handles missing values)
  and is reported, never raised: a nightly job must not crash on one bad month (REAL-DATA #1).
* :func:`true_param_model` builds the BG/NBD with the synthetic generator's *true* parameters.
* :class:`BTYDBundle` is the registered CLV model: BG/NBD + Gamma-Gamma parameters as JSON.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training import clv

#: Snapshot columns holding the BTYD summary, in days (x = repeat purchase days, t_x, T, mean spend).
FREQUENCY, RECENCY, AGE, MONETARY = "btyd_x", "btyd_t_x_days", "btyd_T_days", "btyd_monetary"
BTYD_INPUTS = (FREQUENCY, RECENCY, AGE, MONETARY)


@dataclass
class BTYDFit:
    """One cutoff's BTYD fit (or the reason there is none)."""

    cutoff: pd.Timestamp
    bg: clv.BetaGeoModel | None
    gg: clv.GammaGammaModel | None
    n_rows: int
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """Flat summary for logging: parameters, penalizer used, row count, notes."""
        out: dict[str, Any] = {"cutoff": self.cutoff.date().isoformat(), "n_rows": self.n_rows,
                               "bg_ok": self.bg is not None, "gg_ok": self.gg is not None,
                               "notes": " | ".join(self.notes)}
        if self.bg is not None:
            out.update({f"bg_{k}": v for k, v in self.bg.params_.items()})
            out["bg_penalizer"] = self.bg.penalizer_used_
        if self.gg is not None:
            out.update({f"gg_{k}": v for k, v in self.gg.params_.items()})
            out["gg_penalizer"] = self.gg.penalizer_used_
        return out


def _buyers(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with a first purchase before the cutoff (BG/NBD needs T > 0 and 0 <= t_x <= T)."""
    missing = [c for c in BTYD_INPUTS if c not in rows.columns]
    if missing:
        raise ValueError(f"snapshot lacks the BTYD summary columns {missing}")
    ok = rows[AGE].notna() & (rows[AGE] > 0) & rows[FREQUENCY].notna() & rows[RECENCY].notna()
    return rows.loc[ok]


def fit_btyd(rows: pd.DataFrame, cutoff: Any, penalizers: list[float] | None = None) -> BTYDFit:
    """Fit BG/NBD and Gamma-Gamma on one cutoff's snapshot rows; failures become notes, not errors."""
    buyers = _buyers(rows)
    pens = penalizers or [0.0, 1e-3, 1e-2, 1e-1]
    fit = BTYDFit(pd.Timestamp(cutoff), None, None, len(buyers))
    if len(buyers) < 20:
        fit.notes.append(f"only {len(buyers)} buyers: no BTYD fit")
        return fit
    quiet = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(quiet):
        warnings.simplefilter("always")
        try:
            fit.bg = clv.BetaGeoModel(penalizer=pens[0], penalizer_schedule=tuple(pens[1:])).fit(
                buyers[FREQUENCY], buyers[RECENCY], buyers[AGE])
            fit.notes += [str(w) for w in fit.bg.fit_warnings_]
        except Exception as exc:  # noqa: BLE001 - reported, the pipeline carries on
            fit.notes.append(f"BG/NBD failed: {type(exc).__name__}: {exc}"[:500])
        try:
            fit.gg = clv.GammaGammaModel(penalizer=pens[0], penalizer_schedule=tuple(pens[1:])).fit(
                buyers[FREQUENCY], buyers[MONETARY].fillna(0.0))
        except Exception as exc:  # noqa: BLE001
            fit.notes.append(f"Gamma-Gamma failed: {type(exc).__name__}: {exc}"[:500])
    fit.notes += [str(w.message)[:300] for w in caught if issubclass(w.category, clv.CLVWarning)]
    return fit


def btyd_feature_names(horizons_days: list[int]) -> list[str]:
    """Names of the BTYD features, in order."""
    return ["btyd_p_alive", *[f"btyd_exp_purchases_{h}d" for h in horizons_days], "btyd_clv"]


def btyd_feature_arrays(fit: BTYDFit, summary: np.ndarray, horizons_days: list[int], months: int,
                        monthly_discount_rate: float) -> dict[str, np.ndarray]:
    """The BTYD features from the (x, t_x, T, mean spend) summary in days, one float array each.

    ``summary`` holds :data:`BTYD_INPUTS` as columns. Rows without a purchase history (T missing or 0,
    x or t_x missing) and every row of a failed fit get NaN.
    """
    n = len(summary)
    out = {c: np.full(n, np.nan) for c in btyd_feature_names(horizons_days)}
    x, t_x, T, m = (summary[:, i] for i in range(4))
    with np.errstate(invalid="ignore"):
        ok = ~np.isnan(T) & (T > 0) & ~np.isnan(x) & ~np.isnan(t_x)
    if fit.bg is None or not ok.any():
        return out
    x, t_x, T, m = x[ok], t_x[ok], T[ok], np.where(np.isnan(m[ok]), 0.0, m[ok])
    out["btyd_p_alive"][ok] = fit.bg.p_alive(x, t_x, T)
    for h in horizons_days:
        out[f"btyd_exp_purchases_{h}d"][ok] = fit.bg.expected_purchases(float(h), x, t_x, T)
    if fit.gg is not None:
        out["btyd_clv"][ok] = clv.customer_lifetime_value(
            fit.bg, fit.gg, x, t_x, T, m, months=months, monthly_discount_rate=monthly_discount_rate,
            time_unit_days=1.0)
    return out


def btyd_feature_frame(fit: BTYDFit, rows: pd.DataFrame, horizons_days: list[int], months: int,
                       monthly_discount_rate: float) -> pd.DataFrame:
    """``btyd_p_alive``, ``btyd_exp_purchases_{h}d``, ``btyd_clv`` for ``rows`` (NaN where undefined)."""
    missing = [c for c in BTYD_INPUTS if c not in rows.columns]
    if missing:
        raise ValueError(f"snapshot lacks the BTYD summary columns {missing}")
    summary = np.column_stack([rows[c].to_numpy(dtype=float, na_value=np.nan) for c in BTYD_INPUTS])
    arrays = btyd_feature_arrays(fit, summary, horizons_days, months, monthly_discount_rate)
    return pd.DataFrame(arrays, index=rows.index)


def add_btyd_features(
    df: pd.DataFrame,
    horizons_days: list[int],
    months: int = 12,
    monthly_discount_rate: float = 0.01,
    penalizers: list[float] | None = None,
    progress: Any = None,
) -> tuple[pd.DataFrame, list[BTYDFit]]:
    """Add BTYD features to a stacked training frame, one fit per distinct ``cutoff``."""
    parts, fits = [], []
    # Row positions per cutoff, each cutoff's rows taken in turn: one cutoff's copy in memory, not all.
    groups = list(df.groupby("cutoff", sort=True).indices.items())
    for cutoff, positions in progress(groups, desc="BTYD fits per cutoff") if progress else groups:
        rows = df.iloc[positions]
        fit = fit_btyd(rows, cutoff, penalizers)
        fits.append(fit)
        parts.append(btyd_feature_frame(fit, rows, horizons_days, months, monthly_discount_rate))
    feats = pd.concat(parts).loc[df.index] if parts else pd.DataFrame(index=df.index)
    return pd.concat([df, feats], axis=1), fits


def true_param_model(r: float, alpha: float, a: float, b: float) -> clv.BetaGeoModel:
    """A BG/NBD fixed at known parameters (e.g. the synthetic generator's truth)."""
    return clv.BetaGeoModel.from_dict({
        "kind": "BetaGeoModel", "version": 1, "model": "bgnbd", "penalizer": 0.0, "penalizer_schedule": [],
        "params": {"r": r, "alpha": alpha, "a": a, "b": b}, "loglik": float("nan"),
        "log_covariance": np.zeros((4, 4)).tolist(), "penalizer_used": 0.0, "fit_warnings": [],
        "n_customers": 0, "n_distinct": 0,
    })


def expected_purchases(bg: clv.BetaGeoModel, rows: pd.DataFrame, horizon_days: float) -> np.ndarray:
    """E[purchases in the next ``horizon_days``] per row; customers without a purchase get E[X(t)]."""
    out = np.full(len(rows), float(bg.expected_purchases_population(horizon_days)))
    buyers = _buyers(rows)
    pos = rows.index.get_indexer(buyers.index)
    out[pos] = bg.expected_purchases(float(horizon_days), buyers[FREQUENCY], buyers[RECENCY], buyers[AGE])
    return out


def p_alive(bg: clv.BetaGeoModel, rows: pd.DataFrame) -> np.ndarray:
    """P(alive) per row (1 for customers without a purchase on record)."""
    out = np.ones(len(rows))
    buyers = _buyers(rows)
    out[rows.index.get_indexer(buyers.index)] = bg.p_alive(buyers[FREQUENCY], buyers[RECENCY], buyers[AGE])
    return out


# ------------------------------------------------------------------------------ registered CLV model


@dataclass
class BTYDBundle:
    """The registered CLV model: a fitted BG/NBD + Gamma-Gamma and how CLV is computed from them."""

    bg: clv.BetaGeoModel
    gg: clv.GammaGammaModel
    months: int = 12
    monthly_discount_rate: float = 0.01
    horizons_days: tuple[int, ...] = (30, 90)

    def predict_frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        """P(alive), expected purchases per horizon, expected spend per order and discounted CLV."""
        rows = pd.DataFrame(rows).reset_index(drop=True)
        fit = BTYDFit(pd.Timestamp(0), self.bg, self.gg, len(rows))
        out = btyd_feature_frame(fit, rows, list(self.horizons_days), self.months, self.monthly_discount_rate)
        out.columns = [c.removeprefix("btyd_") for c in out.columns]
        buyers = _buyers(rows)
        out["expected_spend"] = np.nan
        out.loc[buyers.index, "expected_spend"] = self.gg.expected_spend(
            buyers[FREQUENCY], buyers[MONETARY].fillna(0.0))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters of both models plus the CLV settings."""
        return {"bg": self.bg.to_dict(), "gg": self.gg.to_dict(), "months": self.months,
                "monthly_discount_rate": self.monthly_discount_rate,
                "horizons_days": list(self.horizons_days)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BTYDBundle:
        """Rebuild from :meth:`to_dict` output."""
        return cls(clv.BetaGeoModel.from_dict(d["bg"]), clv.GammaGammaModel.from_dict(d["gg"]),
                   int(d["months"]), float(d["monthly_discount_rate"]), tuple(d["horizons_days"]))

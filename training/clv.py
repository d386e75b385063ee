"""BTYD customer-lifetime-value models: BG/NBD (or Pareto/NBD, MBG/NBD) + Gamma-Gamma, in one place.

The math of every model lives in this file, each formula citing the equation it implements:

- **BG/NBD** — Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way: An Alternative
  to the Pareto/NBD Model", Marketing Science 24(2): log-likelihood eq. (6) in the numerically
  stable form of section 7 / Hardie's note 004; unconditional E[X(t)] eq. (9); conditional
  E[Y(t) | x, t_x, T] eq. (10); P(alive) from Fader, Hardie & Lee (2008) "Computing P(alive) using
  the BG/NBD model" (brucehardie.com note 021) eq. (2).
- **MBG/NBD** — Batislam, Denizel & Filiztekin (2007), "Empirical validation and comparison of
  models for customer base analysis", IJRM 24(3): the BG/NBD with a dropout chance at time 0.
- **Pareto/NBD** — Schmittlein, Morrison & Colombo (1987); formulas as in Fader & Hardie (2005)
  "A Note on Deriving the Pareto/NBD Model and Related Expressions" (note 009): likelihood eqs.
  (18)-(20), P(alive) eq. (36)/(37), E[X(t)] eq. (27), conditional expectation eq. (41).
- **Gamma-Gamma** — Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value" (note 025):
  likelihood of the mean spend eq. (1a), conditional expected mean spend eq. (5).

Maximum likelihood runs on the data *collapsed* to distinct (x, t_x, T) rows with the number of
customers as weights — the same likelihood, far fewer rows. Pareto/NBD and MBG/NBD use ``lifetimes``
(0.11.3) fitters; BG/NBD and Gamma-Gamma, fitted on every cutoff of every training run, run lifetimes'
own procedure (time rescaling, start, BFGS, tolerance) on closed-form gradients instead of autograd's
(:class:`_BGNBDObjective`, :class:`_GammaGammaObjective`), and their estimates equal lifetimes' (tested
on CDNOW).
Predictions are our own vectorised numpy closed forms (tested against lifetimes). Time is in
whatever unit the data uses (weeks for CDNOW, days for siyu's histories); functions that convert
to calendar months take ``time_unit_days`` (7 for weeks, 1 for days).

Public API
----------
``BetaGeoModel(penalizer=0.0, model="bgnbd"|"pareto"|"mbgnbd")``
    ``.fit(frequency, recency, T)`` -> self. Fitted: ``params_`` (dict), ``loglik_`` (total
    log-likelihood), ``log_covariance_`` / ``covariance_`` (asymptotic covariance of log-params /
    params), ``penalizer_used_``, ``fit_warnings_``, ``n_customers_``, ``n_distinct_``.
    A non-converging or degenerate fit (REAL-DATA #1) is retried with an escalating penalizer.
    ``.p_alive(frequency, recency, T)``, ``.expected_purchases(t, frequency, recency, T)``
    (conditional, any horizon ``t`` in the data's time unit), ``.expected_purchases_population(t)``.
``GammaGammaModel(penalizer=0.0)``
    ``.fit(frequency, monetary)`` on repeat buyers with strictly positive mean spend; exclusions in
    ``n_excluded_`` by reason; warns when |corr(frequency, monetary)| > 0.3.
    ``.expected_spend(frequency, monetary)``.
``customer_lifetime_value(bg, gg, frequency, recency, T, monetary, months=12,
monthly_discount_rate=0.01, time_unit_days=7)``
    Discounted CLV, equal to lifetimes' ``GammaGammaFitter.customer_lifetime_value``.
``clv_interval(...)``
    Per-customer CLV intervals from parameter uncertainty (seeded draws from the MLE's asymptotic
    normal in log-parameter space).
``btyd_features(bg, gg, frequency, recency, T, monetary, time_unit_days=1, horizons_days=(30, 90))``
    The BTYD outputs offered as classifier features: ``p_alive``, ``exp_purchases_{h}d``, ``clv``.
    Fit the models only on data before the cutoff the features are for.
``calibration_holdout_table(...)`` / ``plot_calibration_holdout(table)``
    Holdout frequency vs prediction by calibration frequency 0..7+, as a table and a Figure.
``model_from_dict(d)``
    Both models serialise to plain JSON-able dicts (``to_dict`` / ``from_dict``); no pickle.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.special import digamma, expit, gammaln, hyp2f1, logsumexp

log = logging.getLogger(__name__)

ArrayLike = np.ndarray | pd.Series | Sequence[float]
ModelName = Literal["bgnbd", "pareto", "mbgnbd"]

#: Penalizers tried, in order, after the requested one fails (REAL-DATA #1: 1e-3 usually suffices).
PENALIZER_SCHEDULE: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
#: A fitted parameter outside [DEGENERATE_LOW, DEGENERATE_HIGH] marks a degenerate fit: BG/NBD ``a``
#: running to 0, or ``a`` and ``b`` running off to infinity together.
DEGENERATE_LOW = 1e-4
DEGENERATE_HIGH = 1e6
#: lifetimes' periods-per-month per time unit ({"W": 4.345, "D": 30, "H": 720, "M": 1}).
_LIFETIMES_PERIODS_PER_MONTH = {7.0: 4.345, 1.0: 30.0, 1.0 / 24.0: 30.0 * 24.0, 30.0: 1.0}
_SERIAL_VERSION = 1


class BTYDFitError(RuntimeError):
    """Every penalizer in the schedule failed; the message lists each attempt."""


class CLVWarning(UserWarning):
    """A model-assumption or fitting problem worth a line in the run's log."""


# --------------------------------------------------------------------------------------------
# Input validation (every bad row reported at once)
# --------------------------------------------------------------------------------------------


def _as_float(name: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _rows(mask: np.ndarray, limit: int = 200) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(map(str, idx[:limit]))
    more = f" ... ({len(idx)} rows in all)" if len(idx) > limit else ""
    return f"[{shown}{more}]"


def _raise_problems(problems: list[str], what: str) -> None:
    if problems:
        raise ValueError(
            f"invalid {what} input ({len(problems)} problems, row positions):\n  - " + "\n  - ".join(problems)
        )


def validate_rft(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> tuple[np.ndarray, ...]:
    """Check (x, t_x, T) and return them as float arrays; raise ValueError listing every bad row.

    Rules: equal lengths, non-empty, finite, x a non-negative integer, 0 <= t_x <= T,
    t_x == 0 when x == 0.
    """
    x, t_x, T_ = _as_float("frequency", frequency), _as_float("recency", recency), _as_float("T", T)
    if not (len(x) == len(t_x) == len(T_)):
        raise ValueError(f"frequency, recency, T lengths differ: {len(x)}, {len(t_x)}, {len(T_)}")
    if len(x) == 0:
        raise ValueError("frequency, recency, T are empty")
    problems: list[str] = []
    checks = {
        "non-finite frequency/recency/T": ~(np.isfinite(x) & np.isfinite(t_x) & np.isfinite(T_)),
        "frequency negative or not an integer": (x < 0) | (x != np.round(x)),
        "recency negative": t_x < 0,
        "recency greater than T": t_x > T_,
        "recency non-zero with frequency 0": (x == 0) & (t_x != 0),
    }
    for label, mask in checks.items():
        if mask.any():
            problems.append(f"{label}: {_rows(mask)}")
    _raise_problems(problems, "BTYD (frequency, recency, T)")
    if not T_.max() > 0:
        raise ValueError("every T is 0: customers need some observation time")
    return x, t_x, T_


def collapse_rft(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> pd.DataFrame:
    """Distinct (x, t_x, T) rows with ``weights`` = number of customers sharing them (sorted)."""
    df = pd.DataFrame({"x": x, "t_x": t_x, "T": T})
    out = df.groupby(["x", "t_x", "T"], sort=True).size().rename("weights").reset_index()
    return out


# --------------------------------------------------------------------------------------------
# The math: one small set of closed forms per model. params are plain floats.
# Conditional expectations factor as E[Y(t) | x, t_x, T] = scale(x, t_x, T) * path(t, x, T); the
# CLV sums path over months on distinct (x, T) only, which is what makes it fast.
# --------------------------------------------------------------------------------------------


def _bgnbd_loglik(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """FHL (2005) eq. (6), stable form of section 7: per-row log-likelihood."""
    r, alpha, a, b = p
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(t_x + alpha)
    a4 = np.where(x > 0, a4, -np.inf)  # the second term exists only for repeat buyers
    return a1 + a2 + np.logaddexp(a3, a4)


def _bgnbd_p_alive(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """FHL (2008) note 021 eq. (2): 1 / (1 + [x>0] a/(b+x-1) ((α+T)/(α+t_x))^(r+x))."""
    r, alpha, a, b = p
    log_div = (r + x) * np.log((alpha + T) / (alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


def _bgnbd_population(p: Sequence[float], t: np.ndarray) -> np.ndarray:
    """FHL (2005) eq. (9): E[X(t)] = (a+b-1)/(a-1) [1 - (α/(α+t))^r 2F1(r, b; a+b-1; t/(α+t))]."""
    r, alpha, a, b = p
    hyp = hyp2f1(r, b, a + b - 1, t / (alpha + t))
    return (a + b - 1) / (a - 1) * (1 - hyp * (alpha / (alpha + t)) ** r)


def _bgnbd_scale(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """FHL (2005) eq. (10), denominator: 1 / (1 + [x>0] a/(b+x-1) ((α+T)/(α+t_x))^(r+x))."""
    r, alpha, a, b = p
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = (x > 0) * (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x)
    return 1.0 / (1.0 + np.where(x > 0, odds, 0.0))


def _bgnbd_path(p: Sequence[float], t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """FHL (2005) eq. (10), numerator:
    (a+b+x-1)/(a-1) [1 - ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(α+T+t))]."""
    r, alpha, a, b = p
    _a, _b, _c = r + x, b + x, a + b + x - 1
    z = t / (alpha + T + t)
    log_ratio = (r + x) * np.log((alpha + T) / (alpha + t + T))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        hyp = hyp2f1(_a, _b, _c, z)
        # 2F1 may be negative when c = a+b+x-1 < 0 (no-dropout fits: a → 0, b < 1, x = 0), so it is
        # multiplied in directly; lifetimes takes its log and returns NaN there.
        term = hyp * np.exp(log_ratio)
        bad = ~np.isfinite(hyp)
        if np.any(bad):  # Euler's transformation where 2F1 overflows (as lifetimes does)
            alt = np.log(hyp2f1(_c - _a, _c - _b, _c, z)) + (_c - _a - _b) * np.log(1 - z)
            term = np.where(bad, np.exp(alt + log_ratio), term)
    first = (a + b + x - 1) / (a - 1)
    return first * (1 - term)


def _mbgnbd_loglik(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Batislam et al. (2007): BG/NBD likelihood with dropout possible at time 0 (per row)."""
    r, alpha, a, b = p
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x + 1) - gammaln(b) - gammaln(a + b + x + 1)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return a1 + a2 + a3 + np.logaddexp(a4, 0)


def _mbgnbd_p_alive(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Batislam et al. (2007): 1 / (1 + a/(b+x) ((α+T)/(α+t_x))^(r+x))."""
    r, alpha, a, b = p
    return 1.0 / (1 + (a / (b + x)) * ((alpha + T) / (alpha + t_x)) ** (r + x))


def _mbgnbd_population(p: Sequence[float], t: np.ndarray) -> np.ndarray:
    """Batislam et al. (2007): E[X(t)] = b/(a-1) [1 - (α/(α+t))^r 2F1(r, b+1; a+b; t/(α+t))]."""
    r, alpha, a, b = p
    hyp = hyp2f1(r, b + 1, a + b, t / (alpha + t))
    return b / (a - 1) * (1 - hyp * (alpha / (alpha + t)) ** r)


def _mbgnbd_scale(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    return _mbgnbd_p_alive(p, x, t_x, T)


def _mbgnbd_path(p: Sequence[float], t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Batislam et al. (2007) conditional expectation numerator."""
    r, alpha, a, b = p
    hyp = hyp2f1(r + x, b + x + 1, a + b + x, t / (alpha + T + t))
    return (a + b + x) / (a - 1) * (1 - hyp * ((alpha + T) / (alpha + t + T)) ** (r + x))


def _pareto_log_a0(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Fader & Hardie (2005) note 009 eqs. (19)-(20): log A_0 (case split on α vs β)."""
    r, alpha, s, beta = p
    if alpha < beta:
        lo, hi, t = alpha, beta, r + x
    else:
        lo, hi, t = beta, alpha, s + 1
    rsx = r + s + x
    p1 = hyp2f1(rsx, t, rsx + 1.0, (hi - lo) / (hi + t_x))
    q1 = hi + t_x
    p2 = hyp2f1(rsx, t, rsx + 1.0, (hi - lo) / (hi + T))
    q2 = hi + T
    l1, l2 = np.broadcast_arrays(np.log(p1) + rsx * np.log(q2), np.log(p2) + rsx * np.log(q1))
    signs = np.stack([np.ones_like(l1), -np.ones_like(l1)])
    return logsumexp(np.stack([l1, l2]), axis=0, b=signs) - rsx * np.log(q1 * q2)


def _pareto_loglik(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Fader & Hardie (2005) note 009 eq. (18): per-row log-likelihood."""
    r, alpha, s, beta = p
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    a2 = np.logaddexp(
        -(r + x) * np.log(alpha + T) - s * np.log(beta + T),
        np.log(s) + _pareto_log_a0(p, x, t_x, T) - np.log(r + s + x),
    )
    return a1 + a2


def _pareto_p_alive(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Fader & Hardie (2005) note 009 eqs. (36)-(37)."""
    r, alpha, s, beta = p
    a0 = _pareto_log_a0(p, x, t_x, T)
    return 1.0 / (
        1.0 + np.exp(np.log(s) - np.log(r + s + x) + (r + x) * np.log(alpha + T) + s * np.log(beta + T) + a0)
    )


def _pareto_population(p: Sequence[float], t: np.ndarray) -> np.ndarray:
    """Fader & Hardie (2005) note 009 eq. (27): E[X(t)] = rβ/(α(s-1)) [1 - (β/(β+t))^(s-1)]."""
    r, alpha, s, beta = p
    return r * beta / alpha / (s - 1) * (1 - (beta / (beta + t)) ** (s - 1))


def _pareto_scale(p: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Fader & Hardie (2005) note 009 eq. (41): the history-dependent factor."""
    r, alpha, s, beta = p
    first = (
        gammaln(r + x)
        - gammaln(r)
        + r * np.log(alpha)
        + s * np.log(beta)
        - (r + x) * np.log(alpha + T)
        - s * np.log(beta + T)
    )
    second = np.log(r + x) + np.log(beta + T) - np.log(alpha + T)
    return np.exp(first + second - _pareto_loglik(p, x, t_x, T))


def _pareto_path(p: Sequence[float], t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Fader & Hardie (2005) note 009 eq. (41): (1 - ((β+T)/(β+T+t))^(s-1)) / (s-1)."""
    r, alpha, s, beta = p
    return (1 - ((beta + T) / (beta + T + t)) ** (s - 1)) / (s - 1) + 0 * x


@dataclass(frozen=True)
class _ModelMath:
    """One BTYD model: parameter names, its lifetimes fitter and its closed forms."""

    param_names: tuple[str, ...]
    fitter: str  # class name in lifetimes
    loglik: Callable[..., np.ndarray]
    p_alive: Callable[..., np.ndarray]
    population: Callable[..., np.ndarray]
    scale: Callable[..., np.ndarray]
    path: Callable[..., np.ndarray]


_MODELS: dict[str, _ModelMath] = {
    "bgnbd": _ModelMath(
        ("r", "alpha", "a", "b"),
        "BetaGeoFitter",
        _bgnbd_loglik,
        _bgnbd_p_alive,
        _bgnbd_population,
        _bgnbd_scale,
        _bgnbd_path,
    ),
    "mbgnbd": _ModelMath(
        ("r", "alpha", "a", "b"),
        "ModifiedBetaGeoFitter",
        _mbgnbd_loglik,
        _mbgnbd_p_alive,
        _mbgnbd_population,
        _mbgnbd_scale,
        _mbgnbd_path,
    ),
    "pareto": _ModelMath(
        ("r", "alpha", "s", "beta"),
        "ParetoNBDFitter",
        _pareto_loglik,
        _pareto_p_alive,
        _pareto_population,
        _pareto_scale,
        _pareto_path,
    ),
}


def _gg_loglik(p: Sequence[float], x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Fader & Hardie (2013) note 025 eq. (1a): log f(m̄ | p, q, γ; x) of a repeat buyer's mean spend."""
    pp, q, v = p
    return (
        gammaln(pp * x + q)
        - gammaln(pp * x)
        - gammaln(q)
        + q * np.log(v)
        + (pp * x - 1) * np.log(m)
        + pp * x * np.log(x)
        - (pp * x + q) * np.log(x * m + v)
    )


def _gg_expected_spend(p: Sequence[float], x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Fader & Hardie (2013) note 025 eq. (5): E[M | p, q, γ; m̄, x], a weighted mean of the
    population mean γp/(q-1) and the customer's own mean m̄ (weight px/(px+q-1))."""
    pp, q, v = p
    w = pp * x / (pp * x + q - 1)
    return (1 - w) * (v * pp / (q - 1)) + w * m


# --------------------------------------------------------------------------------------------
# Fitting helpers: penalizer escalation, numerical Hessian, parameter draws
# --------------------------------------------------------------------------------------------


def _lifetimes_fitter(name: str, penalizer: float) -> Any:
    import lifetimes  # imported lazily: it sets warning filters and loads autograd at import

    return getattr(lifetimes, name)(penalizer_coef=penalizer)


def _fit_escalating(
    fit_one: Callable[[float], tuple[np.ndarray, np.ndarray | None]],
    penalizer: float,
    schedule: Sequence[float],
    what: str,
) -> tuple[np.ndarray, np.ndarray | None, float, list[str]]:
    """Run ``fit_one(penalizer)`` -> (params, Hessian or None); on ConvergenceError or degenerate
    parameters retry with each larger penalizer of ``schedule``.
    Returns (params, Hessian, penalizer used, warnings recorded)."""
    from lifetimes.utils import ConvergenceError

    notes: list[str] = []
    tries = [penalizer] + [p for p in schedule if p > penalizer]
    for pen in tries:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # lifetimes prints the optimizer dump
                params, hess = fit_one(pen)
                params = np.asarray(params, dtype=float)
        except (ConvergenceError, FloatingPointError, np.linalg.LinAlgError) as exc:
            notes.append(f"{what}: no convergence with penalizer {pen:g} ({type(exc).__name__})")
            continue
        in_range = (params >= DEGENERATE_LOW) & (params <= DEGENERATE_HIGH)
        if not np.all(np.isfinite(params) & in_range):
            notes.append(
                f"{what}: degenerate parameters {np.round(params, 6).tolist()} with penalizer {pen:g}"
            )
            continue
        if pen != penalizer:
            notes.append(f"{what}: fitted with escalated penalizer {pen:g}")
        for note in notes:
            log.warning(note)
            warnings.warn(note, CLVWarning, stacklevel=3)
        return params, hess, pen, notes
    raise BTYDFitError(f"{what}: every penalizer failed:\n  " + "\n  ".join(notes))


class _ClosedFormObjective:
    """A lifetimes objective (weighted mean negative log-likelihood in log-parameters, plus ``pen`` ·
    Σ params²) with its gradient written out: ``__call__(log_p) -> (value, gradient)``.

    lifetimes differentiates the same expressions with autograd on every evaluation; the closed-form
    gradients cost a fraction of that, and terms that depend on the parameters and x only are
    evaluated once per distinct x.
    """

    def __call__(self, log_p: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def hessian(self, log_p: np.ndarray, h: float = 1e-5) -> np.ndarray:
        """Central differences of the closed-form gradient."""
        k = len(log_p)
        H = np.empty((k, k))
        for i in range(k):
            step = np.zeros(k)
            step[i] = h
            H[i] = (self(log_p + step)[1] - self(log_p - step)[1]) / (2 * h)
        return (H + H.T) / 2


class _BGNBDObjective(_ClosedFormObjective):
    """BG/NBD: FHL (2005) eq. (6) on rescaled time, as lifetimes' ``BetaGeoFitter`` writes it; the
    gradient's digamma terms follow FHL 2005 section 7. The row loop is compiled
    (:func:`training._btyd_kernel.bgnbd_terms`); the terms in x only are evaluated per distinct x here."""

    def __init__(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, w: np.ndarray, pen: float):
        from training._btyd_kernel import bgnbd_terms  # numba: compiled (and cached) on first use

        self._terms = bgnbd_terms
        self.ux, ix = np.unique(x, return_inverse=True)
        self.ix = ix.astype(np.int64).ravel()
        self.x, self.t_x, self.T = (np.ascontiguousarray(v, dtype=np.float64) for v in (x, t_x, T))
        self.pen = pen
        self.w = np.ascontiguousarray(w / w.sum(), dtype=np.float64)
        self.ux_shift = np.maximum(self.ux, 1) - 1  # b + max(x, 1) − 1, as lifetimes writes the fourth term

    def __call__(self, log_p: np.ndarray) -> tuple[float, np.ndarray]:
        r, alpha, a, b = p = np.exp(log_p)
        ux = self.ux
        g = gammaln(r + ux) - gammaln(r) + gammaln(a + b) + gammaln(b + ux) - gammaln(b) - gammaln(a + b + ux)
        d_r = digamma(r + ux) - digamma(r)
        d_a = digamma(a + b) - digamma(a + b + ux)
        d_b = d_a + digamma(b + ux) - digamma(b)
        terms = self._terms(
            r, alpha, a, self.x, self.t_x, self.T, self.w, self.ix, g, d_r, d_a, d_b, b + self.ux_shift
        )
        sums = terms.sum(axis=1)  # numpy's pairwise sums: the same bits whatever the thread count
        value = -float(sums[0]) + self.pen * float(np.sum(p**2))
        return value, (-sums[1:] + 2 * self.pen * p) * p  # chain rule to log-parameters


class _GammaGammaObjective(_ClosedFormObjective):
    """Gamma-Gamma: note 025 eq. (1a), as lifetimes' ``GammaGammaFitter`` writes it. With P = p·x,
    ∂/∂p = x (ψ(P+q) − ψ(P) + log m̄ + log x − log(x m̄ + γ)), ∂/∂q = ψ(P+q) − ψ(q) + log γ − log(x m̄ + γ),
    ∂/∂γ = q/γ − (P+q)/(x m̄ + γ)."""

    def __init__(self, x: np.ndarray, m: np.ndarray, w: np.ndarray, pen: float):
        self.ux, self.ix = np.unique(x, return_inverse=True)
        self.x, self.pen = x, pen
        self.w = w / w.sum()
        self.xm = x * m
        self.wx = self.w * x
        # The terms in log m̄ and log x do not depend on the parameters: their weighted sums, once.
        self.w_log_m = float(self.w @ np.log(m))
        self.w_x_log_mx = float(self.wx @ (np.log(m) + np.log(x)))

    def __call__(self, log_p: np.ndarray) -> tuple[float, np.ndarray]:
        p, q, v = params = np.exp(log_p)
        ux, ix, w, wx = self.ux, self.ix, self.w, self.wx
        # Terms in x only, evaluated on the distinct x and gathered per row.
        g = gammaln(p * ux + q) - gammaln(p * ux)
        psi_pq = digamma(p * ux + q)
        d_p = ux * (psi_pq - digamma(p * ux))
        L = np.log(self.xm + v)
        wL, wxL = float(w @ L), float(wx @ L)
        # Σ w (P − 1) log m̄ + P log x, with P = p·x, from the sums taken once
        ll = float(w @ g[ix]) - gammaln(q) + q * np.log(v) + p * self.w_x_log_mx - self.w_log_m
        ll -= p * wxL + q * wL
        grad_p = -np.array(
            [
                float(w @ d_p[ix]) + self.w_x_log_mx - wxL,
                float(w @ psi_pq[ix]) - digamma(q) + np.log(v) - wL,
                q / v - float(w @ ((p * self.x + q) / (self.xm + v))),
            ]
        )
        value = -ll + self.pen * float(np.sum(params**2))
        return value, (grad_p + 2 * self.pen * params) * params  # chain rule to log-parameters


def _minimize(objective: _ClosedFormObjective, k: int, what: str) -> np.ndarray:
    """lifetimes' ``BaseFitter._fit`` on a closed-form gradient: BFGS from 0.1·1 in log-parameters,
    tolerance 1e-7, ConvergenceError when scipy reports no success. Returns the log-parameters."""
    from lifetimes.utils import ConvergenceError
    from scipy.optimize import minimize

    out = minimize(objective, x0=0.1 * np.ones(k), jac=True, method=None, tol=1e-7)
    if not out.success:
        raise ConvergenceError(f"{what} did not converge: {out.message}")
    return out.x


def _fit_bgnbd(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, w: np.ndarray, pen: float
) -> tuple[np.ndarray, np.ndarray]:
    """lifetimes' ``BetaGeoFitter.fit`` (same rescaling of time, start, optimiser, tolerance and
    ConvergenceError) on the closed-form gradient; returns (r, α, a, b) and the Hessian of the total
    penalised negative log-likelihood in log-parameters."""
    from lifetimes.utils import _scale_time

    scale = _scale_time(T)
    objective = _BGNBDObjective(x, t_x * scale, T * scale, w, pen)
    log_p = _minimize(objective, 4, "BG/NBD")
    params = np.exp(log_p)
    params[1] /= scale
    return params, objective.hessian(log_p) * float(np.sum(w))


def _fit_gamma_gamma(
    x: np.ndarray, m: np.ndarray, w: np.ndarray, pen: float
) -> tuple[np.ndarray, np.ndarray]:
    """lifetimes' ``GammaGammaFitter.fit`` (same start, optimiser, tolerance and ConvergenceError) on
    the closed-form gradient; returns (p, q, γ) and the Hessian of the total penalised negative
    log-likelihood in log-parameters."""
    objective = _GammaGammaObjective(x, m, w, pen)
    log_p = _minimize(objective, 3, "Gamma-Gamma")
    return np.exp(log_p), objective.hessian(log_p) * float(np.sum(w))


def _total_hessian(fitter: Any, weights: np.ndarray) -> np.ndarray | None:
    """lifetimes' exact (autograd) Hessian of its per-customer mean objective in log-parameters,
    scaled to the total; None where lifetimes has none (Pareto/NBD). Rescaling time shifts only
    log(alpha), so this is also the Hessian in the data's own time unit."""
    H = getattr(fitter, "_hessian_", None)
    return None if H is None else np.asarray(H, dtype=float) * float(np.sum(weights))


def _hessian(f: Callable[[np.ndarray], float], theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central-difference Hessian of a scalar function (used on log-parameters)."""
    k = len(theta)
    H = np.empty((k, k))
    f0 = f(theta)
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = h
        H[i, i] = (f(theta + ei) - 2 * f0 + f(theta - ei)) / h**2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = h
            H[i, j] = H[j, i] = (
                f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej) + f(theta - ei - ej)
            ) / (4 * h**2)
    return H


def _log_covariance(
    neg_objective: Callable[[np.ndarray], float], params: np.ndarray, H: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Asymptotic covariance of log-parameters: inverse Hessian ``H`` of the total penalised negative
    log-likelihood at the MLE (observed information); ``H`` is computed by central differences of
    ``neg_objective`` when not given. Falls back to a clipped pseudo-inverse, noted."""
    if H is None or not np.all(np.isfinite(H)):
        H = _hessian(neg_objective, np.log(params))
    notes: list[str] = []
    try:
        cov = np.linalg.inv(H)
        if not np.all(np.linalg.eigvalsh((cov + cov.T) / 2) > 0):
            raise np.linalg.LinAlgError("not positive definite")
    except np.linalg.LinAlgError:
        notes.append("Hessian at the MLE is not positive definite; covariance from a clipped pseudo-inverse")
        w, V = np.linalg.eigh((H + H.T) / 2)
        w = np.where(w > 1e-9 * max(abs(w).max(), 1.0), w, np.inf)
        cov = (V / w) @ V.T
    return (cov + cov.T) / 2, notes


def _draw_log_params(
    mean_log: np.ndarray, cov_log: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """n parameter vectors exp(N(mean_log, cov_log)): the MLE's asymptotic normal on the log scale,
    which keeps every draw positive."""
    w, V = np.linalg.eigh(cov_log)
    L = V * np.sqrt(np.clip(w, 0.0, None))
    return np.exp(mean_log + rng.standard_normal((n, len(mean_log))) @ L.T)


def _check_fitted(model: Any) -> None:
    if not hasattr(model, "params_"):
        raise ValueError(f"{type(model).__name__} is not fitted: call .fit(...) or .from_dict(...) first")


def _matrix(value: Any) -> list[list[float]]:
    return np.asarray(value, dtype=float).tolist()


# --------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------


class BetaGeoModel:
    """Purchase-count model: BG/NBD (default), Pareto/NBD (``model="pareto"``) or MBG/NBD.

    scikit-learn style: parameters are stored as given, ``fit`` does the work and returns self,
    fitted attributes end in ``_``. Time is in the data's unit (weeks, days ...).

    Parameters
    ----------
    penalizer:
        L2 penalty on the parameters (lifetimes' ``penalizer_coef``) tried first.
    model:
        ``"bgnbd"``, ``"pareto"`` or ``"mbgnbd"``.
    penalizer_schedule:
        Larger penalizers tried, in order, when a fit fails to converge or degenerates.
    """

    def __init__(
        self,
        penalizer: float = 0.0,
        model: ModelName = "bgnbd",
        penalizer_schedule: Sequence[float] = PENALIZER_SCHEDULE,
    ) -> None:
        self.penalizer = penalizer
        self.model = model
        self.penalizer_schedule = penalizer_schedule

    # -- fitting -------------------------------------------------------------------------
    def _math(self) -> _ModelMath:
        if self.model not in _MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(_MODELS)}")
        return _MODELS[self.model]

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> BetaGeoModel:
        """Fit by maximum likelihood on (x, t_x, T) collapsed to distinct rows weighted by counts."""
        math = self._math()
        x, t_x, T_ = validate_rft(frequency, recency, T)
        rows = collapse_rft(x, t_x, T_)
        cx, ct, cT, w = (rows[c].to_numpy() for c in ("x", "t_x", "T", "weights"))

        def fit_one(pen: float) -> tuple[np.ndarray, np.ndarray | None]:
            if self.model == "bgnbd":
                return _fit_bgnbd(cx, ct, cT, w, pen)
            fitter = _lifetimes_fitter(math.fitter, pen)
            kwargs: dict[str, Any] = {"weights": w}
            if self.model == "pareto":  # lifetimes draws random starting values otherwise
                kwargs["initial_params"] = np.ones(4)
            fitter.fit(cx, ct, cT, **kwargs)
            return fitter.params_[list(math.param_names)].to_numpy(), _total_hessian(fitter, w)

        params, hess, pen, notes = _fit_escalating(
            fit_one, self.penalizer, self.penalizer_schedule, self.model
        )
        n = float(w.sum())

        def objective(log_p: np.ndarray) -> float:
            p = np.exp(log_p)
            return float(-(w * math.loglik(p, cx, ct, cT)).sum() + n * pen * np.sum(p**2))

        cov_log, cov_notes = _log_covariance(objective, params, hess)
        self.params_ = dict(zip(math.param_names, map(float, params), strict=True))
        self.loglik_ = float((w * math.loglik(params, cx, ct, cT)).sum())
        self.log_covariance_ = cov_log
        self.covariance_ = cov_log * np.outer(params, params)  # delta method
        self.penalizer_used_ = float(pen)
        self.fit_warnings_ = notes + cov_notes
        self.n_customers_ = int(n)
        self.n_distinct_ = len(rows)
        return self

    # -- predictions ---------------------------------------------------------------------
    @property
    def param_vector_(self) -> np.ndarray:
        """Fitted parameters in the model's canonical order."""
        _check_fitted(self)
        return np.array([self.params_[k] for k in self._math().param_names])

    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        """P(customer still alive | x, t_x, T). Under BG/NBD it is 1 for x = 0 (REAL-DATA #2)."""
        x, t_x, T_ = validate_rft(frequency, recency, T)
        return np.asarray(self._math().p_alive(self.param_vector_, x, t_x, T_), dtype=float)

    def expected_purchases(
        self, t: float | ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected repeat purchases in the next ``t`` time units (FHL eq. 10)."""
        x, t_x, T_ = validate_rft(frequency, recency, T)
        p, math = self.param_vector_, self._math()
        t_arr = np.asarray(t, dtype=float)
        return math.scale(p, x, t_x, T_) * math.path(p, t_arr, x, T_)

    def expected_purchases_population(self, t: float | ArrayLike) -> np.ndarray:
        """Unconditional E[X(t)] for a new customer over ``t`` time units (FHL eq. 9)."""
        return np.asarray(self._math().population(self.param_vector_, np.asarray(t, dtype=float)))

    def sample_params(self, n_draws: int, seed: int = 0) -> np.ndarray:
        """``n_draws`` parameter vectors from the MLE's asymptotic normal (log scale), seeded."""
        _check_fitted(self)
        rng = np.random.default_rng(seed)
        return _draw_log_params(np.log(self.param_vector_), self.log_covariance_, n_draws, rng)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the configuration and fitted state."""
        _check_fitted(self)
        return {
            "kind": "BetaGeoModel",
            "version": _SERIAL_VERSION,
            "model": self.model,
            "penalizer": self.penalizer,
            "penalizer_schedule": list(self.penalizer_schedule),
            "params": dict(self.params_),
            "loglik": self.loglik_,
            "log_covariance": _matrix(self.log_covariance_),
            "penalizer_used": self.penalizer_used_,
            "fit_warnings": list(self.fit_warnings_),
            "n_customers": self.n_customers_,
            "n_distinct": self.n_distinct_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BetaGeoModel:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        if d.get("kind") != "BetaGeoModel" or d.get("version") != _SERIAL_VERSION:
            raise ValueError(
                f"not a BetaGeoModel v{_SERIAL_VERSION} dict: kind={d.get('kind')!r}, "
                f"version={d.get('version')!r}"
            )
        m = cls(penalizer=d["penalizer"], model=d["model"], penalizer_schedule=tuple(d["penalizer_schedule"]))
        names = m._math().param_names
        if set(d["params"]) != set(names):
            raise ValueError(f"params {sorted(d['params'])} do not match model {m.model!r} {list(names)}")
        m.params_ = {k: float(d["params"][k]) for k in names}
        m.loglik_ = float(d["loglik"])
        m.log_covariance_ = np.asarray(d["log_covariance"], dtype=float)
        m.covariance_ = m.log_covariance_ * np.outer(m.param_vector_, m.param_vector_)
        m.penalizer_used_ = float(d["penalizer_used"])
        m.fit_warnings_ = list(d["fit_warnings"])
        m.n_customers_ = int(d["n_customers"])
        m.n_distinct_ = int(d["n_distinct"])
        return m


class GammaGammaModel:
    """Mean-spend model (Fader & Hardie 2013) fitted on repeat buyers with strictly positive mean spend.

    ``monetary`` is the mean spend of a customer's *repeat* transactions. Customers without a repeat
    purchase or with non-positive mean spend are excluded and counted in ``n_excluded_``; a warning
    is issued (and kept in ``fit_warnings_``) when |corr(frequency, monetary)| > ``corr_threshold``,
    since the model assumes spend independent of purchase frequency.
    """

    param_names: tuple[str, ...] = ("p", "q", "v")

    def __init__(
        self,
        penalizer: float = 0.0,
        corr_threshold: float = 0.3,
        penalizer_schedule: Sequence[float] = PENALIZER_SCHEDULE,
    ) -> None:
        self.penalizer = penalizer
        self.corr_threshold = corr_threshold
        self.penalizer_schedule = penalizer_schedule

    def fit(self, frequency: ArrayLike, monetary: ArrayLike) -> GammaGammaModel:
        """Fit p, q, γ (``v``) on the included repeat buyers (collapsed to distinct (x, m̄) rows)."""
        x, m = _validate_xm(frequency, monetary)
        no_repeat = x == 0
        nonpositive = (x > 0) & (m <= 0)
        keep = ~(no_repeat | nonpositive)
        if keep.sum() < 2:
            raise ValueError(
                f"Gamma-Gamma needs at least 2 repeat buyers with positive mean spend, got {int(keep.sum())}"
            )
        notes: list[str] = []
        if nonpositive.any():
            notes.append(
                f"gamma-gamma: excluded {int(nonpositive.sum())} repeat buyers with non-positive mean spend"
            )
        xk, mk = x[keep], m[keep]
        corr = float(np.corrcoef(xk, mk)[0, 1]) if np.std(xk) > 0 and np.std(mk) > 0 else 0.0
        if abs(corr) > self.corr_threshold:
            notes.append(
                f"gamma-gamma: |corr(frequency, monetary)| = {abs(corr):.3f} > {self.corr_threshold}; "
                "the independence assumption is doubtful"
            )
        for note in notes:
            log.warning(note)
            warnings.warn(note, CLVWarning, stacklevel=2)
        rows = (
            pd.DataFrame({"x": xk, "m": mk}).groupby(["x", "m"], sort=True).size().rename("w").reset_index()
        )
        cx, cm, w = rows["x"].to_numpy(), rows["m"].to_numpy(), rows["w"].to_numpy()

        def fit_one(pen: float) -> tuple[np.ndarray, np.ndarray | None]:
            return _fit_gamma_gamma(cx, cm, w, pen)

        params, hess, pen, fit_notes = _fit_escalating(
            fit_one, self.penalizer, self.penalizer_schedule, "gamma-gamma"
        )
        n = float(w.sum())

        def objective(log_p: np.ndarray) -> float:
            p = np.exp(log_p)
            return float(-(w * _gg_loglik(p, cx, cm)).sum() + n * pen * np.sum(p**2))

        cov_log, cov_notes = _log_covariance(objective, params, hess)
        self.params_ = dict(zip(self.param_names, map(float, params), strict=True))
        self.loglik_ = float((w * _gg_loglik(params, cx, cm)).sum())
        self.log_covariance_ = cov_log
        self.covariance_ = cov_log * np.outer(params, params)
        self.penalizer_used_ = float(pen)
        self.corr_frequency_monetary_ = corr
        self.n_customers_ = int(n)
        self.n_excluded_ = {
            "no_repeat_purchase": int(no_repeat.sum()),
            "nonpositive_monetary": int(nonpositive.sum()),
        }
        self.fit_warnings_ = notes + fit_notes + cov_notes
        return self

    @property
    def param_vector_(self) -> np.ndarray:
        """Fitted (p, q, v)."""
        _check_fitted(self)
        return np.array([self.params_[k] for k in self.param_names])

    def expected_spend(self, frequency: ArrayLike, monetary: ArrayLike) -> np.ndarray:
        """E[mean spend per transaction | x, m̄] (note 025 eq. 5); x = 0 gives the population mean."""
        x, m = _validate_xm(frequency, monetary)
        return _gg_expected_spend(self.param_vector_, x, m)

    def population_mean_spend(self) -> float:
        """γp / (q - 1): expected mean spend of a customer with no history."""
        p, q, v = self.param_vector_
        return float(v * p / (q - 1))

    def sample_params(self, n_draws: int, seed: int = 0) -> np.ndarray:
        """``n_draws`` (p, q, v) vectors from the MLE's asymptotic normal (log scale), seeded."""
        _check_fitted(self)
        rng = np.random.default_rng(seed)
        return _draw_log_params(np.log(self.param_vector_), self.log_covariance_, n_draws, rng)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the configuration and fitted state."""
        _check_fitted(self)
        return {
            "kind": "GammaGammaModel",
            "version": _SERIAL_VERSION,
            "penalizer": self.penalizer,
            "corr_threshold": self.corr_threshold,
            "penalizer_schedule": list(self.penalizer_schedule),
            "params": dict(self.params_),
            "loglik": self.loglik_,
            "log_covariance": _matrix(self.log_covariance_),
            "penalizer_used": self.penalizer_used_,
            "corr_frequency_monetary": self.corr_frequency_monetary_,
            "n_customers": self.n_customers_,
            "n_excluded": dict(self.n_excluded_),
            "fit_warnings": list(self.fit_warnings_),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GammaGammaModel:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        if d.get("kind") != "GammaGammaModel" or d.get("version") != _SERIAL_VERSION:
            raise ValueError(
                f"not a GammaGammaModel v{_SERIAL_VERSION} dict: kind={d.get('kind')!r}, "
                f"version={d.get('version')!r}"
            )
        m = cls(
            penalizer=d["penalizer"],
            corr_threshold=d["corr_threshold"],
            penalizer_schedule=tuple(d["penalizer_schedule"]),
        )
        m.params_ = {k: float(d["params"][k]) for k in cls.param_names}
        m.loglik_ = float(d["loglik"])
        m.log_covariance_ = np.asarray(d["log_covariance"], dtype=float)
        m.covariance_ = m.log_covariance_ * np.outer(m.param_vector_, m.param_vector_)
        m.penalizer_used_ = float(d["penalizer_used"])
        m.corr_frequency_monetary_ = float(d["corr_frequency_monetary"])
        m.n_customers_ = int(d["n_customers"])
        m.n_excluded_ = {k: int(v) for k, v in d["n_excluded"].items()}
        m.fit_warnings_ = list(d["fit_warnings"])
        return m


def _validate_xm(frequency: ArrayLike, monetary: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, m = _as_float("frequency", frequency), _as_float("monetary", monetary)
    if len(x) != len(m):
        raise ValueError(f"frequency and monetary lengths differ: {len(x)} vs {len(m)}")
    problems: list[str] = []
    checks = {
        "non-finite frequency/monetary": ~(np.isfinite(x) & np.isfinite(m)),
        "frequency negative or not an integer": (x < 0) | (x != np.round(x)),
    }
    for label, mask in checks.items():
        if mask.any():
            problems.append(f"{label}: {_rows(mask)}")
    _raise_problems(problems, "Gamma-Gamma (frequency, monetary)")
    return x, m


def model_from_dict(d: dict[str, Any]) -> BetaGeoModel | GammaGammaModel:
    """Rebuild either model from its ``to_dict`` output (dispatch on ``kind``)."""
    kinds: dict[str, Any] = {"BetaGeoModel": BetaGeoModel, "GammaGammaModel": GammaGammaModel}
    if d.get("kind") not in kinds:
        raise ValueError(f"unknown model kind {d.get('kind')!r}; expected one of {sorted(kinds)}")
    return kinds[d["kind"]].from_dict(d)


# --------------------------------------------------------------------------------------------
# CLV
# --------------------------------------------------------------------------------------------


def periods_per_month(time_unit_days: float) -> float:
    """Model time units per calendar month, following lifetimes' convention so results match it:
    4.345 weeks, 30 days, 720 hours, 1 month; any other unit gets 30 / time_unit_days."""
    if time_unit_days <= 0:
        raise ValueError(f"time_unit_days must be positive, got {time_unit_days}")
    for unit, ppm in _LIFETIMES_PERIODS_PER_MONTH.items():
        if np.isclose(time_unit_days, unit, rtol=1e-12, atol=0):
            return ppm
    return 30.0 / time_unit_days


def _discounted_purchases(
    math: _ModelMath,
    p: np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    months: int,
    rate: float,
    ppm: float,
) -> np.ndarray:
    """Σ_{k=1..months} (E[Y(k·ppm)] - E[Y((k-1)·ppm)]) / (1+rate)^k per customer, i.e. lifetimes'
    monthly discounting. The path part is evaluated only on distinct (x, T) pairs."""
    key, inv = np.unique(x + 1j * T, return_inverse=True)
    xu, Tu = key.real, key.imag
    steps = ppm * np.arange(months + 1, dtype=float)
    path = math.path(p, steps[None, :], xu[:, None], Tu[:, None])
    disc = (1.0 + rate) ** -np.arange(1, months + 1, dtype=float)
    monthly = np.diff(path, axis=1)
    # Summed month by month, element-wise: a matrix product's summation order depends on how many
    # pairs are in the call, and a customer's value must not depend on who else is in it.
    per_pair = np.zeros(len(xu))
    for k in range(months):
        per_pair = per_pair + monthly[:, k] * disc[k]
    return per_pair[inv.ravel()] * math.scale(p, x, t_x, T)


def _clv_inputs(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary: ArrayLike,
    months: int,
    monthly_discount_rate: float,
) -> tuple[np.ndarray, ...]:
    x, t_x, T_ = validate_rft(frequency, recency, T)
    _, m = _validate_xm(x, monetary)
    if len(m) != len(x):
        raise ValueError(f"monetary has {len(m)} rows, frequency {len(x)}")
    if int(months) != months or months < 1:
        raise ValueError(f"months must be a positive integer, got {months}")
    if not monthly_discount_rate > -1:
        raise ValueError(f"monthly_discount_rate must exceed -1, got {monthly_discount_rate}")
    return x, t_x, T_, m


def customer_lifetime_value(
    bg: BetaGeoModel,
    gg: GammaGammaModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary: ArrayLike,
    months: int = 12,
    monthly_discount_rate: float = 0.01,
    time_unit_days: float = 7.0,
) -> np.ndarray:
    """Discounted CLV over ``months`` calendar months, per customer.

    CLV = E[spend | x, m̄] · Σ_{k=1..months} (E[Y(k·P)] - E[Y((k-1)·P)]) / (1 + d)^k with P time units
    per month (:func:`periods_per_month`) — exactly lifetimes' ``GammaGammaFitter.customer_lifetime_value``
    (``time`` = months, ``discount_rate`` = d, ``freq`` = "W" for weeks / "D" for days), vectorised.
    """
    x, t_x, T_, m = _clv_inputs(frequency, recency, T, monetary, months, monthly_discount_rate)
    purchases = _discounted_purchases(
        bg._math(),
        bg.param_vector_,
        x,
        t_x,
        T_,
        int(months),
        monthly_discount_rate,
        periods_per_month(time_unit_days),
    )
    return gg.expected_spend(x, m) * purchases


def clv_interval(
    bg: BetaGeoModel,
    gg: GammaGammaModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary: ArrayLike,
    months: int = 12,
    monthly_discount_rate: float = 0.01,
    time_unit_days: float = 7.0,
    n_draws: int = 200,
    level: float = 0.9,
    seed: int = 0,
    chunk_size: int = 100_000,
) -> pd.DataFrame:
    """Per-customer CLV with a ``level`` interval from parameter uncertainty.

    Both models' parameters are drawn ``n_draws`` times (seeded, independently) from their MLE's
    asymptotic normal on the log scale; the interval is the central ``level`` quantile range of the
    CLV over the draws. Columns: ``clv`` (at the MLE), ``clv_lower``, ``clv_upper``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    x, t_x, T_, m = _clv_inputs(frequency, recency, T, monetary, months, monthly_discount_rate)
    ppm = periods_per_month(time_unit_days)
    bg_draws = bg.sample_params(n_draws, seed=seed)
    gg_draws = gg.sample_params(n_draws, seed=seed + 1)
    math = bg._math()
    point = customer_lifetime_value(bg, gg, x, t_x, T_, m, months, monthly_discount_rate, time_unit_days)
    lo, hi = np.empty(len(x)), np.empty(len(x))
    q = [(1 - level) / 2, (1 + level) / 2]
    for start in range(0, len(x), chunk_size):
        sl = slice(start, start + chunk_size)
        sims = np.empty((n_draws, len(x[sl])))
        for i in range(n_draws):
            sims[i] = _gg_expected_spend(gg_draws[i], x[sl], m[sl]) * _discounted_purchases(
                math, bg_draws[i], x[sl], t_x[sl], T_[sl], int(months), monthly_discount_rate, ppm
            )
        lo[sl], hi[sl] = np.nanquantile(sims, q, axis=0)
    return pd.DataFrame({"clv": point, "clv_lower": lo, "clv_upper": hi}, index=_index_of(frequency))


def _index_of(values: ArrayLike) -> pd.Index | None:
    return values.index if isinstance(values, pd.Series) else None


def btyd_features(
    bg: BetaGeoModel,
    gg: GammaGammaModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary: ArrayLike,
    time_unit_days: float = 1.0,
    horizons_days: Sequence[int] = (30, 90),
    months: int = 12,
    monthly_discount_rate: float = 0.01,
) -> pd.DataFrame:
    """BTYD outputs as classifier features: ``p_alive``, ``exp_purchases_{h}d`` per horizon, ``clv``.

    The models must be fitted on data strictly before the cutoff the features describe. The index
    follows ``frequency`` when it is a Series.
    """
    x, t_x, T_ = validate_rft(frequency, recency, T)
    out = pd.DataFrame(
        index=_index_of(frequency) if _index_of(frequency) is not None else pd.RangeIndex(len(x))
    )
    out["p_alive"] = bg.p_alive(x, t_x, T_)
    for h in horizons_days:
        out[f"exp_purchases_{h}d"] = bg.expected_purchases(h / time_unit_days, x, t_x, T_)
    out["clv"] = customer_lifetime_value(
        bg, gg, x, t_x, T_, monetary, months, monthly_discount_rate, time_unit_days
    )
    return out


# --------------------------------------------------------------------------------------------
# Calibration / holdout evaluation
# --------------------------------------------------------------------------------------------


def calibration_holdout_table(
    bg: BetaGeoModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    frequency_holdout: ArrayLike,
    duration_holdout: float | ArrayLike,
    max_frequency: int = 7,
) -> pd.DataFrame:
    """Mean actual vs predicted holdout purchases grouped by calibration frequency 0..max, max+.

    Index: ``"0" .. "{max_frequency}+"``; columns ``n_customers``, ``actual``, ``predicted``.
    """
    x, t_x, T_ = validate_rft(frequency, recency, T)
    actual = _as_float("frequency_holdout", frequency_holdout)
    if len(actual) != len(x):
        raise ValueError(f"frequency_holdout has {len(actual)} rows, frequency {len(x)}")
    predicted = bg.expected_purchases(
        np.broadcast_to(np.asarray(duration_holdout, float), x.shape), x, t_x, T_
    )
    bins = np.minimum(x, max_frequency).astype(int)
    labels = [str(i) for i in range(max_frequency)] + [f"{max_frequency}+"]
    df = pd.DataFrame(
        {"bin": pd.Categorical.from_codes(bins, labels), "actual": actual, "predicted": predicted}
    )
    table = df.groupby("bin", observed=False).agg(
        n_customers=("actual", "size"), actual=("actual", "mean"), predicted=("predicted", "mean")
    )
    table.index = table.index.astype(str)
    table.index.name = "calibration_frequency"
    return table


def plot_calibration_holdout(table: pd.DataFrame, title: str = "BTYD calibration vs holdout") -> Any:
    """Line plot of :func:`calibration_holdout_table`; returns a matplotlib ``Figure`` (no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    pos = np.arange(len(table))
    ax.plot(pos, table["actual"], marker="o", label="actual")
    ax.plot(pos, table["predicted"], marker="s", linestyle="--", label="model")
    ax.set_xticks(pos, table.index)
    ax.set_xlabel("purchases in calibration period")
    ax.set_ylabel("mean purchases in holdout period")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig

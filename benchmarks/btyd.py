"""Benchmark: siyu's BTYD fitting and CLV against lifetimes, measured in the same run.

Generates customers from a BG/NBD purchase process and a Gamma-Gamma spend process with numpy
(seeded, time in days, integer ages), then times

1. fit: siyu's collapsed BG/NBD + Gamma-Gamma (``training.clv``) vs lifetimes' ``BetaGeoFitter`` +
   ``GammaGammaFitter`` on the raw per-customer rows (goal >= 5x);
2. CLV over 12 months: siyu's vectorised ``customer_lifetime_value`` vs lifetimes'
   ``GammaGammaFitter.customer_lifetime_value`` (goal >= 10x), both with the same fitted parameters.
   With ``--lifetimes-clv-customers N`` lifetimes is timed on the first N customers only and its time
   is scaled linearly to the full size (said so in the output).

Prints a table, then as the last line one JSON object with the figures.

    .venv/bin/python -m benchmarks.btyd --customers 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from training.clv import BetaGeoModel, GammaGammaModel, customer_lifetime_value

# Generator truth, time in days: ~3 purchases a year while alive, dropout ~25% per purchase.
TRUE_BGNBD = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.5}
TRUE_GG = {"p": 6.0, "q": 4.0, "v": 15.0}


@dataclass(frozen=True)
class BenchConfig:
    customers: int
    seed: int
    max_age_days: int
    months: int
    lifetimes_clv_customers: int | None


def simulate(n: int, seed: int, max_age_days: int = 730) -> pd.DataFrame:
    """(x, t_x, T, monetary) of ``n`` customers from BG/NBD + Gamma-Gamma, time in whole days.

    BG/NBD: purchase rate λ ~ Gamma(r, α); after each repeat purchase the customer drops out with
    probability p ~ Beta(a, b), so K ~ Geometric(p) purchases happen before dropout; of N ~ Poisson(λT)
    potential purchases in (0, T] the customer makes x = min(K, N), and the x-th of N uniform order
    statistics on (0, T] is t_x = T·Beta(x, N-x+1). Gamma-Gamma: ν ~ Gamma(q, γ), and the mean of x
    spends each Gamma(p, ν) is Gamma(p·x, ν·x).
    """
    rng = np.random.default_rng(seed)
    T = rng.integers(30, max_age_days + 1, n).astype(float)
    lam = rng.gamma(TRUE_BGNBD["r"], 1.0 / TRUE_BGNBD["alpha"], n)
    p_drop = rng.beta(TRUE_BGNBD["a"], TRUE_BGNBD["b"], n)
    k = rng.geometric(np.clip(p_drop, 1e-12, 1.0))
    n_potential = rng.poisson(lam * T)
    x = np.minimum(k, n_potential)
    pos = x > 0
    t_x = np.zeros(n)
    t_x[pos] = np.minimum(np.ceil(T[pos] * rng.beta(x[pos], n_potential[pos] - x[pos] + 1)), T[pos])
    nu = rng.gamma(TRUE_GG["q"], 1.0 / TRUE_GG["v"], n)
    monetary = np.zeros(n)
    monetary[pos] = np.round(rng.gamma(TRUE_GG["p"] * x[pos], 1.0 / (nu[pos] * x[pos])), 2)
    monetary[pos] = np.maximum(monetary[pos], 0.01)
    return pd.DataFrame({"frequency": x.astype(float), "recency": t_x, "T": T, "monetary": monetary})


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _fit_siyu(df: pd.DataFrame) -> tuple[BetaGeoModel, GammaGammaModel]:
    bg = BetaGeoModel().fit(df["frequency"], df["recency"], df["T"])
    gg = GammaGammaModel().fit(df["frequency"], df["monetary"])
    return bg, gg


def _fit_lifetimes(df: pd.DataFrame):
    import lifetimes

    rep = df[df["frequency"] > 0]
    with contextlib.redirect_stdout(io.StringIO()):
        bgf = lifetimes.BetaGeoFitter().fit(df["frequency"], df["recency"], df["T"])
        ggf = lifetimes.GammaGammaFitter().fit(rep["frequency"], rep["monetary"])
    return bgf, ggf


def _lifetimes_clv(bgf, ggf, df: pd.DataFrame, months: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return ggf.customer_lifetime_value(
            bgf,
            df["frequency"],
            df["recency"],
            df["T"],
            df["monetary"],
            time=months,
            discount_rate=0.01,
            freq="D",
        ).to_numpy()


def run(cfg: BenchConfig) -> dict:
    """Run every measurement; return the figures."""
    import lifetimes  # noqa: F401  (imported before any timing: both sides use it)

    progress = tqdm(total=5, desc="btyd benchmark", file=sys.stderr)
    df = simulate(cfg.customers, cfg.seed, cfg.max_age_days)
    progress.update()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (bg, gg), fit_siyu_s = _timed(_fit_siyu, df)
        progress.update()
        (bgf, ggf), fit_lifetimes_s = _timed(_fit_lifetimes, df)
        progress.update()
        fitted = {**bgf.params_.to_dict(), **ggf.params_.to_dict()}
        ours = {**bg.params_, **gg.params_}
        fit_rel_diff = max(abs(ours[k] / fitted[k] - 1) for k in ours)
        clv_siyu, clv_siyu_s = _timed(
            customer_lifetime_value,
            bg,
            gg,
            df["frequency"],
            df["recency"],
            df["T"],
            df["monetary"],
            months=cfg.months,
            monthly_discount_rate=0.01,
            time_unit_days=1.0,
        )
        progress.update()
        # Same parameters on both sides, so only the CLV computation itself is compared.
        bgf.params_ = pd.Series(bg.params_)
        ggf.params_ = pd.Series(gg.params_)
        n_lt = min(cfg.lifetimes_clv_customers or cfg.customers, cfg.customers)
        clv_lt, clv_lt_timed_s = _timed(_lifetimes_clv, bgf, ggf, df.iloc[:n_lt], cfg.months)
        progress.update()
    progress.close()
    clv_lifetimes_s = clv_lt_timed_s * cfg.customers / n_lt
    return {
        "benchmark": "btyd",
        "baseline": f"lifetimes {_version('lifetimes')}: BetaGeoFitter + GammaGammaFitter on raw rows; "
        "GammaGammaFitter.customer_lifetime_value",
        "customers": cfg.customers,
        "distinct_rows": bg.n_distinct_,
        "repeat_buyers": gg.n_customers_,
        "fit_siyu_s": round(fit_siyu_s, 3),
        "fit_lifetimes_s": round(fit_lifetimes_s, 3),
        "fit_speedup": round(fit_lifetimes_s / fit_siyu_s, 2),
        "fit_param_max_rel_diff": float(fit_rel_diff),
        "clv_months": cfg.months,
        "clv_siyu_s": round(clv_siyu_s, 4),
        "clv_lifetimes_s": round(clv_lifetimes_s, 3),
        "clv_lifetimes_customers_timed": n_lt,
        "clv_lifetimes_extrapolated": n_lt < cfg.customers,
        "clv_speedup": round(clv_lifetimes_s / clv_siyu_s, 1),
        "clv_max_rel_diff": float(np.max(np.abs(clv_siyu[:n_lt] / clv_lt - 1))),
        "penalizer_used": bg.penalizer_used_,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3),
        # Timings on a shared machine move with its load; both sides are timed in the same run.
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def print_table(res: dict) -> None:
    """Human-readable summary (the JSON line follows it)."""
    lt_note = (
        ""
        if not res["clv_lifetimes_extrapolated"]
        else (f" (timed on {res['clv_lifetimes_customers_timed']:,} customers, scaled linearly)")
    )
    rows = [
        (
            "customers",
            f"{res['customers']:,} ({res['distinct_rows']:,} distinct (x, t_x, T) rows, "
            f"{res['repeat_buyers']:,} repeat buyers)",
        ),
        ("fit BG/NBD + GG, siyu collapsed", f"{res['fit_siyu_s']:.3f} s"),
        ("fit BG/NBD + GG, lifetimes raw rows", f"{res['fit_lifetimes_s']:.3f} s"),
        (
            "fit speedup (goal >= 5x)",
            f"{res['fit_speedup']:.1f}x  (max param rel diff {res['fit_param_max_rel_diff']:.1e})",
        ),
        (f"CLV {res['clv_months']} months, siyu vectorised", f"{res['clv_siyu_s']:.4f} s"),
        (f"CLV {res['clv_months']} months, lifetimes", f"{res['clv_lifetimes_s']:.3f} s{lt_note}"),
        (
            "CLV speedup (goal >= 10x)",
            f"{res['clv_speedup']:.1f}x  (max rel diff {res['clv_max_rel_diff']:.1e})",
        ),
        ("peak RSS", f"{res['peak_rss_gib']:.2f} GiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.btyd",
        description="Time siyu's collapsed BG/NBD + Gamma-Gamma fit and vectorised 12-month CLV against "
        "lifetimes on simulated customers (same run, same machine). Last line: one JSON object.",
    )
    parser.add_argument("--customers", type=int, default=1_000_000, help="simulated customers (default 1M)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--max-age-days", type=int, default=730, help="customer ages T drawn from 30..this")
    parser.add_argument("--months", type=int, default=12, help="CLV horizon in months")
    parser.add_argument(
        "--lifetimes-clv-customers",
        type=int,
        default=None,
        help="time lifetimes' CLV on only this many customers and scale linearly (default: all)",
    )
    args = parser.parse_args(argv)
    cfg = BenchConfig(args.customers, args.seed, args.max_age_days, args.months, args.lifetimes_clv_customers)
    res = run(cfg)
    print_table(res)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()

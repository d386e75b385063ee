"""Independent, deliberately plain computations of the report's figures (loops and groupbys over the
raw tables), written from the definitions in serving/report/metrics.py without calling it."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd

from features.synthetic import SynthConfig, generate_world, oracle_p_purchase, write_world

TZ = "Asia/Shanghai"
DAY = pd.Timedelta(days=1)


def midnight(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(day).tz_localize(TZ).tz_convert("UTC")


def local_date(ts: pd.Timestamp) -> dt.date:
    return ts.tz_convert(TZ).date()


def write_world_with_scores(out: Path, customers: int, seed: int, score_cutoffs: list[dt.date]) -> Path:
    """A synthetic world on disk plus a batch-scores parquet built from the generator's exact truth."""
    world = generate_world(SynthConfig(customers=customers, seed=seed))
    write_world(world, out)
    persons = world.truth.persons.set_index("customer_id")
    frames = []
    for c in score_cutoffs:
        p7 = oracle_p_purchase(world.truth, c, 7)
        p90 = oracle_p_purchase(world.truth, c, 90)
        lam = persons.loc[p7.index, "lam"].to_numpy()
        spend = persons.loc[p7.index, "mean_spend"].to_numpy()
        alive = (p90.to_numpy() > 0).astype(float)
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": p7.index.to_numpy(dtype=object),
                    "cutoff": midnight(c),
                    "p_churn": 1.0 - p90.to_numpy(),
                    "p_repurchase_7d": p7.to_numpy(),
                    "clv_12m": alive * lam * 365.0 * spend,
                }
            )
        )
    pd.concat(frames, ignore_index=True).to_parquet(out / "scores.parquet", index=False)
    return out


def paid_before(orders: pd.DataFrame, c: pd.Timestamp) -> pd.DataFrame:
    return orders[(orders["status"] == "paid") & (orders["ts"] < c)]


def lifecycle_stages(customers: pd.DataFrame, orders: pd.DataFrame, day: dt.date) -> dict[str, str]:
    """Stage of each customer: no purchase → new; recency > 180 d → lapsed; > 90 d → dormant;
    ≥ 4 purchases → mature; ≥ 2 → growing; else new (LifecycleRules defaults)."""
    c = midnight(day)
    paid = paid_before(orders, c)
    n = paid.groupby("customer_id").size().to_dict()
    last = paid.groupby("customer_id")["ts"].max().to_dict()
    out = {}
    for cid in customers.loc[customers["first_seen_ts"] < c, "customer_id"]:
        k = n.get(cid, 0)
        if k == 0:
            out[cid] = "new"
            continue
        rec = (c - last[cid]) / DAY
        out[cid] = (
            "lapsed"
            if rec > 180
            else "dormant"
            if rec > 90
            else "mature"
            if k >= 4
            else "growing"
            if k >= 2
            else "new"
        )
    return out


def repurchase(orders: pd.DataFrame, day: dt.date, days: int, cohort_days: int) -> tuple[int, int]:
    c = midnight(day)
    paid = paid_before(orders, c)
    times: dict[str, list[pd.Timestamp]] = {}
    for cid, ts in zip(paid["customer_id"], paid["ts"], strict=True):
        times.setdefault(cid, []).append(ts)
    lo, hi = c - (days + cohort_days) * DAY, c - days * DAY
    cohort = repeat = 0
    for ts_list in times.values():
        first = min(ts_list)
        if lo <= first < hi:
            cohort += 1
            if any(first < t < first + days * DAY for t in ts_list):
                repeat += 1
    return cohort, repeat


def plain_psi(ref: list, cur: list, bins: int = 10, eps: float = 1e-4) -> float:
    """PSI with reference-quantile bins (numbers) or categories (strings); NaN/None is its own bin."""

    def is_missing(v: object) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    numeric = all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
        for v in ref + cur
        if not is_missing(v)
    )
    if numeric:
        finite = [float(v) for v in ref if not is_missing(v)]
        edges = (
            sorted(set(np.quantile(finite, [k / bins for k in range(1, bins)]).tolist())) if finite else []
        )

        def key(v: object) -> object:
            if is_missing(v):
                return "missing"
            return next((i for i, e in enumerate(edges) if float(v) <= e), len(edges))

        keys = [*range(len(edges) + 1), "missing"]
    else:

        def key(v: object) -> object:
            return "missing" if is_missing(v) else str(v)

        keys = sorted({key(v) for v in ref + cur}, key=str)
    total = 0.0
    for k in keys:
        p = max(sum(1 for v in ref if key(v) == k) / len(ref), eps)
        q = max(sum(1 for v in cur if key(v) == k) / len(cur), eps)
        total += (q - p) * math.log(q / p)
    return total


def trimmed_mean(values: list[float], trim: float) -> float:
    s = sorted(values)
    k = int(trim * len(s))
    kept = s[k : len(s) - k]
    return sum(kept) / len(kept)

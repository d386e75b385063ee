"""Benchmark: one feature snapshot on DuckDB against a plain-pandas groupby of the RFM features.

Generates contract tables with numpy and pyarrow (seeded; default 1M customers, 20 orders, 5 events
and 2 touches per customer on average, heavy-tailed across customers, over two years) into a folder,
then, each in a fresh child process so that peak RSS is its own:

1. **siyu**: ``features.snapshot.build_snapshot`` — every feature family (RFM, BTYD summary, channel,
   behaviour, lifecycle) at one cutoff, DuckDB reading the parquet files directly;
2. **siyu RFM only**: the RFM family alone (``features.rfm.rfm_features``), like for like with pandas;
3. **pandas**: the same RFM features with ``read_parquet`` + ``groupby`` (the baseline).

The pandas RFM columns are checked against siyu's (largest relative difference reported). Prints a
table, then as the last line one JSON object with the figures; ``speedup`` is pandas over the *whole*
snapshot, ``rfm_speedup`` pandas over the RFM family alone (wall clock). DuckDB uses every core and pandas
one, so on a shared machine the wall-clock ratio depends on what else runs: the CPU seconds of each side
and the 1-minute load average at the start are reported too.

    .venv/bin/python -m benchmarks.features                    # 1M customers / ~20M orders
    .venv/bin/python -m benchmarks.features --customers 20000  # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.schema import (
    ARMS,
    EVENT_TYPES,
    MEMBER_LEVELS,
    ORDER_CHANNELS,
    TOUCH_CHANNELS,
)

START = pd.Timestamp("2023-01-01", tz="Asia/Shanghai")
END = pd.Timestamp("2025-01-01", tz="Asia/Shanghai")
CUTOFF = "2024-12-01"
RFM_CHECKED = (
    "n_orders",
    "total_net",
    "aov",
    "recency_days",
    "first_purchase_days",
    "orders_30d",
    "orders_90d",
    "orders_365d",
    "spend_90d",
    "spend_365d",
    "btyd_x",
    "btyd_t_x_days",
    "btyd_T_days",
    "btyd_monetary",
    "rfm_r_score",
    "rfm_f_score",
    "rfm_m_score",
    "top20_value",
)


@dataclass(frozen=True)
class BenchConfig:
    customers: int
    orders_per_customer: float
    events_per_customer: float
    touches_per_customer: float
    seed: int
    #: Mean days a customer stays active after first being seen (exponential); 0: nobody ever lapses.
    mean_lifetime_days: float = 0.0


# ------------------------------------------------------------------------------------ generator


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


def _choice(
    rng: np.random.Generator, values: tuple[str, ...], n: int, p: list[float] | None = None
) -> pa.Array:
    idx = rng.choice(len(values), size=n, p=p).astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(values)).cast(pa.string())


def _utc(us: np.ndarray) -> pa.Array:
    return pa.array(us * 1000, type=pa.timestamp("ns", tz="UTC"))


def _owners(rng: np.random.Generator, weights: np.ndarray, n_records: int) -> np.ndarray:
    """Customer index of each record: counts proportional to heavy-tailed weights, sorted by customer."""
    counts = rng.multinomial(n_records, weights / weights.sum())
    return np.repeat(np.arange(len(weights)), counts)


def generate(cfg: BenchConfig, out: Path) -> dict[str, int]:
    """Write customers, orders, events and touches parquet files into ``out``; return row counts."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.customers
    start_us, end_us = START.value // 1000, END.value // 1000
    first_seen = rng.integers(start_us, end_us - 86_400_000_000, n)
    wecom = first_seen + rng.integers(0, 200 * 86_400_000_000, n)
    wecom_ts = pa.array(wecom * 1000, type=pa.timestamp("ns", tz="UTC"), mask=rng.random(n) < 0.4)
    cust_ids = _ids("C", n, 9)
    last_us = np.full(n, end_us, dtype=np.int64)
    if cfg.mean_lifetime_days > 0:  # lapsed customers: records stop at a random point of their lifetime
        life = rng.exponential(cfg.mean_lifetime_days * 86_400_000_000, n).astype(np.int64)
        last_us = np.minimum(last_us, first_seen + 86_400_000_000 + life)
    pq.write_table(
        pa.table(
            {
                "customer_id": cust_ids,
                "first_seen_ts": _utc(first_seen),
                "acquisition_channel": _choice(rng, ORDER_CHANNELS, n),
                "city_tier": pa.array(rng.integers(1, 6, n)),
                "member_level": _choice(rng, MEMBER_LEVELS, n),
                "wecom_added_ts": wecom_ts,
            }
        ),
        out / "customers.parquet",
    )
    weights = rng.gamma(0.75, 1.0, n)
    counts = {"customers": n}
    counts["orders"] = _write_orders(rng, cfg, out, cust_ids, first_seen, weights, last_us)
    counts["events"] = _write_simple(rng, out, "events", cust_ids, first_seen, weights, last_us, cfg)
    counts["touches"] = _write_simple(rng, out, "touches", cust_ids, first_seen, weights, last_us, cfg)
    return counts


def _times(
    rng: np.random.Generator, owner: np.ndarray, first_seen: np.ndarray, last_us: np.ndarray
) -> np.ndarray:
    lo = first_seen[owner]
    return lo + (rng.random(len(owner)) * (last_us[owner] - lo)).astype(np.int64)


def _write_orders(
    rng: np.random.Generator,
    cfg: BenchConfig,
    out: Path,
    cust_ids: pa.Array,
    first_seen: np.ndarray,
    weights: np.ndarray,
    last_us: np.ndarray,
) -> int:
    m = int(cfg.customers * cfg.orders_per_customer)
    owner = _owners(rng, weights, m)
    ts = _times(rng, owner, first_seen, last_us)
    order = np.argsort(ts, kind="stable")  # exports arrive in time order
    owner, ts = owner[order], ts[order]
    gross = np.round(rng.gamma(4.0, 50.0, m), 2)
    discount = np.round(gross * rng.choice([0.0, 0.05, 0.1], m, p=[0.6, 0.25, 0.15]), 2)
    status_idx = rng.choice(3, m, p=[0.92, 0.05, 0.03])
    refund = np.where(status_idx == 1, gross - discount, 0.0)
    channel = _choice(rng, ORDER_CHANNELS, m)
    offline = pc.equal(channel, "offline_store")
    table = pa.table(
        {
            "order_id": _ids("O", m, 10),
            "customer_id": cust_ids.take(pa.array(owner)),
            "ts": _utc(ts),
            "channel": channel,
            "store_id": pc.if_else(offline, pa.scalar("S001"), pa.scalar(None, pa.string())),
            "gross_amount": gross,
            "discount_amount": discount,
            "refund_amount": refund,
            "net_amount": np.round(gross - discount - refund, 2),
            "coupon_id": pa.nulls(m, pa.string()),
            "status": pa.DictionaryArray.from_arrays(
                pa.array(status_idx.astype(np.int32)), pa.array(["paid", "refunded", "cancelled"])
            ).cast(pa.string()),
            "n_items": rng.integers(1, 5, m),
            "category": _choice(rng, ("skincare", "body_care", "makeup", "fragrance"), m),
        }
    )
    pq.write_table(table, out / "orders.parquet", row_group_size=1_000_000)
    return m


def _write_simple(
    rng: np.random.Generator,
    out: Path,
    name: str,
    cust_ids: pa.Array,
    first_seen: np.ndarray,
    weights: np.ndarray,
    last_us: np.ndarray,
    cfg: BenchConfig,
) -> int:
    per = cfg.events_per_customer if name == "events" else cfg.touches_per_customer
    m = int(cfg.customers * per)
    owner = _owners(rng, np.sqrt(weights), m)
    ts = np.sort(_times(rng, owner, first_seen, last_us))
    if name == "events":
        cols = {
            "customer_id": cust_ids.take(pa.array(rng.permutation(owner))),
            "ts": _utc(ts),
            "event_type": _choice(rng, EVENT_TYPES, m),
            "channel": _choice(rng, ("wecom", "miniprogram", "douyin"), m),
            "value": pa.nulls(m, pa.float64()),
        }
    else:
        cols = {
            "touch_id": _ids("T", m, 10),
            "customer_id": cust_ids.take(pa.array(rng.permutation(owner))),
            "ts": _utc(ts),
            "campaign_id": _choice(rng, ("CMP01", "CMP02", "CMP03"), m),
            "channel": _choice(rng, TOUCH_CHANNELS, m),
            "arm": _choice(rng, ARMS, m, p=[0.7, 0.25, 0.05]),
            "cost": np.full(m, 0.05),
        }
    pq.write_table(pa.table(cols), out / f"{name}.parquet", row_group_size=1_000_000)
    return m


# ----------------------------------------------------------------------------------- the contenders


def siyu_snapshot(data: Path, cutoff: str) -> pd.DataFrame:
    """The whole snapshot (every family) on DuckDB."""
    from features.snapshot import build_snapshot

    return build_snapshot(data, cutoff)


def siyu_rfm(data: Path, cutoff: str) -> pd.DataFrame:
    """The RFM family alone on DuckDB."""
    from features.as_of import cutoff_ts
    from features.engine import Engine
    from features.rfm import rfm_features

    with Engine() as eng:
        h = eng.histories(data)
        return eng.execute(rfm_features(h.customers, h.orders, cutoff_ts(cutoff)).order_by("customer_id"))


def pandas_rfm(data: Path, cutoff: str) -> pd.DataFrame:
    """The baseline: RFM features with pandas read_parquet + groupby, as a data scientist would write them."""
    c = pd.Timestamp(cutoff, tz="Asia/Shanghai").tz_convert("UTC")
    cust = pd.read_parquet(data / "customers.parquet", columns=["customer_id", "first_seen_ts"])
    cust = cust[cust["first_seen_ts"] < c].sort_values("customer_id").set_index("customer_id")
    o = pd.read_parquet(data / "orders.parquet", columns=["customer_id", "ts", "status", "net_amount"])
    o = o[(o["ts"] < c) & (o["status"] == "paid")]
    age = (c - o["ts"]).dt.total_seconds() / 86400.0
    local_day = o["ts"].dt.tz_convert("Asia/Shanghai").dt.tz_localize(None).dt.normalize()
    o = o.assign(age=age, day=local_day, net=o["net_amount"])
    for w in (30, 90, 365):
        o[f"in_{w}"] = o["age"] < w
    o["net_90"] = o["net"].where(o["in_90"], 0.0)
    o["net_365"] = o["net"].where(o["in_365"], 0.0)
    g = o.groupby("customer_id").agg(
        n_orders=("net", "size"),
        total_net=("net", "sum"),
        aov=("net", "mean"),
        recency_days=("age", "min"),
        first_purchase_days=("age", "max"),
        orders_30d=("in_30", "sum"),
        orders_90d=("in_90", "sum"),
        orders_365d=("in_365", "sum"),
        spend_90d=("net_90", "sum"),
        spend_365d=("net_365", "sum"),
    )
    days = o.groupby(["customer_id", "day"], sort=True)["net"].sum().reset_index()
    d = days.groupby("customer_id").agg(
        n_days=("day", "size"),
        first=("day", "min"),
        last=("day", "max"),
        net=("net", "sum"),
        first_net=("net", "first"),
    )
    cday = c.tz_convert("Asia/Shanghai").tz_localize(None).normalize()
    out = cust[[]].join(g).join(d)
    zero = [col for col in g.columns if col not in ("aov", "recency_days", "first_purchase_days")]
    out[zero] = out[zero].fillna(0.0)
    out["btyd_x"] = (out["n_days"] - 1).fillna(0.0)
    out["btyd_t_x_days"] = ((out["last"] - out["first"]).dt.days).fillna(0.0)
    out["btyd_T_days"] = ((cday - out["first"]).dt.days).fillna(0.0)
    repeat = out["btyd_x"] > 0
    out["btyd_monetary"] = np.where(
        repeat, (out["net"] - out["first_net"]) / out["btyd_x"].where(repeat), 0.0
    )
    bought = out["n_orders"] > 0
    for name, col, asc in (("r", "recency_days", False), ("f", "n_orders", True), ("m", "total_net", True)):
        pct = out[col].where(bought).rank(method="first", ascending=asc, pct=True)
        out[f"rfm_{name}_score"] = np.ceil(pct * 5).clip(1, 5).fillna(0).astype("int64")
    spend_pct = out["spend_365d"].rank(method="first", ascending=False, pct=True)
    out["top20_value"] = ((spend_pct <= 0.2) & (out["spend_365d"] > 0)).astype("int64")
    return out[list(RFM_CHECKED)].reset_index()


CONTENDERS = {"siyu": siyu_snapshot, "siyu_rfm": siyu_rfm, "pandas": pandas_rfm}


def _child(name: str, data: str, cutoff: str, result: str, queue: mp.Queue) -> None:
    import features.snapshot  # noqa: F401  (imports are not timed)

    t0, c0 = time.perf_counter(), _cpu_seconds()
    df = CONTENDERS[name](Path(data), cutoff)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    df[["customer_id", *[c for c in RFM_CHECKED if c in df.columns]]].to_parquet(result)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    queue.put({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_gib": peak, "rows": len(df)})


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def timed(name: str, data: Path, cutoff: str, work: Path) -> tuple[dict[str, float], pd.DataFrame]:
    """Run one contender in a fresh process; its seconds, peak RSS and RFM columns."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    result = work / f"{name}.parquet"
    proc = ctx.Process(target=_child, args=(name, str(data), cutoff, str(result), queue))
    proc.start()
    figures = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{name} failed with exit code {proc.exitcode}")
    return figures, pd.read_parquet(result)


def max_rel_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest relative difference over the RFM columns (NaN positions must agree)."""
    if not a["customer_id"].equals(b["customer_id"]):
        return float("inf")
    worst = 0.0
    for col in RFM_CHECKED:
        x, y = a[col].to_numpy(float), b[col].to_numpy(float)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return float("inf")
        ok = ~np.isnan(x)
        rel = np.abs(x[ok] - y[ok]) / np.maximum(np.abs(y[ok]), 1e-12)
        worst = max(worst, float(rel.max(initial=0.0)))
    return worst


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders-per-customer", type=float, default=20.0)
    parser.add_argument("--events-per-customer", type=float, default=5.0)
    parser.add_argument("--touches-per-customer", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", type=Path, default=None, help="keep the generated tables here")
    args = parser.parse_args(argv)
    cfg = BenchConfig(
        args.customers,
        args.orders_per_customer,
        args.events_per_customer,
        args.touches_per_customer,
        args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="siyu-bench-features-") as tmp:
        data = args.data or Path(tmp) / "data"
        data.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        counts = generate(cfg, data)
        print(f"generated {counts} in {time.perf_counter() - t0:.1f}s", flush=True)
        load = os.getloadavg()[0]
        runs = {name: timed(name, data, CUTOFF, Path(tmp)) for name in ("pandas", "siyu", "siyu_rfm")}
    (pd_fig, pd_df), (s_fig, s_df), (r_fig, r_df) = runs["pandas"], runs["siyu"], runs["siyu_rfm"]
    res = {
        "benchmark": "features",
        "customers": counts["customers"],
        "orders": counts["orders"],
        "events": counts["events"],
        "touches": counts["touches"],
        "snapshot_rows": s_fig["rows"],
        "siyu_s": round(s_fig["seconds"], 3),
        "pandas_s": round(pd_fig["seconds"], 3),
        "speedup": round(pd_fig["seconds"] / s_fig["seconds"], 2),
        "rfm_siyu_s": round(r_fig["seconds"], 3),
        "rfm_speedup": round(pd_fig["seconds"] / r_fig["seconds"], 2),
        "peak_rss_gib": round(s_fig["peak_rss_gib"], 3),
        "pandas_peak_rss_gib": round(pd_fig["peak_rss_gib"], 3),
        "rfm_max_rel_diff": max(max_rel_diff(s_df, pd_df), max_rel_diff(r_df, pd_df)),
        "siyu_cpu_s": round(s_fig["cpu_seconds"], 3),
        "pandas_cpu_s": round(pd_fig["cpu_seconds"], 3),
        "load_average_at_start": round(load, 2),
    }
    rows = [
        ("siyu snapshot (all families, DuckDB)", f"{res['siyu_s']:.2f} s", f"{res['peak_rss_gib']:.2f} GiB"),
        ("siyu RFM family only", f"{res['rfm_siyu_s']:.2f} s", f"{r_fig['peak_rss_gib']:.2f} GiB"),
        ("pandas RFM groupby", f"{res['pandas_s']:.2f} s", f"{res['pandas_peak_rss_gib']:.2f} GiB"),
    ]
    for label, secs, rss in rows:
        print(f"{label:40s} {secs:>10s}  peak RSS {rss}")
    print(
        f"speedup {res['speedup']}x (whole snapshot), {res['rfm_speedup']}x (RFM only); "
        f"RFM max rel diff vs pandas {res['rfm_max_rel_diff']:.2e}"
    )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()

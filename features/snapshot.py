"""Feature snapshots: one row per customer at an explicit cutoff, computed by DuckDB.

Every input passes through :mod:`features.as_of` first (records with ``ts < cutoff`` only), then one
SQL definition per feature family runs on the embedded DuckDB engine. Timestamps enter DuckDB as
plain numbers (seconds and business-calendar day numbers) computed once in pandas, so the SQL has no
timezone logic of its own.

Columns (besides the keys ``customer_id`` and ``cutoff``):

* RFM — ``n_orders``, ``total_net``, ``aov``, ``recency_days``, ``tenure_days``, ``orders_{30,90,365}d``,
  ``spend_{90,365}d``, ``purchases_per_year``, ``gap_mean_days``, ``rfm_{r,f,m}_score`` (quintiles 1–5),
  ``top20_value`` (the 2080 rule on 365-day spend).
* BTYD summary — ``btyd_x`` (repeat purchase *days*), ``btyd_t_x_days``, ``btyd_T_days`` and their
  ``_weeks`` twins, ``btyd_monetary`` (mean net spend of the repeat purchase days).
* Channel — ``n_channels``, ``share_<channel>``, ``online_share``, ``preferred_channel``, ``omni``.
* Behaviour — ``ev_<type>_{7,30,90}d``, ``ev_trend_30d`` (last 30 vs previous 30 days),
  ``days_since_last_event``, ``coupon_redeem_rate``, ``touches_90d``, ``days_since_last_touch``.
* Attributes and calendar — ``acquisition_channel``, ``member_level``, ``city_tier``, ``wecom_added``,
  ``cutoff_month``, ``days_to_next_sale`` (618 or Double-11).
* State — ``lifecycle_stage`` (new 引入 / growing 成长 / mature 成熟 / dormant 休眠 / lapsed 流失) and
  ``value_tier`` (high / mid / low / none).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from features.as_of import before, business_day_number, cutoff_ts
from features.io import atomic_write_parquet, read_table, snapshot_dir
from features.schema import BUSINESS_TZ, ORDER_CHANNELS, PURCHASE_STATUSES

EVENT_GROUPS: tuple[str, ...] = (
    "wecom_msg_in",
    "wecom_msg_out",
    "group_join",
    "live_view",
    "miniprogram_visit",
    "coupon_claim",
    "coupon_redeem",
)
CATEGORICAL: tuple[str, ...] = (
    "acquisition_channel",
    "member_level",
    "preferred_channel",
    "lifecycle_stage",
    "value_tier",
)
LIFECYCLE_NAMES = {"new": "引入", "growing": "成长", "mature": "成熟", "dormant": "休眠", "lapsed": "流失"}


@dataclass(frozen=True)
class LifecycleRules:
    """Configurable lifecycle rules on recency (days) and number of purchases before the cutoff."""

    active_days: int = 90
    dormant_days: int = 180
    growing_min_orders: int = 2
    mature_min_orders: int = 4


def _order_frame(orders: pd.DataFrame, c: pd.Timestamp) -> pd.DataFrame:
    paid = before(orders, c)
    paid = paid[paid["status"].isin(PURCHASE_STATUSES)]
    return pd.DataFrame(
        {
            "customer_id": paid["customer_id"].to_numpy(),
            "age_s": ((c - paid["ts"]) / pd.Timedelta(seconds=1)).to_numpy(),
            "bday": business_day_number(paid["ts"]).to_numpy(),
            "net": paid["net_amount"].to_numpy(),
            "channel": paid["channel"].to_numpy(),
        }
    )


def _channel_shares_sql() -> str:
    shares = (f"AVG(CASE WHEN channel = '{ch}' THEN 1.0 ELSE 0.0 END) AS share_{ch}" for ch in ORDER_CHANNELS)
    return ", ".join(shares)


def _rfm_sql(cday: int) -> str:
    return f"""
    WITH days AS (
        SELECT customer_id, bday, SUM(net) AS day_net FROM o GROUP BY customer_id, bday
    ), d AS (
        SELECT customer_id, COUNT(*) - 1 AS btyd_x, MAX(bday) - MIN(bday) AS btyd_t_x_days,
               {cday} - MIN(bday) AS btyd_T_days,
               CASE WHEN COUNT(*) > 1 THEN (SUM(day_net) - ARG_MIN(day_net, bday)) / (COUNT(*) - 1)
                    ELSE 0 END AS btyd_monetary
        FROM days GROUP BY customer_id
    )
    SELECT o.customer_id,
           COUNT(*)::DOUBLE AS n_orders, SUM(net) AS total_net, AVG(net) AS aov,
           MIN(age_s) / 86400.0 AS recency_days, MAX(age_s) / 86400.0 AS first_purchase_days,
           COUNT(*) FILTER (WHERE age_s < 30 * 86400)::DOUBLE AS orders_30d,
           COUNT(*) FILTER (WHERE age_s < 90 * 86400)::DOUBLE AS orders_90d,
           COUNT(*) FILTER (WHERE age_s < 365 * 86400)::DOUBLE AS orders_365d,
           COALESCE(SUM(net) FILTER (WHERE age_s < 90 * 86400), 0) AS spend_90d,
           COALESCE(SUM(net) FILTER (WHERE age_s < 365 * 86400), 0) AS spend_365d,
           COUNT(DISTINCT channel)::DOUBLE AS n_channels,
           MODE(channel ORDER BY channel) AS preferred_channel_raw,
           ANY_VALUE(d.btyd_x)::DOUBLE AS btyd_x, ANY_VALUE(d.btyd_t_x_days)::DOUBLE AS btyd_t_x_days,
           ANY_VALUE(d.btyd_T_days)::DOUBLE AS btyd_T_days, ANY_VALUE(d.btyd_monetary) AS btyd_monetary,
           {_channel_shares_sql()}
    FROM o JOIN d USING (customer_id)
    GROUP BY o.customer_id
    """


def _preferred_channel(o: pd.DataFrame) -> pd.Series:
    # Most orders wins; ties go to the alphabetically first channel so the result is deterministic.
    counts = o.groupby(["customer_id", "channel"]).size().rename("n").reset_index()
    counts = counts.sort_values(["customer_id", "n", "channel"], ascending=[True, False, True])
    return counts.drop_duplicates("customer_id").set_index("customer_id")["channel"]


def _event_sql() -> str:
    cols = []
    for et in EVENT_GROUPS:
        for w in (7, 30, 90):
            cols.append(
                f"COUNT(*) FILTER (WHERE event_type = '{et}' AND age_s < {w} * 86400)::DOUBLE AS ev_{et}_{w}d"
            )
    return f"""
    SELECT customer_id, {", ".join(cols)},
           COUNT(*) FILTER (WHERE age_s < 30 * 86400)::DOUBLE AS ev_last30,
           COUNT(*) FILTER (WHERE age_s >= 30 * 86400 AND age_s < 60 * 86400)::DOUBLE AS ev_prev30,
           MIN(age_s) / 86400.0 AS days_since_last_event,
           COUNT(*) FILTER (WHERE event_type = 'coupon_claim')::DOUBLE AS n_claim,
           COUNT(*) FILTER (WHERE event_type = 'coupon_redeem')::DOUBLE AS n_redeem
    FROM e GROUP BY customer_id
    """


_TOUCH_SQL = """
SELECT customer_id,
       COUNT(*) FILTER (WHERE age_s < 90 * 86400 AND arm = 'treatment')::DOUBLE AS touches_90d,
       MIN(age_s) FILTER (WHERE arm = 'treatment') / 86400.0 AS days_since_last_touch
FROM t GROUP BY customer_id
"""


def _aged(df: pd.DataFrame, c: pd.Timestamp, cols: list[str]) -> pd.DataFrame:
    cut = before(df, c)
    out = cut[cols].copy()
    out["age_s"] = ((c - cut["ts"]) / pd.Timedelta(seconds=1)).to_numpy()
    return out


def _quintile_score(s: pd.Series, higher_is_better: bool = True) -> pd.Series:
    ranked = s.rank(method="first", ascending=higher_is_better, pct=True)
    return np.ceil(ranked * 5).clip(1, 5).fillna(0).astype("int64")


def _days_to_next_sale(c: pd.Timestamp) -> int:
    day = c.tz_convert(BUSINESS_TZ).date()
    events = [dt.date(y, m, d) for y in (day.year, day.year + 1) for (m, d) in ((6, 18), (11, 11))]
    return min((e - day).days for e in events if e >= day)


def lifecycle_stage(n_orders: pd.Series, recency_days: pd.Series, rules: LifecycleRules) -> pd.Series:
    """Lifecycle stage from purchases and recency (customers without a purchase are ``new``)."""
    stage = np.select(
        [
            n_orders.fillna(0) == 0,
            recency_days > rules.dormant_days,
            recency_days > rules.active_days,
            n_orders >= rules.mature_min_orders,
            n_orders >= rules.growing_min_orders,
        ],
        ["new", "lapsed", "dormant", "mature", "growing"],
        default="new",
    )
    return pd.Series(stage, index=n_orders.index, dtype=object)


def compute_snapshot(
    tables: dict[str, pd.DataFrame],
    cutoff: dt.date | str,
    rules: LifecycleRules | None = None,
) -> pd.DataFrame:
    """Feature snapshot at ``cutoff`` from in-memory contract tables (see module docstring)."""
    rules = rules or LifecycleRules()
    c = cutoff_ts(cutoff)
    cust = before(tables["customers"], c, "first_seen_ts")
    base = cust.set_index("customer_id").sort_index()
    con = duckdb.connect()
    # One thread: parallel float aggregation sums in varying order, and snapshots must be bit-identical
    # between runs (same data, same seed → same models).
    con.execute("SET threads = 1")
    try:
        o = _order_frame(tables["orders"], c)
        con.register("o", o)
        cday = int(business_day_number(pd.Series([c])).iloc[0])
        rfm = con.execute(_rfm_sql(cday)).df().set_index("customer_id")
        e = _aged(tables.get("events", _empty_events()), c, ["customer_id", "event_type"])
        con.register("e", e)
        ev = con.execute(_event_sql()).df().set_index("customer_id")
        t = _aged(tables.get("touches", _empty_touches()), c, ["customer_id", "arm"])
        con.register("t", t)
        tc = con.execute(_TOUCH_SQL).df().set_index("customer_id")
    finally:
        con.close()

    out = pd.DataFrame(index=base.index)
    out["acquisition_channel"] = base["acquisition_channel"].astype(str)
    out["member_level"] = base["member_level"].astype(str)
    out["city_tier"] = base["city_tier"].astype("int64")
    out["wecom_added"] = (base["wecom_added_ts"] < c).fillna(False).astype("int64")
    out["tenure_days"] = (c - base["first_seen_ts"]) / pd.Timedelta(days=1)
    rfm = rfm.drop(columns=["preferred_channel_raw"])
    out = out.join(rfm, how="left")
    zero_fill = [c_ for c_ in rfm.columns if c_ not in ("recency_days", "first_purchase_days", "aov")]
    out[zero_fill] = out[zero_fill].fillna(0.0)
    out["preferred_channel"] = _preferred_channel(o).reindex(out.index).fillna("none")
    out["purchases_per_year"] = out["n_orders"] / np.maximum(out["tenure_days"], 1.0) * 365.0
    out["gap_mean_days"] = np.where(
        out["btyd_x"] > 0, out["btyd_t_x_days"] / out["btyd_x"].clip(lower=1), np.nan
    )
    out["btyd_t_x_weeks"] = out["btyd_t_x_days"] / 7.0
    out["btyd_T_weeks"] = out["btyd_T_days"] / 7.0
    out["online_share"] = 1.0 - out["share_offline_store"]
    out["omni"] = (
        (out["n_channels"] >= 2) & (out["share_offline_store"] > 0) & (out["online_share"] > 0)
    ).astype("int64")

    out = out.join(ev.drop(columns=["n_claim", "n_redeem"]), how="left")
    ev_cols = [c_ for c_ in ev.columns if c_.startswith("ev_")]
    out[ev_cols] = out[ev_cols].fillna(0.0)
    out["ev_trend_30d"] = out.pop("ev_last30") - out.pop("ev_prev30")
    claims = ev["n_claim"].reindex(out.index)
    redeems = ev["n_redeem"].reindex(out.index)
    out["coupon_redeem_rate"] = np.where(claims > 0, redeems / claims.where(claims > 0), np.nan)
    out = out.join(tc, how="left")
    out["touches_90d"] = out["touches_90d"].fillna(0.0)

    bought = out["n_orders"] > 0
    out["rfm_r_score"] = _quintile_score(out["recency_days"].where(bought), higher_is_better=False)
    out["rfm_f_score"] = _quintile_score(out["n_orders"].where(bought))
    out["rfm_m_score"] = _quintile_score(out["total_net"].where(bought))
    spend_rank = out["spend_365d"].rank(method="first", ascending=False, pct=True)
    out["top20_value"] = ((spend_rank <= 0.2) & (out["spend_365d"] > 0)).astype("int64")
    out["value_tier"] = np.select(
        [out["spend_365d"] <= 0, spend_rank <= 0.2, spend_rank <= 0.5], ["none", "high", "mid"], default="low"
    )
    out["lifecycle_stage"] = lifecycle_stage(out["n_orders"], out["recency_days"], rules)
    out["cutoff_month"] = int(c.tz_convert(BUSINESS_TZ).month)
    out["days_to_next_sale"] = _days_to_next_sale(c)

    out = out.reset_index().rename(columns={"index": "customer_id"})
    out.insert(1, "cutoff", c)
    return out


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=str),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "event_type": pd.Series(dtype=str),
        }
    )


def _empty_touches() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=str),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "arm": pd.Series(dtype=str),
        }
    )


def load_tables(data_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The contract tables a snapshot needs (events and touches are optional)."""
    tables = {name: read_table(data_dir, name) for name in ("customers", "orders")}
    for name in ("events", "touches"):
        try:
            tables[name] = read_table(data_dir, name)
        except FileNotFoundError:
            continue
    return tables


def build_snapshot(data_dir: str | Path, cutoff: dt.date | str, engine: str = "duckdb") -> pd.DataFrame:
    """Feature snapshot of the data directory at ``cutoff`` (one row per customer seen before it)."""
    if engine != "duckdb":
        raise ValueError(f"engine {engine!r} is not available yet; use 'duckdb'")
    return compute_snapshot(load_tables(data_dir), cutoff)


def write_snapshot(df: pd.DataFrame, data_dir: str | Path, cutoff: dt.date | str) -> Path:
    """Write a snapshot atomically to ``DIR/snapshots/YYYY-MM-DD.parquet``."""
    day = pd.Timestamp(cutoff).date().isoformat()
    return atomic_write_parquet(df, snapshot_dir(data_dir) / f"{day}.parquet")


def latest_snapshot(data_dir: str | Path) -> tuple[dt.date, pd.DataFrame]:
    """The newest snapshot in ``DIR/snapshots`` with its cutoff date."""
    paths = sorted(snapshot_dir(data_dir).glob("????-??-??.parquet"))
    if not paths:
        raise FileNotFoundError(f"no feature snapshot in {snapshot_dir(data_dir)}; run `siyu features build`")
    return dt.date.fromisoformat(paths[-1].stem), pd.read_parquet(paths[-1])

"""Labels at a cutoff: what happens in ``[c, c + H)`` (DESIGN.md, point-in-time rules).

* ``label_churn`` — 1 when no purchase in ``[c, c + H)`` (default H = 90 days); population:
  customers with a purchase in the 365 days before ``c`` (missing for everyone else).
* ``label_repurchase_7d`` — 1 when at least one purchase in ``[c, c + 7 d)``; population: customers
  with any purchase before ``c`` (missing for everyone else).
* ``label_future_net_spend_365d`` — net spend of purchases in ``[c, c + 365 d)``.

Labels are defined for the customers first seen before ``c`` (the snapshot's rows); like the features,
they are one engine expression (:func:`labels_expr`) that runs on DuckDB or Spark.

Two windows are refused with a :class:`LabelWindowError`: a label window that runs past the end of the
data (the data cannot tell yet), and a label window that starts before the cutoff of the features it is
joined to (the features would already have seen part of what the label counts).
"""

from __future__ import annotations

import datetime as dt

import ibis
import ibis.expr.types as ir
import pandas as pd

from features.as_of import US_PER_DAY, EngineCutoff, business_day_number, cutoff_ts, in_window, is_before
from features.engine import Engine, EngineConfig, Source, money, money_micro, open_engine
from features.rfm import population
from features.schema import BUSINESS_TZ, PURCHASE_STATUSES

LABEL_HORIZONS: dict[str, int] = {"label_repurchase_7d": 7, "label_future_net_spend_365d": 365}
LABELS: tuple[str, ...] = ("label_churn", "label_repurchase_7d", "label_future_net_spend_365d")
CHURN_ACTIVE_DAYS = 365


class LabelWindowError(ValueError):
    """A label window that the data cannot fill, or one that overlaps the feature window."""


def horizons(churn_horizon_days: int = 90) -> dict[str, int]:
    """Window length in days of every label."""
    return {**LABEL_HORIZONS, "label_churn": churn_horizon_days}


def data_end(source: Source, engine: str | Engine | EngineConfig = "duckdb") -> pd.Timestamp:
    """End of observation: midnight after the last business day seen in orders, events or touches."""
    eng, owned = open_engine(engine)
    try:
        h = eng.histories(source)
        stamps = [eng.scalar(t.ts_us.max()) for t in (h.orders, h.events, h.touches)]
    finally:
        if owned:
            eng.close()
    stamps = [int(s) for s in stamps if s is not None and not pd.isna(s)]
    if not stamps:
        raise LabelWindowError("the data holds no orders, events or touches: no label can be observed")
    last = pd.Timestamp(max(stamps), unit="us", tz="UTC")
    day = int(business_day_number(pd.Series([last])).iloc[0]) + 1
    return cutoff_ts(dt.date(1970, 1, 1) + dt.timedelta(days=day))


def check_window(cutoff: pd.Timestamp, horizon_days: int, end: pd.Timestamp, label: str) -> None:
    """Refuse a label window ``[cutoff, cutoff + horizon)`` that ends after the data does."""
    stop = cutoff + pd.Timedelta(days=horizon_days)
    if stop > end:
        raise LabelWindowError(
            f"{label}: window [{_day(cutoff)}, {_day(stop)}) runs past the end of the data (last observed "
            f"day {_day(end - pd.Timedelta(days=1))}); use a cutoff on or before "
            f"{_day(end - pd.Timedelta(days=horizon_days))}"
        )


def check_no_overlap(feature_cutoff: pd.Timestamp, label_cutoff: pd.Timestamp, label: str) -> None:
    """Refuse a label window that starts before the cutoff of the features it is joined to."""
    if label_cutoff < feature_cutoff:
        raise LabelWindowError(
            f"{label}: window starts {_day(label_cutoff)}, before the feature cutoff {_day(feature_cutoff)}; "
            f"the features already saw [{_day(label_cutoff)}, {_day(feature_cutoff)}) — the windows overlap. "
            "Compute labels at the feature cutoff or later"
        )


def _day(ts: pd.Timestamp) -> dt.date:
    """The business date a cutoff-like timestamp stands for."""
    return ts.tz_convert(BUSINESS_TZ).date() if ts.tzinfo is not None else ts.date()


def labels_expr(
    customers: ir.Table,
    orders: ir.Table,
    cutoff: EngineCutoff | pd.Timestamp,
    churn_horizon_days: int = 90,
    labels: tuple[str, ...] = LABELS,
) -> ir.Table:
    """Labels of every customer first seen before ``cutoff`` as one engine expression."""
    unknown = set(labels) - set(LABELS)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}; choose from {', '.join(LABELS)}")
    c = EngineCutoff.of(cutoff)
    paid = orders.filter(orders.status.isin(PURCHASE_STATUSES))
    active_since = c.us - CHURN_ACTIVE_DAYS * US_PER_DAY
    per = paid.group_by("customer_id").aggregate(
        last_before=paid.ts_us.max(where=is_before(paid.ts_us, c)),
        n_churn=paid.count(where=in_window(paid.ts_us, c, churn_horizon_days)),
        n_7d=paid.count(where=in_window(paid.ts_us, c, 7)),
        spend=money_micro(paid.net_amount).sum(where=in_window(paid.ts_us, c, 365)),
    )
    pop = population(customers, c).select("customer_id")
    t = pop.left_join(per, "customer_id").drop("customer_id_right")
    null = ibis.null("float64")
    exprs = {
        "label_churn": ibis.ifelse(
            t.last_before >= active_since, ibis.ifelse(t.n_churn.fill_null(0) == 0, 1.0, 0.0), null
        ),
        "label_repurchase_7d": ibis.ifelse(
            t.last_before.notnull(), ibis.ifelse(t.n_7d.fill_null(0) > 0, 1.0, 0.0), null
        ),
        "label_future_net_spend_365d": money(t.spend.fill_null(0)),
    }
    return t.select("customer_id", **{name: exprs[name] for name in labels}).order_by("customer_id")


def compute_labels(
    source: Source,
    cutoff: dt.date | str,
    customer_ids: pd.Index | None = None,
    churn_horizon_days: int = 90,
    labels: tuple[str, ...] = LABELS,
    engine: str | Engine | EngineConfig = "duckdb",
    feature_cutoff: dt.date | str | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Labels at ``cutoff`` indexed by customer (``customer_ids`` if given, else every customer first seen
    before ``cutoff``). Raises :class:`LabelWindowError` for a window beyond the data, or one that starts
    before ``feature_cutoff`` when the labels are meant for features at that cutoff. ``end`` is the
    data's end (:func:`data_end`) when the caller already knows it.
    """
    c = cutoff_ts(cutoff)
    if feature_cutoff is not None:
        for name in labels:
            check_no_overlap(cutoff_ts(feature_cutoff), c, name)
    eng, owned = open_engine(engine)
    try:
        end = data_end(source, eng) if end is None else end
        for name in labels:
            check_window(c, horizons(churn_horizon_days)[name], end, name)
        h = eng.histories(source)
        key = ("labels", churn_horizon_days, tuple(labels))
        df = eng.execute_at(
            key, lambda cut: labels_expr(h.customers, h.orders, cut, churn_horizon_days, labels), c
        )
    finally:
        if owned:
            eng.close()
    out = df.set_index("customer_id").astype("float64")
    return out if customer_ids is None else out.reindex(customer_ids)

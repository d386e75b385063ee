"""RFM and BTYD-summary features: one row per customer of the population at a cutoff.

Definitions (purchases = orders with a purchase status, ``ts < cutoff``):

* ``tenure_days`` — days from ``first_seen_ts`` to the cutoff.
* ``n_orders``, ``total_net`` (net of discounts and refunds), ``aov`` (``total_net / n_orders``),
  ``recency_days`` / ``first_purchase_days`` (days since the last / first purchase),
  ``orders_{30,90,365}d`` and ``spend_{90,365}d`` (purchases less than that many days before the cutoff),
  ``purchases_per_year`` (``n_orders / max(tenure_days, 1) * 365``).
* BTYD summary on business days with a purchase: ``btyd_x`` (repeat purchase *days*: distinct days − 1),
  ``btyd_t_x_days`` (first to last purchase day), ``btyd_T_days`` (first purchase day to the cutoff day),
  their ``_weeks`` twins, ``btyd_monetary`` (mean net spend of the repeat purchase days, 0 without
  repeats); ``gap_mean_days`` (mean gap between purchase days, ``t_x / x``; missing without repeats).
* ``rfm_{r,f,m}_score`` — quintiles 1–5 among buyers of recency (recent is 5), ``n_orders`` and
  ``total_net``; ties go to the smaller ``customer_id``; 0 for customers without a purchase.
* ``top20_value`` — the 2080 rule: in the top 20% of all customers by ``spend_365d`` (ties by
  ``customer_id``) with positive spend. The rank itself leaves the family as ``spend_rank_pct`` (the
  customer's position as a fraction of the population) for the value tier; it is not a snapshot column.

Customers without a purchase get zero counts and sums and missing ratios and recencies.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir
import pandas as pd

from features.as_of import EngineCutoff, age_us, before, business_day
from features.engine import money, money_micro, us_to_days
from features.schema import PURCHASE_STATUSES

DAY = 86_400_000_000
ORDER_WINDOWS: tuple[int, ...] = (30, 90, 365)
SPEND_WINDOWS: tuple[int, ...] = (90, 365)

RFM_COLUMNS: tuple[str, ...] = (
    "tenure_days",
    "n_orders",
    "total_net",
    "aov",
    "recency_days",
    "first_purchase_days",
    *(f"orders_{w}d" for w in ORDER_WINDOWS),
    *(f"spend_{w}d" for w in SPEND_WINDOWS),
    "btyd_x",
    "btyd_t_x_days",
    "btyd_T_days",
    "btyd_monetary",
    "purchases_per_year",
    "gap_mean_days",
    "btyd_t_x_weeks",
    "btyd_T_weeks",
    "rfm_r_score",
    "rfm_f_score",
    "rfm_m_score",
    "top20_value",
)


Cutoff = EngineCutoff | pd.Timestamp


def population(customers: ir.Table, cutoff: Cutoff) -> ir.Table:
    """Customers first seen before the cutoff: the rows of every snapshot."""
    return before(customers, cutoff, "first_seen_us")


def paid_before(orders: ir.Table, cutoff: Cutoff) -> ir.Table:
    """Purchases before the cutoff with their age (µs), business day and net amount in micro-units."""
    cutoff = EngineCutoff.of(cutoff)
    cut = before(orders, cutoff)
    paid = cut.filter(cut.status.isin(PURCHASE_STATUSES))
    age = age_us(paid.ts_us, cutoff)
    return paid.select(
        "customer_id",
        "channel",
        age_us=age,
        bday=business_day(age, cutoff),
        net=money_micro(paid.net_amount),
    )


def order_aggregates(paid: ir.Table) -> dict[str, ir.Value]:
    """Per-customer aggregates of the cut purchases (:func:`paid_before`) the RFM columns are made of."""
    aggs: dict[str, ir.Value] = {
        "n": paid.count(),
        "net_sum": paid.net.sum(),
        "age_min": paid.age_us.min(),
        "age_max": paid.age_us.max(),
    }
    for w in ORDER_WINDOWS:
        aggs[f"orders_{w}d"] = paid.count(where=paid.age_us < w * DAY)
    for w in SPEND_WINDOWS:
        aggs[f"spend_{w}d"] = paid.net.sum(where=paid.age_us < w * DAY)
    return aggs


def day_aggregates(paid: ir.Table, cutoff: Cutoff) -> ir.Table:
    """Per customer, over the business days with a purchase: how many, first and last, and spend."""
    days = paid.group_by(["customer_id", "bday"]).aggregate(day_net=paid.net.sum())
    b = days.group_by("customer_id").aggregate(
        n_days=days.count(),
        day_first=days.bday.min(),
        day_last=days.bday.max(),
        day_net_sum=days.day_net.sum(),
        first_day_net=days.day_net.argmin(days.bday),
    )
    return b.mutate(btyd_T=EngineCutoff.of(cutoff).day - b.day_first)


def finish(t: ir.Table, cutoff: Cutoff) -> dict[str, ir.Value]:
    """The RFM columns that need no ranking, from the population (``first_seen_us``) left-joined with
    :func:`order_aggregates` and :func:`day_aggregates` (missing for customers without purchases)."""
    n = t.n.fill_null(0).cast("float64")
    x = (t.n_days - 1).fill_null(0).cast("float64")
    tenure = us_to_days(age_us(t.first_seen_us, cutoff))
    t_x = (t.day_last - t.day_first).fill_null(0).cast("float64")
    big_t = t.btyd_T.fill_null(0).cast("float64")
    return {
        "tenure_days": tenure,
        "n_orders": n,
        "total_net": money(t.net_sum.fill_null(0)),
        "aov": money(t.net_sum) / t.n,
        "recency_days": us_to_days(t.age_min),
        "first_purchase_days": us_to_days(t.age_max),
        **{f"orders_{w}d": t[f"orders_{w}d"].fill_null(0).cast("float64") for w in ORDER_WINDOWS},
        **{f"spend_{w}d": money(t[f"spend_{w}d"].fill_null(0)) for w in SPEND_WINDOWS},
        "btyd_x": x,
        "btyd_t_x_days": t_x,
        "btyd_T_days": big_t,
        "btyd_monetary": ibis.ifelse(x > 0, money(t.day_net_sum - t.first_day_net) / x, 0.0),
        "purchases_per_year": n / ibis.greatest(tenure, 1.0) * 365.0,
        "gap_mean_days": ibis.ifelse(x > 0, t_x / x, ibis.null("float64")),
        "btyd_t_x_weeks": t_x / 7.0,
        "btyd_T_weeks": big_t / 7.0,
    }


def ranks(t: ir.Table) -> dict[str, ir.Value]:
    """The ranked RFM columns (scores, 2080 flag, ``spend_rank_pct``) over the finished columns of ``t``."""
    bought = t.n_orders > 0
    pct = spend_rank(t)
    return {
        "rfm_r_score": quintile_score(t, t.recency_days, bought, higher_is_better=False),
        "rfm_f_score": quintile_score(t, t.n_orders, bought),
        "rfm_m_score": quintile_score(t, t.total_net, bought),
        "top20_value": ((pct <= 0.2) & (t.spend_365d > 0)).cast("int64"),
        "spend_rank_pct": pct,
    }


def rfm_features(customers: ir.Table, orders: ir.Table, cutoff: Cutoff) -> ir.Table:
    """RFM and BTYD-summary features (:data:`RFM_COLUMNS` and ``spend_rank_pct``) of every customer first
    seen before ``cutoff``."""
    cutoff = EngineCutoff.of(cutoff)
    paid = paid_before(orders, cutoff)
    t = attach(
        population(customers, cutoff),
        paid.group_by("customer_id").aggregate(**order_aggregates(paid)),
        day_aggregates(paid, cutoff),
    )
    out = t.select("customer_id", **finish(t, cutoff))
    return out.mutate(**ranks(out)).select("customer_id", *RFM_COLUMNS, "spend_rank_pct")


def attach(base: ir.Table, *tables: ir.Table) -> ir.Table:
    """``base`` left-joined on ``customer_id`` with each of ``tables`` (per-customer aggregates)."""
    for other in tables:
        base = base.left_join(other, "customer_id").drop("customer_id_right")
    return base


def quintile_score(
    t: ir.Table, value: ir.NumericColumn, eligible: ir.BooleanColumn, higher_is_better: bool = True
) -> ir.IntegerColumn:
    """Quintile 1–5 of ``value`` among ``eligible`` rows (ties by ``customer_id``), 0 elsewhere.

    Equals pandas' ``rank(method="first", pct=True)`` on rows sorted by ``customer_id``, then
    ``ceil(rank * 5)``.
    """
    key = value.asc() if higher_is_better else value.desc()
    w = ibis.window(group_by=eligible, order_by=[key, t.customer_id.asc()])
    pos = (ibis.row_number().over(w) + 1).cast("float64")
    n = t.customer_id.count().over(ibis.window(group_by=eligible))
    score = ibis.greatest(ibis.least((pos / n * 5).ceil(), 5), 1).cast("int64")
    return ibis.ifelse(eligible, score, 0)


def spend_rank(t: ir.Table) -> ir.FloatingColumn:
    """Position of each customer by ``spend_365d`` (largest first, ties by ``customer_id``) over all rows,
    as a fraction of the population (pandas' ``rank(method="first", ascending=False, pct=True)``)."""
    w = ibis.window(order_by=[t.spend_365d.desc(), t.customer_id.asc()])
    return (ibis.row_number().over(w) + 1).cast("float64") / t.customer_id.count().over(ibis.window())

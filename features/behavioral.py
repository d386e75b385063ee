"""Behavioural features: interactions and outreach. One row per customer of the population at a cutoff.

Over events and touches before the cutoff (windows are "less than N days before the cutoff"):

* ``ev_<type>_{7,30,90}d`` — counts of each tracked event type (WeCom messages, group joins, live
  views, mini-program visits, coupon claims and redemptions);
* ``ev_trend_30d`` — events of any type in the last 30 days minus those 30–60 days before the cutoff;
* ``days_since_last_event`` — recency of the last interaction of any type (missing without events);
* ``coupon_redeem_rate`` — coupon redemptions / claims over the whole history (missing without claims);
* ``touches_90d`` / ``days_since_last_touch`` — outreach received (treatment arm) in the last 90 days,
  and the recency of the last one (missing when never treated);
* ``touch_response_rate_7d`` — share of treatment touches followed by a purchase within 7 days, over the
  touches of the last 365 days whose 7-day response window closed before the cutoff (missing without
  such touches).
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from features.as_of import EngineCutoff, age_us, before
from features.engine import us_to_days
from features.rfm import DAY, Cutoff, attach, population
from features.schema import PURCHASE_STATUSES

EVENT_GROUPS: tuple[str, ...] = (
    "wecom_msg_in",
    "wecom_msg_out",
    "group_join",
    "live_view",
    "miniprogram_visit",
    "coupon_claim",
    "coupon_redeem",
)
EVENT_WINDOWS: tuple[int, ...] = (7, 30, 90)
RESPONSE_DAYS = 7
RESPONSE_LOOKBACK_DAYS = 365

BEHAVIORAL_COLUMNS: tuple[str, ...] = (
    *(f"ev_{et}_{w}d" for et in EVENT_GROUPS for w in EVENT_WINDOWS),
    "days_since_last_event",
    "ev_trend_30d",
    "coupon_redeem_rate",
    "touches_90d",
    "days_since_last_touch",
    "touch_response_rate_7d",
)


def _event_aggregates(events: ir.Table, cutoff: Cutoff) -> tuple[ir.Table, ir.Table]:
    """Two per-customer aggregates: the windowed counts over the last 90 days only, and the few
    whole-history figures over every event. Counting 24 filtered windows over the whole history (most
    of it older than 90 days) made the events the most expensive part of a snapshot."""
    cut = before(events, cutoff)
    e = cut.select("customer_id", "event_type", age=age_us(cut.ts_us, cutoff))
    history = e.group_by("customer_id").aggregate(
        age_last_event=e.age.min(),
        n_claim=e.count(where=e.event_type == "coupon_claim"),
        n_redeem=e.count(where=e.event_type == "coupon_redeem"),
    )
    horizon = max(*EVENT_WINDOWS, 60)  # the trend compares the last 30 days with the 30 before
    r = e.filter(e.age < horizon * DAY)
    windows: dict[str, ir.Value] = {
        f"ev_{et}_{w}d": r.count(where=(r.event_type == et) & (r.age < w * DAY))
        for et in EVENT_GROUPS
        for w in EVENT_WINDOWS
    }
    windows["ev_last30"] = r.count(where=r.age < 30 * DAY)
    windows["ev_prev30"] = r.count(where=(r.age >= 30 * DAY) & (r.age < 60 * DAY))
    return r.group_by("customer_id").aggregate(**windows), history


def _treated(touches: ir.Table, cutoff: Cutoff) -> ir.Table:
    cut = before(touches, cutoff)
    t = cut.filter(cut.arm == "treatment")
    return t.mutate(age=age_us(t.ts_us, cutoff))


def _closed(t: ir.Table) -> ir.BooleanValue:
    """Treatment touches of the lookback whose response window closed before the cutoff."""
    return (t.age > RESPONSE_DAYS * DAY) & (t.age <= RESPONSE_LOOKBACK_DAYS * DAY)


def _touch_aggregates(touches: ir.Table, cutoff: Cutoff) -> ir.Table:
    t = _treated(touches, cutoff)
    return t.group_by("customer_id").aggregate(
        touches_90d=t.count(where=t.age < 90 * DAY),
        age_last_touch=t.age.min(),
        n_touch=t.count(where=_closed(t)),
    )


def _touch_responses(touches: ir.Table, orders: ir.Table, cutoff: Cutoff) -> ir.Table:
    """Per customer: closed treatment touches followed by a purchase within the response window."""
    t = _treated(touches, cutoff)
    closed = t.filter(_closed(t)).select("customer_id", "ts_us")
    cut = before(orders, cutoff)
    recent = cut.filter(
        cut.status.isin(PURCHASE_STATUSES) & (age_us(cut.ts_us, cutoff) <= RESPONSE_LOOKBACK_DAYS * DAY)
    )
    paid = recent.select(o_customer="customer_id", o_ts="ts_us")
    answered = closed.semi_join(
        paid,
        [
            closed.customer_id == paid.o_customer,
            paid.o_ts >= closed.ts_us,
            paid.o_ts < closed.ts_us + RESPONSE_DAYS * DAY,
        ],
    )
    return answered.group_by("customer_id").aggregate(n_answered=answered.count())


def aggregates(events: ir.Table, touches: ir.Table, orders: ir.Table, cutoff: Cutoff) -> tuple[ir.Table, ...]:
    """The per-customer aggregate tables the behavioural columns are made of."""
    cutoff = EngineCutoff.of(cutoff)
    return (
        *_event_aggregates(events, cutoff),
        _touch_aggregates(touches, cutoff),
        _touch_responses(touches, orders, cutoff),
    )


def finish(t: ir.Table) -> dict[str, ir.Value]:
    """The behavioural columns from the population left-joined with :func:`aggregates`."""
    counts = {
        f"ev_{et}_{w}d": t[f"ev_{et}_{w}d"].fill_null(0).cast("float64")
        for et in EVENT_GROUPS
        for w in EVENT_WINDOWS
    }
    claims = t.n_claim.fill_null(0).cast("float64")
    touched = t.n_touch.fill_null(0).cast("float64")
    return {
        **counts,
        "days_since_last_event": us_to_days(t.age_last_event),
        "ev_trend_30d": (t.ev_last30.fill_null(0) - t.ev_prev30.fill_null(0)).cast("float64"),
        "coupon_redeem_rate": _ratio(t.n_redeem.fill_null(0).cast("float64"), claims),
        "touches_90d": t.touches_90d.fill_null(0).cast("float64"),
        "days_since_last_touch": us_to_days(t.age_last_touch),
        "touch_response_rate_7d": _ratio(t.n_answered.fill_null(0).cast("float64"), touched),
    }


def behavioral_features(
    customers: ir.Table, events: ir.Table, touches: ir.Table, orders: ir.Table, cutoff: Cutoff
) -> ir.Table:
    """Behavioural features of every customer first seen before ``cutoff``."""
    cutoff = EngineCutoff.of(cutoff)
    t = attach(population(customers, cutoff), *aggregates(events, touches, orders, cutoff))
    return t.select("customer_id", **finish(t))


def _ratio(num: ir.FloatingValue, den: ir.FloatingValue) -> ir.FloatingValue:
    """``num / den``, missing where ``den`` is 0."""
    return ibis.ifelse(den > 0, num / den, ibis.null("float64"))

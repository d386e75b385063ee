"""Channel features: where each customer buys. One row per customer of the population at a cutoff.

Over purchases before the cutoff:

* ``n_channels`` — distinct contract channels used;
* ``share_<channel>`` — share of purchases in each contract channel (0 without purchases);
* ``online_share`` — ``1 − share_offline_store`` (so 1.0 for customers without purchases);
* ``preferred_channel`` — the channel with most purchases, ties to the alphabetically first, ``none``
  without purchases;
* ``omni`` — 1 when the customer bought both offline and online.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from features.rfm import Cutoff, attach, paid_before, population
from features.schema import ORDER_CHANNELS

CHANNEL_COLUMNS: tuple[str, ...] = (
    "n_channels",
    *(f"share_{ch}" for ch in ORDER_CHANNELS),
    "online_share",
    "preferred_channel",
    "omni",
)


def order_aggregates(paid: ir.Table) -> dict[str, ir.Value]:
    """Per-customer purchase counts in each contract channel (one aggregation, no per-channel grouping)."""
    return {
        "ch_total": paid.count(),
        **{f"ch_n_{ch}": paid.count(where=paid.channel == ch) for ch in ORDER_CHANNELS},
    }


def finish(t: ir.Table) -> dict[str, ir.Value]:
    """The channel columns from the population left-joined with :func:`order_aggregates`; the preferred
    channel compares the counts in alphabetical order of the channels, so ties go to the first."""
    counts = {ch: t[f"ch_n_{ch}"].fill_null(0) for ch in ORDER_CHANNELS}
    most = ibis.greatest(*counts.values())
    preferred = ibis.cases(
        (t.ch_total.isnull(), "none"), *((counts[ch] == most, ch) for ch in sorted(ORDER_CHANNELS))
    )
    shares = {
        ch: ibis.ifelse(t.ch_total > 0, counts[ch].cast("float64") / t.ch_total.cast("float64"), 0.0)
        for ch in ORDER_CHANNELS
    }
    n_channels = sum((counts[ch] > 0).cast("int64") for ch in ORDER_CHANNELS).cast("float64")
    online = 1.0 - shares["offline_store"]
    omni = (n_channels >= 2) & (shares["offline_store"] > 0) & (online > 0)
    return {
        "n_channels": n_channels,
        **{f"share_{ch}": shares[ch] for ch in ORDER_CHANNELS},
        "online_share": online,
        "preferred_channel": preferred,
        "omni": omni.cast("int64"),
    }


def channel_features(customers: ir.Table, orders: ir.Table, cutoff: Cutoff) -> ir.Table:
    """Channel features of every customer first seen before ``cutoff``."""
    paid = paid_before(orders, cutoff)
    t = attach(
        population(customers, cutoff), paid.group_by("customer_id").aggregate(**order_aggregates(paid))
    )
    return t.select("customer_id", **finish(t))

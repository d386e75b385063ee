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

from features.rfm import Cutoff, paid_before, population
from features.schema import ORDER_CHANNELS

CHANNEL_COLUMNS: tuple[str, ...] = (
    "n_channels",
    *(f"share_{ch}" for ch in ORDER_CHANNELS),
    "online_share",
    "preferred_channel",
    "omni",
)


def channel_features(customers: ir.Table, orders: ir.Table, cutoff: Cutoff) -> ir.Table:
    """Channel features of every customer first seen before ``cutoff``.

    Counts per contract channel come from one per-customer aggregation (no per-channel grouping), so the
    preferred channel is a comparison across those counts in alphabetical order of the channels.
    """
    pop = population(customers, cutoff).select("customer_id")
    paid = paid_before(orders, cutoff)
    per = paid.group_by("customer_id").aggregate(
        n_total=paid.count(), **{f"n_{ch}": paid.count(where=paid.channel == ch) for ch in ORDER_CHANNELS}
    )
    t = pop.left_join(per, "customer_id").drop("customer_id_right")
    counts = {ch: t[f"n_{ch}"].fill_null(0) for ch in ORDER_CHANNELS}
    most = ibis.greatest(*counts.values())
    preferred = ibis.cases(
        (t.n_total.isnull(), "none"), *((counts[ch] == most, ch) for ch in sorted(ORDER_CHANNELS))
    )
    shares = {
        f"share_{ch}": ibis.ifelse(t.n_total > 0, counts[ch].cast("float64") / t.n_total.cast("float64"), 0.0)
        for ch in ORDER_CHANNELS
    }
    used = sum((counts[ch] > 0).cast("int64") for ch in ORDER_CHANNELS)
    out = t.select("customer_id", n_channels=used.cast("float64"), preferred_channel=preferred, **shares)
    out = out.mutate(online_share=1.0 - out.share_offline_store)
    out = out.mutate(
        omni=((out.n_channels >= 2) & (out.share_offline_store > 0) & (out.online_share > 0)).cast("int64")
    )
    return out.select("customer_id", *CHANNEL_COLUMNS)

"""Lifecycle stage and value tier, derived from the RFM family by configurable rules.

* ``lifecycle_stage`` — first matching rule wins: no purchase → ``new`` (引入); last purchase more than
  ``dormant_days`` ago → ``lapsed`` (流失); more than ``active_days`` ago → ``dormant`` (休眠); at least
  ``mature_min_orders`` purchases → ``mature`` (成熟); at least ``growing_min_orders`` → ``growing``
  (成长); otherwise ``new``.
* ``value_tier`` — by 365-day spend rank over all customers (``spend_rank_pct`` of :mod:`features.rfm`):
  ``none`` without positive spend, ``high`` in the top 20%, ``mid`` in the top 50%, else ``low``.
"""

from __future__ import annotations

from dataclasses import dataclass

import ibis
import ibis.expr.types as ir

LIFECYCLE_NAMES = {"new": "引入", "growing": "成长", "mature": "成熟", "dormant": "休眠", "lapsed": "流失"}
LIFECYCLE_COLUMNS: tuple[str, ...] = ("value_tier", "lifecycle_stage")


@dataclass(frozen=True)
class LifecycleRules:
    """Configurable lifecycle rules on recency (days) and number of purchases before the cutoff."""

    active_days: int = 90
    dormant_days: int = 180
    growing_min_orders: int = 2
    mature_min_orders: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.active_days <= self.dormant_days:
            raise ValueError(
                f"need 0 < active_days <= dormant_days, got {self.active_days}, {self.dormant_days}"
            )
        if not 1 <= self.growing_min_orders <= self.mature_min_orders:
            raise ValueError(
                "need 1 <= growing_min_orders <= mature_min_orders, "
                f"got {self.growing_min_orders}, {self.mature_min_orders}"
            )


def lifecycle_stage(
    n_orders: ir.NumericValue, recency_days: ir.NumericValue, rules: LifecycleRules
) -> ir.StringValue:
    """Lifecycle stage from purchases and recency (customers without a purchase are ``new``)."""
    return ibis.cases(
        (n_orders == 0, "new"),
        (recency_days > rules.dormant_days, "lapsed"),
        (recency_days > rules.active_days, "dormant"),
        (n_orders >= rules.mature_min_orders, "mature"),
        (n_orders >= rules.growing_min_orders, "growing"),
        else_="new",
    )


def finish(t: ir.Table, rules: LifecycleRules | None = None) -> dict[str, ir.Value]:
    """``value_tier`` and ``lifecycle_stage`` from the RFM columns (with ``spend_rank_pct``) of ``t``."""
    rules = rules or LifecycleRules()
    rank = t.spend_rank_pct
    tier = ibis.cases((t.spend_365d <= 0, "none"), (rank <= 0.2, "high"), (rank <= 0.5, "mid"), else_="low")
    return {"value_tier": tier, "lifecycle_stage": lifecycle_stage(t.n_orders, t.recency_days, rules)}


def lifecycle_features(rfm: ir.Table, rules: LifecycleRules | None = None) -> ir.Table:
    """The RFM family's output with ``value_tier`` and ``lifecycle_stage`` added.

    Derived on the RFM rows themselves rather than joined back: a second reference to the RFM expression
    would make the engine compute it twice.
    """
    return rfm.mutate(**finish(rfm, rules))

"""Labels at a cutoff: what happens in ``[c, c + H)`` (DESIGN.md, point-in-time rules).

* ``label_churn`` — 1 when no purchase in ``[c, c + H)`` (default H = 90 days); population:
  customers with a purchase in the 365 days before ``c`` (NaN for everyone else).
* ``label_repurchase_7d`` — 1 when at least one purchase in ``[c, c + 7 d)``; population: customers
  with any purchase before ``c``.
* ``label_future_net_spend_365d`` — net spend of purchases in ``[c, c + 365 d)``.

A label window that runs past the end of the data is refused: the data cannot tell yet.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from features.as_of import before, business_day_number, cutoff_ts, window
from features.schema import PURCHASE_STATUSES

LABEL_HORIZONS: dict[str, int] = {"label_repurchase_7d": 7, "label_future_net_spend_365d": 365}
CHURN_ACTIVE_DAYS = 365


class LabelWindowError(ValueError):
    """A label window that the data cannot fill, or one that overlaps the feature window."""


def data_end(tables: dict[str, pd.DataFrame]) -> pd.Timestamp:
    """End of observation: midnight after the last business day seen in orders, events or touches."""
    last = max(
        tables[t]["ts"].max() for t in ("orders", "events", "touches") if t in tables and len(tables[t])
    )
    day = int(business_day_number(pd.Series([last])).iloc[0]) + 1
    return cutoff_ts(dt.date(1970, 1, 1) + dt.timedelta(days=day))


def check_window(cutoff: pd.Timestamp, horizon_days: int, end: pd.Timestamp, label: str) -> None:
    """Refuse a label window ``[cutoff, cutoff + horizon)`` that ends after the data does."""
    stop = cutoff + pd.Timedelta(days=horizon_days)
    if stop > end:
        raise LabelWindowError(
            f"{label}: window [{cutoff.date()}, {stop.date()}) runs past the end of the data ({end.date()}); "
            f"use a cutoff on or before {(end - pd.Timedelta(days=horizon_days)).date()}"
        )


def compute_labels(
    tables: dict[str, pd.DataFrame],
    cutoff: dt.date | str,
    customer_ids: pd.Index,
    churn_horizon_days: int = 90,
    labels: tuple[str, ...] = ("label_churn", "label_repurchase_7d", "label_future_net_spend_365d"),
) -> pd.DataFrame:
    """Labels for ``customer_ids`` at ``cutoff``; raises :class:`LabelWindowError` beyond the data."""
    c = cutoff_ts(cutoff)
    end = data_end(tables)
    horizons = {**LABEL_HORIZONS, "label_churn": churn_horizon_days}
    for name in labels:
        check_window(c, horizons[name], end, name)
    orders = tables["orders"]
    paid = orders[orders["status"].isin(PURCHASE_STATUSES)]
    past = before(paid, c)
    last_before = past.groupby("customer_id")["ts"].max().reindex(customer_ids)
    out = pd.DataFrame(index=customer_ids)
    if "label_churn" in labels:
        active = last_before >= c - pd.Timedelta(days=CHURN_ACTIVE_DAYS)
        bought = window(paid, c, churn_horizon_days).groupby("customer_id").size().reindex(customer_ids)
        out["label_churn"] = np.where(active, (bought.fillna(0) == 0).astype(float), np.nan)
    if "label_repurchase_7d" in labels:
        bought = window(paid, c, 7).groupby("customer_id").size().reindex(customer_ids)
        out["label_repurchase_7d"] = np.where(
            last_before.notna(), (bought.fillna(0) > 0).astype(float), np.nan
        )
    if "label_future_net_spend_365d" in labels:
        spend = window(paid, c, 365).groupby("customer_id")["net_amount"].sum().reindex(customer_ids)
        out["label_future_net_spend_365d"] = spend.fillna(0.0).to_numpy()
    return out

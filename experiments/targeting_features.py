"""Point-in-time features for targeting: the shared feature snapshot plus BTYD scores.

One retrieval path for every model that decides *who gets which outreach* — the uplift models fitted
on past campaigns, the simulator's churn and CLV baselines — differing only in the cutoff. At a cutoff
``c`` (every input cut by :mod:`features.as_of`):

* the feature snapshot :func:`features.snapshot.compute_snapshot` (RFM, BTYD summary, channel
  shares, behavioural windows, touch history and response, lifecycle, value tier, calendar);
* BG/NBD + Gamma-Gamma fitted on that snapshot (:func:`training.btyd_baseline.fit_btyd`): P(alive),
  expected purchases over 30/90 days, 12-month CLV and the expected spend per order.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from features.snapshot import compute_snapshot

#: Snapshot columns that are the same for every customer of one cutoff (the calendar). Across
#: campaigns they identify the campaign — and so its channel — rather than the customer, so uplift
#: models must not split on them (the organic-outcome baseline may: the season moves purchase rates).
CALENDAR_COLUMNS: tuple[str, ...] = ("cutoff_month", "days_to_next_sale")

BTYD_COLUMNS: tuple[str, ...] = (
    "btyd_p_alive",
    "btyd_exp_purchases_30d",
    "btyd_exp_purchases_90d",
    "btyd_clv",
    "expected_spend",
)


def btyd_scores(snapshot: pd.DataFrame) -> pd.DataFrame:
    """BG/NBD + Gamma-Gamma fitted on one snapshot's rows: :data:`BTYD_COLUMNS` per row (same index).

    ``expected_spend`` is the Gamma-Gamma posterior mean spend per order given *all* the customer's
    orders (``n_orders``, ``aov``), so one-order customers are shrunk toward the population mean rather
    than set to it. A failed fit leaves NaN (the models handle missing values).
    """
    from training.btyd_baseline import btyd_feature_frame, fit_btyd

    cutoff = snapshot["cutoff"].iloc[0] if len(snapshot) else pd.Timestamp(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes are reported by training, not here
        fit = fit_btyd(snapshot, cutoff)
    out = btyd_feature_frame(fit, snapshot, [30, 90], months=12, monthly_discount_rate=0.01)
    out["expected_spend"] = np.nan
    if fit.gg is not None:
        n = snapshot["n_orders"].fillna(0.0).to_numpy(float)
        aov = snapshot["aov"].fillna(0.0).to_numpy(float)
        out["expected_spend"] = fit.gg.expected_spend(n, np.where(n > 0, aov, 0.0))
    return out[list(BTYD_COLUMNS)]


def targeting_features(tables: dict[str, pd.DataFrame] | Path, cutoff: dt.date | str) -> pd.DataFrame:
    """The snapshot at ``cutoff`` (contract tables in memory, or a data directory) with BTYD scores.

    One row per customer first seen before the cutoff.
    """
    snap = compute_snapshot(tables, cutoff)
    return pd.concat([snap, btyd_scores(snap)], axis=1)

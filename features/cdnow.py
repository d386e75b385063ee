"""The CDNOW 1/10th sample: the public reference data set for BTYD models.

2,357 customers who made their first purchase at CDNOW in Q1 1997, observed to 1998-06-30
(78 weeks). The files ship inside the ``lifetimes`` wheel; they are read straight from the
installed package directory (``lifetimes.datasets`` loaders need ``pkg_resources``, which newer
setuptools no longer ships).

Preparation that reproduces the published calibration/holdout summary (Fader, Hardie & Lee 2005):

- same-day purchases of a customer are merged into one transaction (spend summed);
- time is measured in weeks = days / 7 from the customer's first purchase;
- the calibration period ends 1997-09-30 (inclusive, 39 weeks), the holdout covers weeks 40-78
  (1997-10-01 .. 1998-06-30);
- frequency ``x`` counts *repeat* transactions only; ``monetary`` is the mean spend of the repeat
  transactions in calibration (0 for customers without repeats; the file's ``zbar``).

Public API: :func:`cdnow_dir`, :func:`load_cdnow_transactions`, :func:`cdnow_summary`,
:func:`load_published_summary`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

CALIBRATION_END = pd.Timestamp("1997-09-30")
OBSERVATION_END = pd.Timestamp("1998-06-30")
SAMPLE_FILE = "CDNOW_sample.txt"
SUMMARY_FILE = "cdnow_customers_summary_with_transactions.csv"


def cdnow_dir() -> Path:
    """Directory of the installed ``lifetimes`` package's data files (no import of its loaders)."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the lifetimes package is not installed; the CDNOW sample ships with it")
    path = Path(spec.origin).parent / "datasets"
    if not (path / SAMPLE_FILE).exists():
        raise FileNotFoundError(f"CDNOW sample not found at {path / SAMPLE_FILE}")
    return path


def load_cdnow_transactions() -> pd.DataFrame:
    """Raw CDNOW sample lines: ``customer_id`` (the 2nd column, sample id), ``date``, ``n_cds``, ``amount``.

    One row per line of ``CDNOW_sample.txt`` (same-day purchases are *not* merged here).
    """
    df = pd.read_csv(
        cdnow_dir() / SAMPLE_FILE,
        sep=r"\s+",
        header=None,
        names=["original_id", "customer_id", "date", "n_cds", "amount"],
        dtype={"original_id": np.int64, "customer_id": np.int64, "date": str, "n_cds": np.int64},
    )
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return df[["customer_id", "date", "n_cds", "amount"]]


def _daily_transactions(raw: pd.DataFrame) -> pd.DataFrame:
    """Merge same-day purchases of a customer into one transaction (the papers' convention)."""
    return raw.groupby(["customer_id", "date"], as_index=False).agg(amount=("amount", "sum"))


def cdnow_summary(
    calibration_end: pd.Timestamp = CALIBRATION_END,
    observation_end: pd.Timestamp = OBSERVATION_END,
) -> pd.DataFrame:
    """Per-customer calibration/holdout summary, indexed by ``customer_id``.

    Columns: ``frequency`` (repeat transactions in calibration), ``recency`` (weeks from first to last
    calibration transaction), ``T`` (weeks from first purchase to ``calibration_end``), ``monetary``
    (mean spend of calibration repeat transactions, 0 without repeats), ``frequency_holdout``
    (transactions after ``calibration_end`` up to ``observation_end``), ``duration_holdout`` (weeks).
    Recency and T are unrounded (the published file rounds them to 2 decimals).
    """
    tx = _daily_transactions(load_cdnow_transactions())
    tx = tx[tx["date"] <= observation_end]
    first = tx.groupby("customer_id")["date"].min().rename("first")
    tx = tx.join(first, on="customer_id")
    cal = tx[tx["date"] <= calibration_end]
    hold = tx[tx["date"] > calibration_end]

    g = cal.groupby("customer_id")
    out = pd.DataFrame(index=first.index)
    out["frequency"] = g.size() - 1
    out["recency"] = (g["date"].max() - first).dt.days / 7.0
    out["T"] = (calibration_end - first).dt.days / 7.0
    # The first transaction is not a repeat: monetary is the mean of the later ones only.
    repeats = cal[cal["date"] > cal["first"]]
    out["monetary"] = repeats.groupby("customer_id")["amount"].mean().reindex(out.index).fillna(0.0)
    out["frequency_holdout"] = (
        hold.groupby("customer_id").size().reindex(out.index).fillna(0).astype(np.int64)
    )
    out["duration_holdout"] = (observation_end - calibration_end).days / 7.0
    out["frequency"] = out["frequency"].astype(np.int64)
    return out


def load_published_summary() -> pd.DataFrame:
    """The summary file as published (``ID, x, t_x, T, zbar``), indexed by ``customer_id``."""
    df = pd.read_csv(cdnow_dir() / SUMMARY_FILE)
    return df.rename(columns={"ID": "customer_id"}).set_index("customer_id")

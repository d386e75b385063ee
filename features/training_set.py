"""Training sets: feature snapshots × labels stacked over rolling cutoffs, keyed (customer_id, cutoff).

Training and batch scoring share one retrieval path (:func:`features.snapshot.compute_snapshot`);
they differ only in the cutoff. A label whose window runs past the data at some cutoff is left NaN
for that cutoff and named in the manifest (``labels_unavailable``), never filled from the future.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from features.as_of import cutoff_ts
from features.io import atomic_write_parquet, data_fingerprint
from features.labels import LABEL_HORIZONS, LabelWindowError, compute_labels, data_end
from features.snapshot import CATEGORICAL, compute_snapshot, load_tables

FEATURE_KEYS: tuple[str, str] = ("customer_id", "cutoff")
LABELS: tuple[str, ...] = ("label_churn", "label_repurchase_7d", "label_future_net_spend_365d")


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Every column except the keys and the labels."""
    return [c for c in df.columns if c not in FEATURE_KEYS and not c.startswith("label_")]


def categorical_columns(df: pd.DataFrame) -> list[str]:
    """Feature columns holding categories (strings)."""
    return [c for c in feature_columns(df) if c in CATEGORICAL or df[c].dtype == object]


def monthly_cutoffs(start: dt.date | str, end: dt.date | str, every_months: int = 1) -> list[dt.date]:
    """Cutoffs on the first of every ``every_months`` months from ``start`` to ``end`` inclusive."""
    days = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=f"{every_months}MS")
    return [d.date() for d in days]


def check_split(train_cutoffs: list[dt.date], valid_cutoff: dt.date, horizon_days: int) -> None:
    """Refuse a validation cutoff whose label window starts before every training label window ended."""
    last_end = max(pd.Timestamp(c) for c in train_cutoffs) + pd.Timedelta(days=horizon_days)
    if pd.Timestamp(valid_cutoff) < last_end:
        raise LabelWindowError(
            f"validation cutoff {valid_cutoff} overlaps the training label window ending {last_end.date()}: "
            f"with a {horizon_days}-day horizon validate on {last_end.date()} or later"
        )


def build_training_set(
    data_dir: str | Path,
    cutoffs: list[dt.date] | list[str],
    churn_horizon_days: int = 90,
    progress: bool = True,
) -> pd.DataFrame:
    """Snapshots × labels for each cutoff, stacked (see module docstring)."""
    tables = load_tables(data_dir)
    return stack_training_set(tables, cutoffs, churn_horizon_days, progress)


def stack_training_set(
    tables: dict[str, pd.DataFrame],
    cutoffs: list[dt.date] | list[str],
    churn_horizon_days: int = 90,
    progress: bool = True,
) -> pd.DataFrame:
    """In-memory twin of :func:`build_training_set`."""
    if not cutoffs:
        raise ValueError("give at least one cutoff")
    end = data_end(tables)
    horizons = {**LABEL_HORIZONS, "label_churn": churn_horizon_days}
    parts = []
    for cutoff in tqdm(sorted(pd.Timestamp(c).date() for c in cutoffs), desc="cutoffs", disable=not progress):
        snap = compute_snapshot(tables, cutoff)
        c = cutoff_ts(cutoff)
        available = tuple(n for n in LABELS if c + pd.Timedelta(days=horizons[n]) <= end)
        if not available:
            raise LabelWindowError(
                f"cutoff {cutoff}: every label window runs past the end of the data ({end.date()})"
            )
        labels = compute_labels(tables, cutoff, pd.Index(snap["customer_id"]), churn_horizon_days, available)
        for name in LABELS:
            snap[name] = labels[name].to_numpy() if name in labels else float("nan")
        parts.append(snap)
    return pd.concat(parts, ignore_index=True)


def _code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_training_set(
    df: pd.DataFrame, out: str | Path, data_dir: str | Path, churn_horizon_days: int
) -> Path:
    """Write the training set and its manifest (``<out>.manifest.json``)."""
    out = Path(out)
    atomic_write_parquet(df, out)
    unavailable = {
        name: sorted(str(c.date()) for c, g in df.groupby("cutoff") if g[name].isna().all())
        for name in LABELS
    }
    manifest = {
        "cutoffs": sorted(str(c.date()) for c in df["cutoff"].unique()),
        "features": feature_columns(df),
        "labels": list(LABELS),
        "horizons_days": {**LABEL_HORIZONS, "label_churn": churn_horizon_days},
        "labels_unavailable": unavailable,
        "rows": len(df),
        "data_fingerprint": data_fingerprint(data_dir),
        "code_version": _code_version(),
    }
    out.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=2))
    return out

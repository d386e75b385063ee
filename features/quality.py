"""Data quality: contract validation of a data directory, snapshot checks and drift (PSI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.io import read_table, table_path
from features.schema import TABLES, ValidationReport, validate_table


def validate_data_dir(data_dir: str | Path) -> tuple[list[ValidationReport], list[str]]:
    """Validate every contract table in ``data_dir``.

    Returns the per-table reports (each with every failing row) and the names of missing tables.
    """
    reports: list[ValidationReport] = []
    missing: list[str] = []
    for name in TABLES:
        if not table_path(data_dir, name).exists():
            missing.append(name)
            continue
        reports.append(validate_table(name, read_table(data_dir, name)))
    return reports, missing


# ------------------------------------------------------------------------------ drift (PSI)

#: Share given to an empty bin so that PSI stays finite (a common convention; 1e-4 ≈ "one in ten thousand").
PSI_EPS = 1e-4
#: Label of the bin holding missing values.
MISSING_BIN = "<missing>"


@dataclass(frozen=True)
class PSIResult:
    """Population stability index of one column, with the bins it was computed on."""

    value: float
    bins: list[str]
    reference_share: list[float]
    current_share: list[float]
    n_reference: int
    n_current: int


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s))


def psi(reference: pd.Series, current: pd.Series, bins: int = 10, eps: float = PSI_EPS) -> PSIResult:
    """PSI = Σ (q − p) · ln(q / p) over bins, p the reference share and q the current share.

    Numeric columns are cut at the reference's quantiles (``bins`` equal-count bins; tied quantiles
    merge, so a column that is 70% zeros gets one bin for them); categorical columns use one bin per
    category seen on either side. Missing values form their own bin on both kinds, so a rise in nulls
    shows as drift. Shares are floored at ``eps`` so an empty bin adds a large but finite term.
    Rules of thumb: < 0.1 stable, 0.1–0.2 moderate shift, > 0.2 significant shift.
    """
    if len(reference) == 0 or len(current) == 0:
        raise ValueError(f"PSI needs data on both sides; got {len(reference)} and {len(current)} rows")
    if _is_categorical(reference) or _is_categorical(current):
        ref = reference.astype(object).where(reference.notna(), MISSING_BIN).astype(str)
        cur = current.astype(object).where(current.notna(), MISSING_BIN).astype(str)
        labels = sorted(set(ref) | set(cur))
        p = ref.value_counts().reindex(labels, fill_value=0).to_numpy(float)
        q = cur.value_counts().reindex(labels, fill_value=0).to_numpy(float)
    else:
        ref_v, cur_v = reference.to_numpy(float), current.to_numpy(float)
        finite = ref_v[~np.isnan(ref_v)]
        edges = np.unique(np.quantile(finite, np.arange(1, bins) / bins)) if finite.size else np.array([])
        labels = _interval_labels(edges) + [MISSING_BIN]
        p, q = _numeric_counts(ref_v, edges), _numeric_counts(cur_v, edges)
    p_share, q_share = p / p.sum(), q / q.sum()
    pf, qf = np.maximum(p_share, eps), np.maximum(q_share, eps)
    value = float(np.sum((qf - pf) * np.log(qf / pf)))
    return PSIResult(value, labels, p_share.tolist(), q_share.tolist(), len(reference), len(current))


def _numeric_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per right-closed bin (−∞, e1], (e1, e2], …, (ek, ∞) followed by the missing count."""
    missing = np.isnan(x)
    idx = np.searchsorted(edges, x[~missing], side="left")
    return np.append(np.bincount(idx, minlength=len(edges) + 1), missing.sum()).astype(float)


def _interval_labels(edges: np.ndarray) -> list[str]:
    bounds = [-np.inf, *edges.tolist(), np.inf]
    return [f"({lo:.6g}, {hi:.6g}]" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

"""Explanations for the LightGBM classifiers: SHAP values, a summary plot and per-customer reason codes.

SHAP values are exact path-dependent TreeSHAP (:mod:`training.treeshap`, equal to LightGBM's
``pred_contrib`` to rounding and far faster). They are in log-odds of the *uncalibrated* booster; the
calibrator is monotone, so the signs and the order of the reasons carry over to the probability.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Rows explained for a run's SHAP summary: a summary and importances need a sample, not a million rows.
SUMMARY_ROWS = 50_000


def sample_rows(X: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """A seeded random sample of at most ``max_rows`` rows, in their original order."""
    if len(X) <= max_rows:
        return X
    return X.iloc[np.sort(np.random.default_rng(seed).choice(len(X), size=max_rows, replace=False))]


def shap_values(model: Any, X: pd.DataFrame) -> pd.DataFrame:
    """Per-row, per-feature contributions (log-odds) of a fitted ``LGBMCalibratedClassifier``."""
    from training.treeshap import TreeShap

    Xe = model._encode(X)
    values = TreeShap(model.model_text()).contributions(Xe.to_numpy(dtype=np.float64))
    return pd.DataFrame(values, columns=list(model.feature_names_in_), index=Xe.index)


def reason_codes(contrib: pd.DataFrame, k: int = 3, direction: str = "up") -> pd.DataFrame:
    """Top-``k`` reasons per row: feature names and signed contributions, fully vectorised.

    ``direction="up"`` ranks features pushing the score up (largest positive first), ``"down"`` those
    pushing it down, ``"abs"`` by magnitude. Returns columns ``reason_i`` and ``contribution_i`` for
    i = 1..k, indexed like ``contrib``. A row with fewer than k qualifying features gets empty reasons.
    """
    if direction not in ("up", "down", "abs"):
        raise ValueError(f"direction must be up, down or abs, not {direction!r}")
    k = min(k, contrib.shape[1])
    vals = contrib.to_numpy(dtype=float)
    key = {"up": -vals, "down": vals, "abs": -np.abs(vals)}[direction]
    top = np.argsort(key, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(vals, top, axis=1)
    names = np.asarray(contrib.columns, dtype=object)[top]
    # A feature pushing the other way (or not at all) is no reason in this direction.
    keep = {"up": picked > 0, "down": picked < 0, "abs": picked != 0}[direction]
    names = np.where(keep, names, None)
    picked = np.where(keep, picked, np.nan)
    out = {}
    for i in range(k):
        out[f"reason_{i + 1}"] = names[:, i]
        out[f"contribution_{i + 1}"] = picked[:, i]
    return pd.DataFrame(out, index=contrib.index)


def importance(contrib: pd.DataFrame) -> pd.Series:
    """Mean |SHAP| per feature, largest first."""
    return contrib.abs().mean().sort_values(ascending=False)


def summary_plot(contrib: pd.DataFrame, X: pd.DataFrame, path: str | Path, max_features: int = 20,
                 title: str = "SHAP summary") -> Path:
    """Beeswarm-style SHAP summary (dot colour = feature value rank within the feature), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = importance(contrib).index[:max_features][::-1]
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    n = min(len(contrib), 5000)
    rows = np.sort(rng.choice(len(contrib), size=n, replace=False)) if len(contrib) > n else np.arange(n)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(feats) + 1.5))
    for i, f in enumerate(feats):
        v = contrib[f].to_numpy()[rows]
        x = X[f].iloc[rows] if f in X.columns else pd.Series(np.zeros(n))
        num = pd.to_numeric(x, errors="coerce") if not isinstance(x.dtype, pd.CategoricalDtype) else None
        colour = (num.rank(pct=True).fillna(0.5).to_numpy() if num is not None and num.notna().any()
                  else np.full(n, 0.5))
        ax.scatter(v, i + rng.uniform(-0.3, 0.3, n), c=colour, cmap="coolwarm", s=4, alpha=0.6, linewidths=0)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(range(len(feats)))
    ax.set_yticklabels(feats, fontsize=8)
    ax.set_xlabel("SHAP value (log-odds)  ·  colour: feature value low → high")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

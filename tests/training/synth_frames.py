"""Small synthetic frames for the training tests (no dependence on the feature pipeline)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_frame(n: int, seed: int, shift: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Features with a numeric signal, a string categorical and missing values; a logistic label."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "recency_days": rng.exponential(60, n),
            "frequency": rng.poisson(2, n).astype(float),
            "monetary": rng.gamma(2, 50, n),
            "channel": rng.choice(["tmall", "jd", "wecom"], n),
            "noise": rng.normal(size=n),
        }
    )
    X.loc[rng.random(n) < 0.05, "monetary"] = np.nan
    logit = -1.0 - X["recency_days"] / 60 + 0.5 * X["frequency"] + (X["channel"] == "wecom") * 1.0 + shift
    logit = logit + 0.8 * np.sin(X["noise"] * 2)  # a non-linearity trees can find
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y

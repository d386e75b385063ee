from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from training.evaluate import (
    classifier_metrics,
    clv_decile_plot,
    clv_decile_table,
    clv_metrics,
    expected_calibration_error,
    lift_table,
    reliability_plot,
)


def _ece_loop(y, p, n_bins=15):
    # Independent, loop-based ECE for comparison.
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        mask = (p >= lo) & (p < hi) if b < n_bins - 1 else (p >= lo) & (p <= hi)
        if mask.any():
            total += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return total


def test_ece_matches_independent_loop():
    rng = np.random.default_rng(1)
    p = rng.random(5000)
    y = (rng.random(5000) < p**1.5).astype(int)
    assert expected_calibration_error(y, p) == pytest.approx(_ece_loop(y, p), abs=1e-12)


def test_ece_small_when_calibrated_and_large_when_shifted():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.1, 0.7, 200_000)
    y = (rng.random(len(p)) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, p + 0.2) == pytest.approx(0.2, abs=0.01)


def test_lift_table_gains():
    rng = np.random.default_rng(3)
    y = (rng.random(1000) < 0.2).astype(int)
    tab = lift_table(y, y + rng.random(1000) * 0.1)  # a perfect ranking
    assert tab["n"].sum() == 1000 and (tab["n"] == 100).all()
    assert tab["cum_gain"].iloc[-1] == pytest.approx(1.0)
    assert tab["cum_gain"].iloc[0] == pytest.approx(100 / y.sum())
    assert tab["cum_gain"].is_monotonic_increasing


def test_classifier_metrics_agree_with_sklearn_and_reject_bad_input():
    rng = np.random.default_rng(4)
    p = rng.random(2000)
    y = (rng.random(2000) < p).astype(int)
    m = classifier_metrics(y, p)
    assert m.auc == pytest.approx(roc_auc_score(y, p))
    assert m.brier == pytest.approx(np.mean((p - y) ** 2))
    bad_p = p.copy()
    bad_p[:3] = [np.nan, 1.5, -0.1]
    bad_y = y.astype(float)
    bad_y[5] = 2
    with pytest.raises(ValueError) as err:
        classifier_metrics(bad_y, bad_p)
    msg = str(err.value)
    assert "labels must be 0/1" in msg and "1 missing probabilities" in msg
    assert "2 probabilities outside" in msg


def test_clv_metrics_and_deciles():
    rng = np.random.default_rng(5)
    real = rng.gamma(1, 100, 3000)
    pred = real * rng.lognormal(0, 0.5, 3000)
    m = clv_metrics(pred, real)
    assert m.spearman == pytest.approx(spearmanr(pred, real).statistic)
    assert m.aggregate_error == pytest.approx(pred.sum() / real.sum() - 1)
    tab = clv_decile_table(pred, real)
    assert tab["realised_sum"].sum() == pytest.approx(real.sum())
    assert tab["predicted_mean"].is_monotonic_decreasing


def test_plots_are_png(tmp_path):
    rng = np.random.default_rng(6)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    for path in (
        reliability_plot(y, {"a": p, "b": p**2}, tmp_path / "rel.png"),
        clv_decile_plot(p * 10, p * 9, tmp_path / "clv.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.training.synth_frames import make_frame
from training.classifiers import LGBMCalibratedClassifier
from training.explain import importance, reason_codes, sample_rows, shap_values, summary_plot


@pytest.fixture(scope="module")
def fitted():
    X, y = make_frame(3000, 11)
    return LGBMCalibratedClassifier(n_estimators=80, num_leaves=15).fit(X, y), make_frame(500, 12)[0]


def test_contributions_add_up_to_the_log_odds(fitted):
    m, X = fitted
    contrib = m.contributions(X)
    raw = m.predict_raw(X)
    assert np.allclose(contrib.sum(axis=1), np.log(raw / (1 - raw)), atol=1e-8)


def test_shap_values_are_lightgbm_pred_contrib(fitted):
    m, X = fitted
    got = shap_values(m, X)
    want = m.contributions(X).drop(columns="bias")
    assert list(got.columns) == list(want.columns) and got.index.equals(want.index)
    assert np.allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)


def test_sample_rows_is_seeded_ordered_and_bounded(fitted):
    _, X = fitted
    a, b = sample_rows(X, 100, seed=3), sample_rows(X, 100, seed=3)
    assert len(a) == 100 and a.index.equals(b.index) and a.index.is_monotonic_increasing
    assert sample_rows(X, 10_000) is X


def test_reason_codes_match_a_row_by_row_loop(fitted):
    m, X = fitted
    contrib = shap_values(m, X)
    codes = reason_codes(contrib, k=3, direction="up")
    for i in range(0, len(X), 37):
        row = contrib.iloc[i]
        expected = row[row > 0].sort_values(ascending=False, kind="stable").head(3)
        got = [codes.iloc[i][f"reason_{j}"] for j in range(1, 4)]
        got = [g for g in got if g is not None]
        assert got == list(expected.index)
        assert np.allclose([codes.iloc[i][f"contribution_{j}"] for j in range(1, len(got) + 1)], expected)
    down = reason_codes(contrib, k=2, direction="down")
    assert (down["contribution_1"].dropna() < 0).all()


def test_importance_and_summary_plot(fitted, tmp_path):
    m, X = fitted
    contrib = shap_values(m, X)
    imp = importance(contrib)
    assert imp.index[0] in {"recency_days", "frequency", "channel", "noise"}
    assert imp.is_monotonic_decreasing
    path = summary_plot(contrib, X, tmp_path / "shap.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_reason_codes_rejects_bad_direction():
    with pytest.raises(ValueError, match="direction"):
        reason_codes(pd.DataFrame({"a": [1.0]}), direction="sideways")

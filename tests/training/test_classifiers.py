from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.training.synth_frames import make_frame
from training.classifiers import (
    LGBMCalibratedClassifier,
    ProbabilityCalibrator,
    RFMRuleClassifier,
    logistic_baseline,
    recency_weights,
    to_logistic_input,
)
from training.evaluate import expected_calibration_error


@pytest.fixture(scope="module")
def folds():
    return {name: make_frame(n, seed) for name, n, seed in
            [("train", 4000, 1), ("val", 1500, 2), ("cal", 3000, 3), ("test", 4000, 4)]}


def _small(**kw):
    return LGBMCalibratedClassifier(n_estimators=300, learning_rate=0.1, num_leaves=15, **kw)


def test_fit_predict_deterministic_and_early_stopped(folds):
    (X, y), (Xv, yv), (Xc, yc), (Xt, _) = folds["train"], folds["val"], folds["cal"], folds["test"]
    a = _small().fit(X, y, eval_set=(Xv, yv), calib_set=(Xc, yc))
    b = _small().fit(X, y, eval_set=(Xv, yv), calib_set=(Xc, yc))
    assert np.array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    assert a.best_iteration_ < 300  # early stopping kicked in
    assert a.model_text() == b.model_text()


def test_calibration_repairs_distorted_probabilities(folds):
    (X, y), (Xv, yv), (Xc, yc), (Xt, yt) = folds["train"], folds["val"], folds["cal"], folds["test"]
    # Up-weighting positives (what class weighting does) distorts the raw probabilities …
    w = np.where(y == 1, 4.0, 1.0)
    m = _small(calibration="isotonic").fit(X, y, sample_weight=w, eval_set=(Xv, yv), calib_set=(Xc, yc))
    raw, cal = m.predict_raw(Xt), m.predict_proba(Xt)[:, 1]
    assert expected_calibration_error(yt, raw) > 0.1
    # … and the held-out calibrator repairs them without losing ranking.
    assert expected_calibration_error(yt, cal) < 0.03
    assert roc_auc_score(yt, cal) == pytest.approx(roc_auc_score(yt, raw), abs=2e-3)
    sig = _small(calibration="sigmoid").fit(X, y, sample_weight=w, eval_set=(Xv, yv), calib_set=(Xc, yc))
    assert expected_calibration_error(yt, sig.predict_proba(Xt)[:, 1]) < 0.05


def test_text_roundtrip_predicts_identically(folds):
    (X, y), (Xv, yv), (Xc, yc), (Xt, _) = folds["train"], folds["val"], folds["cal"], folds["test"]
    m = _small().fit(X, y, eval_set=(Xv, yv), calib_set=(Xc, yc))
    back = LGBMCalibratedClassifier.from_text(m.model_text(), m.meta_dict())
    assert np.array_equal(back.predict_proba(Xt), m.predict_proba(Xt))
    # The same text again: the native library compiled in training is the one scoring finds cached.
    assert back.model_text() == m.model_text()


def test_native_predictor_fits_and_predicts_exactly_as_lightgbm(folds, tmp_path, monkeypatch):
    monkeypatch.setenv("SIYU_CACHE_DIR", str(tmp_path))
    (X, y), (Xv, yv), (Xc, yc), (Xt, _) = folds["train"], folds["val"], folds["cal"], folds["test"]
    Xt = Xt.copy()
    Xt.loc[Xt.index[:5], "channel"] = ["douyin", None, "jd", "wecom", None]
    lgbm = _small(predictor="lightgbm").fit(X, y, eval_set=(Xv, yv), calib_set=(Xc, yc))
    native = _small(predictor="native").fit(X, y, eval_set=(Xv, yv), calib_set=(Xc, yc))
    assert native._native_booster(len(Xt)) is not None and lgbm._native_booster(len(Xt)) is None
    # Calibrated on natively walked trees, the calibrator is the same; so is every prediction.
    assert native.meta_dict()["calibrator"] == lgbm.meta_dict()["calibrator"]
    assert np.array_equal(native.predict_raw(Xt), lgbm.predict_raw(Xt))
    assert np.array_equal(native.predict_raw(Xt), lgbm.booster_.predict(lgbm._encode(Xt)))
    assert list((tmp_path / "trees").glob("*.so"))  # compiled once, into the cache scoring reads


def test_categoricals_unseen_and_missing_values(folds):
    (X, y), (Xt, _) = folds["train"], folds["test"]
    m = _small().fit(X, y)
    assert m.categories_ == {"channel": ["jd", "tmall", "wecom"]}
    Xn = Xt.head(3).copy()
    Xn["channel"] = ["douyin", None, "jd"]  # unseen and missing → treated as missing
    p = m.predict_proba(Xn)[:, 1]
    assert np.isfinite(p).all()
    with pytest.raises(ValueError, match="feature columns missing"):
        m.predict_proba(Xt.drop(columns=["noise", "frequency"]))


def test_bad_labels_reported_at_once(folds):
    X, y = folds["train"]
    yy = y.astype(float)
    yy[:4] = [np.nan, np.nan, 3, 0.5]
    with pytest.raises(ValueError) as err:
        _small().fit(X, yy)
    assert "2 missing labels" in str(err.value) and "2 labels not in" in str(err.value)


def test_isotonic_calibrator_strictly_increasing_and_json_roundtrip():
    rng = np.random.default_rng(0)
    s = rng.random(5000)
    y = (rng.random(5000) < s**2).astype(int)
    cal = ProbabilityCalibrator("isotonic").fit(s, y)
    grid = np.linspace(min(cal.x_), max(cal.x_), 1000)
    assert (np.diff(cal.predict(grid)) > 0).all()
    back = ProbabilityCalibrator.from_dict(cal.to_dict())
    assert np.array_equal(back.predict(s), cal.predict(s))
    assert expected_calibration_error(y, cal.predict(s)) < expected_calibration_error(y, s)


def test_baselines(folds):
    (X, y), (Xt, yt) = folds["train"], folds["test"]
    rfm = RFMRuleClassifier().fit(X, y)
    assert roc_auc_score(yt, rfm.predict_proba(Xt)[:, 1]) > 0.6
    lr = logistic_baseline(X).fit(to_logistic_input(X), y)
    assert roc_auc_score(yt, lr.predict_proba(to_logistic_input(Xt))[:, 1]) > 0.7


def test_recency_weights_halve_per_half_life():
    c = pd.Series(pd.to_datetime(["2024-01-01", "2024-07-01", "2025-01-01"]))
    w = recency_weights(c, half_life_months=6)
    assert w[2] == 1.0
    assert w[1] == pytest.approx(0.5, rel=0.02) and w[0] == pytest.approx(0.25, rel=0.02)
    assert (recency_weights(c, None) == 1).all()

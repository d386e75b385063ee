from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from training import btyd_baseline as bb
from training import tracking

TRUE = {"r": 0.8, "alpha": 40.0, "a": 0.8, "b": 3.0}


def simulate_bgnbd(n: int, seed: int, horizon: float = 365.0) -> pd.DataFrame:
    """Independent BG/NBD simulation (days): x repeat purchases, t_x, T, plus a Gamma mean spend."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    T = rng.uniform(30, horizon, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t >= T[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    monetary = np.where(x > 0, rng.gamma(5, 30, n), 0.0)
    return pd.DataFrame({bb.FREQUENCY: x, bb.RECENCY: t_x, bb.AGE: T, bb.MONETARY: monetary,
                         "cutoff": pd.Timestamp("2024-01-01")})


@pytest.fixture(scope="module")
def rows():
    return simulate_bgnbd(4000, 1)


def test_fit_recovers_parameters_and_features_are_finite(rows):
    fit = bb.fit_btyd(rows, "2024-01-01")
    assert fit.bg is not None and fit.gg is not None
    for k, v in TRUE.items():
        assert fit.bg.params_[k] == pytest.approx(v, rel=0.35), k
    feats = bb.btyd_feature_frame(fit, rows, [7, 30], 12, 0.01)
    assert feats.notna().all().all()
    assert (feats["btyd_exp_purchases_30d"] >= feats["btyd_exp_purchases_7d"]).all()
    # The true-parameter model ranks like the fitted one.
    true_e = bb.expected_purchases(bb.true_param_model(**TRUE), rows, 30)
    assert np.corrcoef(true_e, feats["btyd_exp_purchases_30d"])[0, 1] > 0.99


def test_failed_fit_is_reported_not_raised():
    tiny = simulate_bgnbd(10, 2)
    fit = bb.fit_btyd(tiny, "2024-01-01")
    assert fit.bg is None and "no BTYD fit" in fit.notes[0]
    feats = bb.btyd_feature_frame(fit, tiny, [30], 12, 0.01)
    assert feats.isna().all().all()


def test_features_per_cutoff_use_that_cutoffs_rows_only(rows):
    other = simulate_bgnbd(1500, 3).assign(cutoff=pd.Timestamp("2024-02-01"))
    stacked = pd.concat([rows, other], ignore_index=True)
    out, fits = bb.add_btyd_features(stacked, [30])
    assert [f.n_rows for f in fits] == [len(rows), len(other)]
    alone = bb.btyd_feature_frame(bb.fit_btyd(other, "2024-02-01"), other, [30], 12, 0.01)
    assert np.allclose(out.loc[len(rows):, "btyd_p_alive"].to_numpy(), alone["btyd_p_alive"].to_numpy())


def test_clv_bundle_roundtrips_through_the_registry(rows):
    fit = bb.fit_btyd(rows, "2024-01-01")
    bundle = bb.BTYDBundle(fit.bg, fit.gg, 12, 0.01, (30, 90))
    expected = bundle.predict_frame(rows)
    back = bb.BTYDBundle.from_dict(bundle.to_dict())
    assert np.allclose(back.predict_frame(rows), expected, equal_nan=True)
    with tracking.start_run("siyu-test-clv") as run:
        logged = run.log_btyd(bundle.to_dict())
        decision = tracking.register_and_gate("siyu-clv", logged, {"spearman": 0.5},
                                              tracking.GateThresholds())
    assert decision.promoted
    loaded = mlflow.pyfunc.load_model(logged.model_uri)
    pd.testing.assert_frame_equal(loaded.predict(rows), expected)
    by_alias = tracking.load_model("models:/siyu-clv@champion")
    pd.testing.assert_frame_equal(by_alias.predict(rows), expected)

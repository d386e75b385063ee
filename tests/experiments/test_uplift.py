"""Uplift meta-learners, sklift metrics and the per-channel uplift table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from experiments.readout import diff_in_means
from experiments.uplift import (
    ChannelUpliftTable,
    TLearner,
    XLearner,
    channel_uplift_table,
    qini_curve_frame,
    uplift_metrics,
)


def _world(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Randomised sample where only customers with x0 > 0 in tier 'b' respond (+0.25)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "x0": rng.normal(size=n),
            "x1": rng.normal(size=n),
            "tier": rng.choice(["a", "b"], n),
            "customer_id": [f"C{i}" for i in range(n)],  # ignored: an id is not a feature
        }
    )
    w = (rng.random(n) < 0.6).astype(int)
    base = 1 / (1 + np.exp(-(X["x1"].to_numpy() - 1.0)))
    tau = np.where((X["x0"] > 0) & (X["tier"] == "b"), 0.25, 0.0)
    p = np.clip(base + w * tau, 0, 1)
    y = (rng.random(n) < p).astype(float)
    return X, y, w, tau


@pytest.mark.parametrize("learner", [TLearner, XLearner])
def test_learners_recover_heterogeneous_uplift(learner) -> None:
    X, y, w, _ = _world(6_000, seed=1)
    model = learner(n_estimators=80, random_state=3).fit(X, y, w)
    assert model.feature_names_ == ["x0", "x1", "tier"]
    Xt, yt, wt, tau = _world(4_000, seed=2)
    pred = model.predict(Xt)
    responsive = tau > 0
    assert pred[responsive].mean() - pred[~responsive].mean() > 0.12
    learned = uplift_metrics(yt, pred, wt)
    shuffled = uplift_metrics(yt, np.random.default_rng(0).permutation(pred), wt)
    assert learned.qini_auc > shuffled.qini_auc + 0.02
    assert learned.uplift_at_30 > shuffled.uplift_at_30


def test_learners_are_deterministic_and_follow_the_estimator_contract() -> None:
    X, y, w, _ = _world(2_000, seed=4)
    for cls in (TLearner, XLearner):
        a = cls(n_estimators=30, random_state=7)
        assert not [k for k in vars(a) if k.endswith("_")]  # no fitted state before fit
        assert a.fit(X, y, w) is a
        b = clone(a).fit(X, y, w)
        np.testing.assert_array_equal(a.predict(X), b.predict(X))
        with pytest.raises(RuntimeError, match="not fitted"):
            cls().predict(X)


def test_fit_input_errors_are_listed() -> None:
    X, y, w, _ = _world(200, seed=5)
    w = w.copy()
    w[3] = 2
    y = y.copy()
    y[0] = np.nan
    with pytest.raises(ValueError) as err:
        TLearner().fit(X, y, w)
    assert "non-finite" in str(err.value) and "bad rows [3]" in str(err.value)


def test_qini_curve_frame_ends_at_total_incremental_conversions() -> None:
    X, y, w, _ = _world(1_000, seed=6)
    curve = qini_curve_frame(y, X["x0"].to_numpy(), w)
    # Independent computation: the Qini curve's last point is Y_t − Y_c · N_t / N_c.
    expected = y[w == 1].sum() - y[w == 0].sum() * (w == 1).sum() / (w == 0).sum()
    assert curve["incremental"].iat[-1] == pytest.approx(expected)
    assert curve["n_targeted"].iat[-1] == len(y)


def test_channel_uplift_table(tmp_path) -> None:
    rng = np.random.default_rng(8)
    rows = []
    for cid, channel, lift in (("c1", "sms", 0.01), ("c2", "ai_call", 0.05), ("c3", "ai_call", 0.05)):
        n = 3_000
        arm = np.where(rng.random(n) < 0.7, "treatment", "control")
        conv = (rng.random(n) < 0.1 + lift * (arm == "treatment")).astype(float)
        rows.append(
            pd.DataFrame(
                {
                    "campaign_id": cid,
                    "customer_id": [f"{cid}-{i}" for i in range(n)],
                    "arm": arm,
                    "channel": channel,
                    "cost": np.where(arm == "treatment", 0.6 if channel == "ai_call" else 0.05, 0.0),
                    "converted": conv,
                    "revenue": conv * 150.0,
                }
            )
        )
    outcomes = pd.concat(rows, ignore_index=True)
    table = channel_uplift_table(outcomes, windows={"ai_call": 14})
    ai = table.channels["ai_call"]
    calls = outcomes[outcomes["channel"] == "ai_call"]
    ref = diff_in_means(
        calls.loc[calls["arm"] == "treatment", "converted"].to_numpy(),
        calls.loc[calls["arm"] == "control", "converted"].to_numpy(),
    )
    assert ai.uplift_conversion == pytest.approx(ref.abs_lift)
    assert ai.uplift_conversion_ci == pytest.approx((ref.abs_ci_low, ref.abs_ci_high))
    assert ai.campaigns == ["c2", "c3"] and ai.window_days == 14 and ai.cost_per_contact == pytest.approx(0.6)
    assert ai.uplift_revenue == pytest.approx(150.0 * ai.uplift_conversion)
    back = ChannelUpliftTable.from_json(table.to_json(tmp_path / "channel_uplift.json"))
    assert back == table
    assert list(back.frame()["channel"]) == ["ai_call", "sms"]


def test_channel_uplift_model_scales_shared_responsiveness_by_channel() -> None:
    from experiments.uplift import ChannelUpliftModel

    X, y, w, tau = _world(12_000, seed=9)
    channel = np.where(np.arange(len(y)) % 2 == 0, "sms", "ai_call")
    # ai_call moves the same customers twice as much as sms.
    rng = np.random.default_rng(10)
    extra = (channel == "ai_call") & (w == 1) & (tau > 0) & (rng.random(len(y)) < 0.25 / 0.75)
    y = np.where(extra, 1.0, y)
    model = ChannelUpliftModel(n_estimators=60, random_state=1).fit(X, y, w, channel)
    assert model.channels_ == ["ai_call", "sms"]
    sms, call = model.predict(X, "sms"), model.predict(X, "ai_call")
    assert (sms >= 0).all() and np.corrcoef(sms, call)[0, 1] == pytest.approx(1.0)
    assert call.mean() / sms.mean() == pytest.approx(
        model.channel_mean_["ai_call"]
        / model.channel_mean_["sms"]
        * model.channel_scale_["sms"]
        / model.channel_scale_["ai_call"]
    )
    assert 1.3 < call.mean() / sms.mean() < 3.0
    assert sms[tau > 0].mean() > 2 * sms[tau == 0].mean()
    with pytest.raises(ValueError, match="no past campaign on channel 'coupon'"):
        model.predict(X, "coupon")

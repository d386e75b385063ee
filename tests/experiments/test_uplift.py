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
    # Two channels are too few to pool: the scales are each channel's own estimate.
    assert model.channel_scale_ == model.channel_raw_scale_
    scales = model.channel_scale_
    assert call.mean() / sms.mean() == pytest.approx(scales["ai_call"] / scales["sms"])
    assert 1.3 < call.mean() / sms.mean() < 3.0
    assert sms[tau > 0].mean() > 2 * sms[tau == 0].mean()
    # The scaled predictions average to each channel's randomised difference in means over its units.
    for ch, pred in (("sms", sms), ("ai_call", call)):
        rows = channel == ch
        assert pred[rows].mean() == pytest.approx(model.channel_mean_[ch], abs=0.02)
    with pytest.raises(ValueError, match="no past campaign on channel 'coupon'"):
        model.predict(X, "coupon")


def test_channel_scales_are_partially_pooled_across_three_or_more_channels() -> None:
    from experiments.uplift import ChannelUpliftModel, random_effects_shrinkage

    X, y, w, tau = _world(15_000, seed=12)
    channel = np.array(["a", "b", "c"])[np.arange(len(y)) % 3]
    pooled = ChannelUpliftModel(n_estimators=40, random_state=2).fit(X, y, w, channel)
    alone = ChannelUpliftModel(n_estimators=40, random_state=2, channel_pooling="none").fit(X, y, w, channel)
    assert alone.channel_scale_ == alone.channel_raw_scale_ == pooled.channel_raw_scale_
    names = pooled.channels_
    post, mu, _ = random_effects_shrinkage(
        [pooled.channel_raw_scale_[c] for c in names], [pooled.channel_scale_se_[c] for c in names]
    )
    assert [pooled.channel_scale_[c] for c in names] == pytest.approx(post.tolist())
    # Every pooled scale lies between its own estimate and the common mean.
    for c, p in zip(names, post, strict=True):
        raw = pooled.channel_raw_scale_[c]
        assert min(raw, mu) - 1e-12 <= p <= max(raw, mu) + 1e-12


def test_random_effects_shrinkage_matches_dersimonian_laird() -> None:
    from experiments.uplift import random_effects_shrinkage

    est = np.array([0.040, 0.031, 0.008, -0.001, 0.055])
    se = np.array([0.0064, 0.0097, 0.0063, 0.0064, 0.0104])
    post, mu, tau2 = random_effects_shrinkage(est, se)
    # Independent computation: statsmodels.stats.meta_analysis.combine_effects(est, se**2, method_re="dl")
    # gives tau2 = 0.0004512035561895915 and mean_effect_re = 0.025787316010054538.
    assert tau2 == pytest.approx(0.0004512035561895915, rel=1e-9)
    assert mu == pytest.approx(0.025787316010054538, rel=1e-9)
    shrink = se**2 / (se**2 + tau2)
    np.testing.assert_allclose(post, (1 - shrink) * est + shrink * mu)
    # Homogeneous estimates (Q below its degrees of freedom): τ² = 0 and every estimate becomes the mean.
    post, mu, tau2 = random_effects_shrinkage([0.02, 0.021, 0.019], [0.01, 0.01, 0.01])
    assert tau2 == 0.0 and mu == pytest.approx(0.02) and post == pytest.approx([0.02] * 3)
    with pytest.raises(ValueError, match="standard errors"):
        random_effects_shrinkage([0.1, 0.2], [0.01, 0.0])


def test_xlearner_weighting_and_external_baseline() -> None:
    X, y, w, tau = _world(6_000, seed=13)
    share = w.mean()
    prop = XLearner(n_estimators=40, random_state=1).fit(X, y, w)
    arm = XLearner(n_estimators=40, random_state=1, weighting="arm_size").fit(X, y, w)
    assert prop.g_ == pytest.approx(share) and arm.g_ == pytest.approx(1 - share)
    Xe = arm._prepare_predict(X)
    manual = (1 - share) * arm.effect_control_.predict(Xe) + share * arm.effect_treated_.predict(Xe)
    np.testing.assert_allclose(arm.predict(X), manual)
    # The true organic probability as μ₀: the treated half learns the effect without a control model.
    base = 1 / (1 + np.exp(-(X["x1"].to_numpy() - 1.0)))
    with_base = XLearner(n_estimators=80, random_state=3, weighting="arm_size").fit(X, y, w, baseline=base)
    pred = with_base.predict(X)
    assert pred[tau > 0].mean() - pred[tau == 0].mean() > 0.12
    with pytest.raises(ValueError, match="baseline must be"):
        XLearner().fit(X, y, w, baseline=base[:10])
    with pytest.raises(ValueError, match="weighting"):
        XLearner(weighting="both").fit(X, y, w)


def test_baseline_outcome_model_learns_the_organic_rate() -> None:
    from experiments.uplift import BaselineOutcomeModel

    X, y, w, _ = _world(8_000, seed=14)
    untreated = w == 0
    model = BaselineOutcomeModel(n_estimators=80).fit(X[untreated], y[untreated])
    assert model.feature_names_ == ["x0", "x1", "tier"]
    base = 1 / (1 + np.exp(-(X["x1"].to_numpy() - 1.0)))
    p = model.predict(X)
    assert ((p >= 0) & (p <= 1)).all()
    assert np.corrcoef(p, base)[0, 1] > 0.9
    with pytest.raises(RuntimeError, match="not fitted"):
        BaselineOutcomeModel().predict(X)

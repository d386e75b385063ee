"""Readout statistics: SRM blocking, interval coverage, CUPED, Holm, power, outcomes from tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.readout import (
    ReadoutConfig,
    SampleRatioMismatch,
    campaign_outcomes,
    cuped_lift,
    diff_in_means,
    holm,
    mde_means,
    mde_two_proportions,
    n_means,
    n_two_proportions,
    power_two_proportions,
    readout_campaign,
    srm_check,
)

HALF = {"treatment": 0.5, "control": 0.5}


def _outcomes(n_t: int, n_c: int, seed: int = 0, p_t: float = 0.12, p_c: float = 0.10) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = np.array(["treatment"] * n_t + ["control"] * n_c)
    pre = rng.gamma(1.0, 100.0, n_t + n_c)
    p = np.where(arm == "treatment", p_t, p_c)
    conv = (rng.random(n_t + n_c) < p).astype(float)
    return pd.DataFrame(
        {
            "campaign_id": "c1",
            "customer_id": [f"C{i}" for i in range(n_t + n_c)],
            "arm": arm,
            "channel": "sms",
            "cost": np.where(arm == "treatment", 0.05, 0.0),
            "converted": conv,
            "revenue": conv * rng.gamma(2.0, 100.0, n_t + n_c) + 0.3 * pre * conv,
            "pre_spend": pre,
        }
    )


def test_srm_blocks_5000_vs_5400_and_passes_5000_vs_5100() -> None:
    blocked = srm_check({"treatment": 5_000, "control": 5_400}, HALF)
    assert not blocked.passed and blocked.p_value < 0.001
    # Independent computation: chi2 = Σ (o − e)² / e with e = 5,200 per arm.
    assert blocked.chi2 == pytest.approx(2 * 200**2 / 5_200)
    ok = srm_check({"treatment": 5_000, "control": 5_100}, HALF)
    assert ok.passed and ok.p_value == pytest.approx(stats.chi2.sf(2 * 50**2 / 5_050, 1))

    with pytest.raises(SampleRatioMismatch, match="SAMPLE RATIO MISMATCH — READOUT BLOCKED") as err:
        readout_campaign(_outcomes(5_000, 5_400), HALF)
    assert err.value.srm.observed == {"treatment": 5_000, "control": 5_400}
    readout = readout_campaign(_outcomes(5_000, 5_100), HALF)
    assert readout.srm.passed and len(readout.lifts) == 4


def test_srm_rejects_arms_not_in_design() -> None:
    with pytest.raises(ValueError, match=r"arms \['sms'\] were observed"):
        srm_check({"treatment": 10, "control": 10, "sms": 3}, HALF)


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 2.0, 300), rng.normal(0.7, 1.0, 500)
    est = diff_in_means(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert est.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (est.abs_ci_low, est.abs_ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def _coverage(kind: str, n_sims: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    n = 400
    hits = 0
    for _ in range(n_sims):
        if kind == "conversion_abs" or kind == "conversion_rel":
            p_c, p_t = 0.20, 0.24
            yt, yc = (rng.random(n) < p_t).astype(float), (rng.random(n) < p_c).astype(float)
            est = diff_in_means(yt, yc)
            if kind == "conversion_abs":
                hits += est.abs_ci_low <= p_t - p_c <= est.abs_ci_high
            else:
                hits += est.rel_ci_low <= p_t / p_c - 1 <= est.rel_ci_high
        else:  # skewed revenue with a pre-period covariate, CUPED adjusted; true lift = 15
            xt, xc = rng.gamma(2.0, 50.0, n), rng.gamma(2.0, 50.0, n)
            yt = 0.8 * xt + rng.gamma(2.0, 30.0, n) + 15.0
            yc = 0.8 * xc + rng.gamma(2.0, 30.0, n)
            est = cuped_lift(yt, yc, xt, xc)
            hits += est.abs_ci_low <= 15.0 <= est.abs_ci_high
    return hits / n_sims


@pytest.mark.parametrize("kind", ["conversion_abs", "conversion_rel", "revenue_cuped"])
def test_95_percent_intervals_cover_the_truth_93_to_97_percent(kind: str) -> None:
    # 1,500 experiments: the coverage estimate has s.d. ≈ 0.56 pp, so 93–97 % is a ±3.5 s.d. band.
    coverage = _coverage(kind, 1_500, seed=11)
    assert 0.93 <= coverage <= 0.97, coverage


def test_cuped_is_unbiased_and_reduces_variance() -> None:
    rng = np.random.default_rng(5)
    raw_est, adj_est, ratios = [], [], []
    for _ in range(400):
        xt, xc = rng.gamma(2.0, 50.0, 300), rng.gamma(2.0, 50.0, 300)
        yt = 0.8 * xt + rng.normal(0, 40, 300) + 10.0
        yc = 0.8 * xc + rng.normal(0, 40, 300)
        raw_est.append(diff_in_means(yt, yc).abs_lift)
        est = cuped_lift(yt, yc, xt, xc)
        adj_est.append(est.abs_lift)
        ratios.append(est.variance_ratio)
    adj_est, raw_est = np.array(adj_est), np.array(raw_est)
    assert abs(adj_est.mean() - 10.0) < 4 * adj_est.std(ddof=1) / np.sqrt(len(adj_est))
    # Theory: Var ratio = 1 − ρ², ρ² = 0.64·5000 / (0.64·5000 + 1600) = 2/3.
    assert np.var(adj_est) / np.var(raw_est) == pytest.approx(1 / 3, rel=0.2)
    assert np.median(ratios) == pytest.approx(1 / 3, rel=0.15)


def test_holm_matches_hand_computation() -> None:
    # sorted p: 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone max → 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.5, np.nan, 0.9])
    assert np.isnan(out[1]) and out[[0, 2]] == pytest.approx([1.0, 1.0])  # 0.5·2 = 1.0, then max(1.0, 0.9)


def test_power_calculator_agrees_with_simulation_and_closed_forms() -> None:
    nt, nc = n_two_proportions(0.10, 0.02, alpha=0.05, power=0.8)
    assert nt == nc
    assert power_two_proportions(0.10, 0.02, nt, nc) == pytest.approx(0.8, abs=0.002)
    rng = np.random.default_rng(2)
    sims = 2_000
    xt, xc = rng.binomial(nt, 0.12, sims), rng.binomial(nc, 0.10, sims)
    pt, pc = xt / nt, xc / nc
    pool = (xt + xc) / (nt + nc)
    z = (pt - pc) / np.sqrt(pool * (1 - pool) * (1 / nt + 1 / nc))
    assert (np.abs(z) > 1.959964).mean() == pytest.approx(0.8, abs=0.03)
    assert mde_two_proportions(0.10, nt, nc) == pytest.approx(0.02, rel=0.01)
    # Means: n = (z_.975 + z_.8)² · 2σ²/δ² — the textbook 15.7 σ²/δ² per arm.
    assert n_means(10.0, 1.0)[0] == int(np.ceil(2 * (1.959964 + 0.841621) ** 2 * 100))
    assert mde_means(10.0, 1570, 1570) == pytest.approx(1.0, rel=0.001)


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    t0 = pd.Timestamp("2024-05-01 02:00", tz="UTC")
    touches = pd.DataFrame(
        {
            "touch_id": ["t1", "t2", "t3", "t4"],
            "customer_id": ["a", "b", "c", "a"],
            "ts": [t0, t0, t0, t0 + pd.Timedelta(days=1)],
            "campaign_id": ["c1", "c1", "c1", "c1"],
            "channel": ["sms", "sms", "sms", "sms"],
            "arm": ["treatment", "control", "treatment", "treatment"],
            "cost": [0.05, 0.0, 0.05, 0.05],
        }
    )
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "b", "c", "c"],
            "ts": [
                t0 + pd.Timedelta(days=2),  # in window
                t0 - pd.Timedelta(days=10),  # pre-period
                t0 + pd.Timedelta(days=7),  # just outside the 7-day window
                t0 + pd.Timedelta(days=1),  # in window but refunded → not a purchase
                t0 - pd.Timedelta(days=200),  # before the pre-period
                t0 + pd.Timedelta(hours=1),
            ],
            "status": ["paid", "paid", "paid", "refunded", "paid", "paid"],
            "net_amount": [100.0, 40.0, 70.0, 0.0, 55.0, 20.0],
        }
    )
    return touches, orders


def test_campaign_outcomes_respect_windows_and_status() -> None:
    touches, orders = _tables()
    out = campaign_outcomes(touches, orders, ReadoutConfig(window_days=7, pre_period_days=90))
    out = out.set_index("customer_id")
    assert out.loc["a", ["converted", "revenue", "pre_spend", "cost"]].tolist() == [1.0, 100.0, 40.0, 0.10]
    assert out.loc["b", ["converted", "revenue", "pre_spend"]].tolist() == [0.0, 0.0, 0.0]
    assert out.loc["c", ["converted", "revenue", "pre_spend"]].tolist() == [1.0, 20.0, 0.0]


def test_conflicting_arms_are_reported() -> None:
    touches, orders = _tables()
    touches.loc[3, "arm"] = "control"
    with pytest.raises(ValueError, match="1 customers appear in more than one arm"):
        campaign_outcomes(touches, orders)


def test_readout_roi_and_holm_fields() -> None:
    df = _outcomes(3_000, 3_000, seed=4, p_t=0.15, p_c=0.10)
    r = readout_campaign(df, HALF, ReadoutConfig(margin_rate=0.4))
    rev = next(x for x in r.lifts if x.metric == "revenue" and x.cuped)
    roi = r.roi[0]
    assert roi.cost == pytest.approx(3_000 * 0.05)
    assert roi.roi == pytest.approx(0.4 * rev.abs_lift * 3_000 / roi.cost)
    assert roi.roi_ci_low < roi.roi < roi.roi_ci_high
    for family in (True, False):
        ps = [x for x in r.lifts if x.cuped is family]
        assert [x.p_holm for x in ps] == pytest.approx(list(holm([x.p_value for x in ps])))
    assert "campaign c1" in r.to_text() and "<table" in r.to_html(b"\x89PNG")

"""Targeting simulator: budgeted allocation, strategy validation, and the strategy comparison."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from experiments.simulate import (
    SimulationConfig,
    allocate,
    business_midnight,
    compare_strategies,
    cross_fitted_baseline,
    evaluate_choice,
    load_history,
    past_campaigns,
    simulate,
    untreated_frame,
)


def _brute_force(V: np.ndarray, c: np.ndarray, budget: float) -> float:
    """Exact optimum of the multiple-choice knapsack by enumeration (−1 = not contacted)."""
    best = 0.0
    for plan in itertools.product(range(-1, V.shape[1]), repeat=V.shape[0]):
        cost = sum(c[j] for j in plan if j >= 0)
        if cost <= budget + 1e-9:
            best = max(best, sum(V[i, j] for i, j in enumerate(plan) if j >= 0))
    return best


def test_allocation_is_feasible_and_near_optimal() -> None:
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(30):
        V = rng.normal(1.0, 2.0, (7, 2))
        c = np.array([1.0, 2.5])
        budget = float(rng.uniform(2, 8))
        value = pd.DataFrame(V, index=[f"C{i}" for i in range(7)], columns=["sms", "call"])
        choice = allocate(value, {"sms": 1.0, "call": 2.5}, budget)
        spend = choice["channel"].map({"sms": 1.0, "call": 2.5}).sum()
        assert spend <= budget + 1e-9 and choice["customer_id"].is_unique
        got = sum(value.loc[r.customer_id, r.channel] for r in choice.itertuples())
        opt = _brute_force(V, c, budget)
        assert got <= opt + 1e-9
        ratios.append(got / opt if opt > 0 else 1.0)
    assert np.mean(ratios) > 0.95 and min(ratios) > 0.75


def test_allocation_takes_every_positive_option_when_budget_allows() -> None:
    value = pd.DataFrame({"a": [3.0, -1.0, 0.5], "b": [1.0, -2.0, 2.0]}, index=["x", "y", "z"])
    choice = allocate(value, {"a": 1.0, "b": 1.0}, budget=100.0)
    assert dict(zip(choice["customer_id"], choice["channel"], strict=True)) == {"x": "a", "z": "b"}


def test_evaluate_choice_rejects_invalid_plans() -> None:
    truth = {"sms": pd.DataFrame({"uplift_p": [0.1, 0.2], "uplift_value": [10.0, 20.0]}, index=["a", "b"])}
    costs = {"sms": 1.0}
    ok = evaluate_choice(
        pd.DataFrame({"customer_id": ["a", "b"], "channel": "sms"}), truth, costs, 2.0, 0.5, "s"
    )
    assert ok.incremental_profit == pytest.approx(0.5 * 30.0 - 2.0)
    with pytest.raises(ValueError) as err:
        evaluate_choice(
            pd.DataFrame({"customer_id": ["a", "a"], "channel": "sms"}), truth, costs, 1.0, 0.5, "bad"
        )
    assert "chosen twice" in str(err.value) and "exceeds the budget" in str(err.value)
    with pytest.raises(ValueError, match="unknown channels"):
        evaluate_choice(pd.DataFrame({"customer_id": ["a"], "channel": "fax"}), truth, costs, 9.0, 0.5, "x")


def test_targeting_features_use_only_history_before_the_cutoff(small_world) -> None:
    import datetime as dt

    from experiments.targeting_features import BTYD_COLUMNS, targeting_features
    from features.snapshot import load_tables

    tables = load_tables(small_world)
    day = dt.date(2024, 3, 1)
    before = targeting_features(tables, day)
    assert set(BTYD_COLUMNS) <= set(before.columns) and before["customer_id"].is_unique
    assert before["btyd_p_alive"].between(0, 1).all() and (before["expected_spend"] > 0).all()
    # Appending orders, events and touches on/after the cutoff must not change any feature.
    later = {}
    for name, key in (("orders", "order_id"), ("events", None), ("touches", "touch_id")):
        extra = tables[name].copy()
        extra["ts"] = extra["ts"] + pd.Timedelta(days=3650)
        if key:
            extra[key] = extra[key] + "-future"
        later[name] = pd.concat([tables[name], extra], ignore_index=True)
    after = targeting_features({**tables, **later}, day)
    pd.testing.assert_frame_equal(before, after)


def test_untreated_frame_holds_every_untreated_customer_with_the_window_outcome(small_world) -> None:
    import datetime as dt

    from features.schema import PURCHASE_STATUSES

    cutoff = dt.date(2024, 7, 1)
    hist = load_history(small_world, cutoff)
    frame = untreated_frame(small_world, hist, cutoff, progress=False)
    camps = past_campaigns(small_world, hist, finished_before=cutoff)
    assert sorted(frame["campaign_id"].unique()) == [c.campaign_id for c in camps]
    touches, orders = hist.touches, hist.orders
    paid = orders[orders["status"].isin(PURCHASE_STATUSES)]
    for camp in camps:
        rows = frame[frame["campaign_id"] == camp.campaign_id]
        t = touches[touches["campaign_id"] == camp.campaign_id]
        treated = set(t.loc[t["arm"] == "treatment", "customer_id"])
        known = set(hist.customers.loc[hist.customers["first_seen_ts"] < business_midnight(camp.start_day),
                                       "customer_id"])  # fmt: skip
        assert set(rows["customer_id"]) == known - treated
        assert set(t.loc[t["arm"] != "treatment", "customer_id"]) & known <= set(rows["customer_id"])
        end = camp.start + pd.Timedelta(days=camp.window_days)
        buyers = set(paid.loc[(paid["ts"] >= camp.start) & (paid["ts"] < end), "customer_id"])
        expected = rows["customer_id"].isin(buyers).astype(float).to_numpy()
        np.testing.assert_array_equal(rows["converted"].to_numpy(), expected)
        assert (rows["window_days"] == camp.window_days).all()


def test_cross_fitted_baseline_never_scores_a_customer_with_a_model_that_saw_them() -> None:
    rng = np.random.default_rng(3)
    n = 3_000
    ids = np.array([f"C{i:05d}" for i in range(n)])
    # Each customer's outcome is fixed and only their id-derived feature predicts it: a model that saw
    # the customer could memorise it, one that did not can only guess the base rate.
    code = rng.permutation(n).astype(float)
    y = (rng.random(n) < 0.3).astype(float)
    untreated = pd.DataFrame({"customer_id": ids, "code": code, "converted": y})
    units = untreated.iloc[:600].drop(columns="converted")
    mu0 = cross_fitted_baseline(untreated, units, ["code"], folds=3)
    assert np.isfinite(mu0).all()
    from sklearn.metrics import roc_auc_score

    assert abs(roc_auc_score(y[:600], mu0) - 0.5) < 0.08
    assert abs(mu0.mean() - y.mean()) < 0.05


@pytest.mark.slow
def test_strategy_comparison_on_a_small_world(small_world) -> None:
    cfg = SimulationConfig(budget=600.0, seed=1)
    sim = simulate(small_world, cfg, progress=False)
    t = sim.table.set_index("strategy")
    assert list(t.index) == ["random", "churn_risk", "clv_x_risk", "uplift", "feature_oracle", "oracle"]
    assert (t["spend"] <= cfg.budget + 1e-6).all()
    assert t.loc["oracle", "share_of_oracle"] == pytest.approx(1.0)
    assert (t["incremental_profit"] <= t.loc["oracle", "incremental_profit"] + 1e-6).all()
    assert t.loc["uplift", "incremental_profit"] > t.loc["churn_risk", "incremental_profit"]
    summary = sim.summary_json()
    assert set(summary["share_of_oracle"]) == set(t.index)

    # Any function with the strategy signature can be evaluated on the same truth.
    truth = {ch: _truth_from_scores(sim.scores, ch, cfg.margin_rate) for ch in sim.channels}
    costs = {ch: _cost(ch) for ch in sim.channels}

    def everyone_by_sms(scores, budget, costs):
        k = int(budget // costs["sms"])
        return pd.DataFrame({"customer_id": scores["customer_id"].iloc[:k], "channel": "sms"})

    table = compare_strategies(
        sim.scores, {"sms_all": everyone_by_sms}, truth, costs, cfg.budget, cfg.margin_rate
    )
    assert table.loc[0, "spend"] <= cfg.budget


def _cost(ch: str) -> float:
    from features.synthetic import CHANNEL_COSTS

    return float(CHANNEL_COSTS[ch])


def _truth_from_scores(scores: pd.DataFrame, ch: str, margin: float) -> pd.DataFrame:
    from features.synthetic import CHANNEL_COSTS

    value = (scores[f"true_profit_{ch}"] + CHANNEL_COSTS[ch]) / margin
    return pd.DataFrame({"uplift_p": 0.0, "uplift_value": value.to_numpy()}, index=scores["customer_id"])

"""Targeting simulator: budgeted allocation, strategy validation, and the strategy comparison."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from experiments.simulate import (
    SimulationConfig,
    allocate,
    compare_strategies,
    cutoff_features,
    evaluate_choice,
    simulate,
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


def test_cutoff_features_use_only_history_before_the_cutoff(small_world) -> None:
    import datetime as dt

    from features.io import read_table

    customers, orders = read_table(small_world, "customers"), read_table(small_world, "orders")
    day = dt.date(2024, 3, 1)
    before = cutoff_features(customers, orders, day)
    # Appending orders on/after the cutoff must not change any feature.
    later = orders.copy()
    later["ts"] = later["ts"] + pd.Timedelta(days=3650)
    later["order_id"] = later["order_id"] + "-future"
    after = cutoff_features(customers, pd.concat([orders, later], ignore_index=True), day)
    pd.testing.assert_frame_equal(before, after)


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

"""The tiering policy evaluated as a targeting strategy on the experiments simulator's truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from serving.policy_eval import bgnbd_p_purchase, main


class _BG:
    params_ = {"r": 0.75, "alpha": 45.0}


def test_bgnbd_p_purchase_matches_numerical_integration() -> None:
    """P(alive) · ∫ (1 − e^{−λt}) Gamma(λ; r + x, α + T) dλ, integrated numerically."""
    r, alpha = _BG.params_["r"], _BG.params_["alpha"]
    for x, T, p_alive, t in [(0, 0.0, 1.0, 7.0), (3, 200.0, 0.7, 7.0), (10, 400.0, 0.95, 30.0)]:
        gamma = stats.gamma(a=r + x, scale=1.0 / (alpha + T))
        integrand = lambda lam, t=t, g=gamma: (1 - np.exp(-lam * t)) * g.pdf(lam)  # noqa: E731
        want = p_alive * integrate.quad(integrand, 0, np.inf)[0]
        got = bgnbd_p_purchase(_BG(), np.array([x]), np.array([T]), np.array([p_alive]), t)[0]
        assert got == pytest.approx(want, rel=1e-6)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.synthetic import SynthConfig, generate_world, write_world

    out = tmp_path_factory.mktemp("policy_world")
    write_world(generate_world(SynthConfig(customers=4_000, seed=11)), out)
    return out


@pytest.mark.slow
def test_policy_is_reported_beside_the_simulator_strategies(world: Path, capsys) -> None:
    result = main(["--data", str(world), "--seed", "1", "--budgets", "150,600"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1]) == json.loads(json.dumps(result, ensure_ascii=False))
    assert any("tiering_learned" in line for line in printed[:-1])  # the human-readable table
    for budget in ("150", "600"):
        profit = result["budgets"][budget]["incremental_profit"]
        share = result["budgets"][budget]["share_of_oracle"]
        assert {
            "random",
            "churn_risk",
            "clv_x_risk",
            "uplift",
            "oracle",
            "tiering_prior",
            "tiering_learned",
        } <= set(profit)
        assert share["oracle"] == 1.0
        # The simulator itself rejects plans over budget or naming a customer twice; here: the truth.
        for name in ("tiering_prior", "tiering_learned"):
            assert profit[name] <= profit["oracle"]
            assert profit[name] > profit["churn_risk"], (budget, name)
            assert profit[name] > 0

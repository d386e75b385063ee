"""Tiny run of benchmarks/targeting_simulation.py so the script cannot rot."""

from __future__ import annotations

import json

import pytest

from benchmarks import targeting_simulation


@pytest.mark.slow
def test_targeting_benchmark_smoke(small_world, capsys) -> None:
    result = targeting_simulation.main(["--data", str(small_world), "--budgets", "200,400"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(result, ensure_ascii=False))
    assert set(last["budgets"]) == {"200", "400"}
    assert last["budgets"]["200"]["share_of_oracle"]["oracle"] == 1.0
    for budget in ("200", "400"):
        profit = last["budgets"][budget]["incremental_profit"]
        assert {"uplift", "feature_oracle", "persona_oracle", "oracle"} <= set(profit)
        # The references know more than any strategy, never more than the oracle itself.
        assert max(profit.values()) == pytest.approx(profit["oracle"])
        assert last["share_uplift"][budget] == last["budgets"][budget]["share_of_oracle"]["uplift"]

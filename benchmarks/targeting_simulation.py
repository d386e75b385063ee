"""Targeting strategies on a synthetic world: true incremental profit at several fixed budgets.

Generates a world (or reuses ``--data``), fits the churn, CLV and channel-uplift models before the
cutoff once, then evaluates every strategy at each budget against the world's truth. The named
baseline is the ``oracle`` (true uplift): every row reports its share of the oracle's profit. Two
references bound what a model can reach:

* ``feature_oracle`` — the true profit regressed on the observable features, cross-fitted: a model
  trained on noise-free labels;
* ``persona_oracle`` — knows each customer's latent persona (persuadable, sleeping dog, …) and nothing
  else latent: persuasion strength is its population mean, the alive state is BG/NBD P(alive) and the
  spend per order the Gamma-Gamma estimate, as the uplift strategy has them.

Usage: ``python -m benchmarks.targeting_simulation [--customers 20000] [--budgets 500,1000,2000,4000,8000]``.
The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.simulate import (
    Scenario,
    SimulationConfig,
    Strategy,
    expected_order_value,
    format_table,
    prepare_scenario,
    profit_strategy,
)

DEFAULT_BUDGETS = "500,1000,2000,4000,8000"


def persona_oracle(scenario: Scenario, data: Path) -> Strategy:
    """The allocation on profits known up to everything but the persona (module docstring).

    Adds ``persona_oracle_{channel}`` columns to ``scenario.scores``.
    """
    from features.synthetic import load_truth, oracle_uplift

    truth = load_truth(data)
    p = truth.persons
    persuadable = (p["persona"] == "persuadable").to_numpy()
    strength = np.where(persuadable, float(p.loc[persuadable, "persuasion"].mean()), 0.0)
    alive = pd.Series(pd.NaT, index=p.index, dtype=p["dropout_ts"].dtype)  # effect if alive
    known = dataclasses.replace(truth, persons=p.assign(persuasion=strength, dropout_ts=alive))
    scores = scenario.scores
    p_alive = scores["btyd_p_alive"].fillna(1.0).to_numpy()
    spend = expected_order_value(scores).to_numpy()
    cfg = scenario.config
    for ch in scenario.channels:
        up = oracle_uplift(known, scenario.cutoff, ch, cfg.window_days)["uplift_p"]
        up = up.reindex(scores["customer_id"]).fillna(0.0).to_numpy()
        scores[f"persona_oracle_{ch}"] = cfg.margin_rate * up * p_alive * spend - scenario.costs[ch]
    return profit_strategy("persona_oracle_", scenario.channels)


def run(data: Path, budgets: list[float], seed: int) -> dict[str, object]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BTYD convergence notes are not the subject here
        scenario = prepare_scenario(data, SimulationConfig(budget=max(budgets), seed=seed), progress=False)
    fit_seconds = time.perf_counter() - t0
    extra = {"persona_oracle": persona_oracle(scenario, data)}
    results = {}
    for b in budgets:
        table = scenario.compare(b, extra=extra)
        print(
            f"\nbudget ¥{b:,.0f} (cutoff {scenario.cutoff}, {len(scenario.scores):,} contactable customers)"
        )
        print(format_table(table))
        t = table.set_index("strategy")
        results[f"{b:g}"] = {
            "incremental_profit": {k: round(float(v), 2) for k, v in t["incremental_profit"].items()},
            "share_of_oracle": {k: round(float(v), 4) for k, v in t["share_of_oracle"].items()},
        }
    shares = {
        f"share_{name}": {b: r["share_of_oracle"][name] for b, r in results.items()}
        for name in ("uplift", "churn_risk", "feature_oracle", "persona_oracle")
    }
    return {
        "benchmark": "targeting_simulation",
        "baseline": "oracle (true uplift)",
        "customers": int(len(scenario.scores)),
        "channels": scenario.channels,
        **shares,
        "oracle_profit": {b: r["incremental_profit"]["oracle"] for b, r in results.items()},
        "budgets": results,
        "fit_seconds": round(fit_seconds, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000, help="size of the generated world")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS, help="comma-separated budgets in ¥")
    parser.add_argument("--data", type=Path, default=None, help="reuse an existing synthetic world")
    args = parser.parse_args(argv)
    budgets = [float(x) for x in args.budgets.split(",") if x.strip()]
    if args.data is not None:
        result = run(args.data, budgets, args.seed)
    else:
        from features.synthetic import SynthConfig, generate_world, write_world

        with tempfile.TemporaryDirectory() as d:
            write_world(generate_world(SynthConfig(customers=args.customers, seed=args.seed)), d)
            result = run(Path(d), budgets, args.seed)
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()

"""Targeting strategies on a synthetic world: true incremental profit at several fixed budgets.

Generates a world (or reuses ``--data``), fits the churn, CLV and channel-uplift models before the
cutoff once, then evaluates every strategy at each budget against the world's truth. The named
baseline is the ``oracle`` (true uplift): every row reports its share of the oracle's profit; the
``feature_oracle`` row is the ceiling of any model built on the same observable features.

Usage: ``python -m benchmarks.targeting_simulation [--customers 20000] [--budgets 1000,2000,4000,8000]``.
The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

from experiments.simulate import SimulationConfig, format_table, prepare_scenario


def run(data: Path, budgets: list[float], seed: int) -> dict[str, object]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BTYD convergence notes are not the subject here
        scenario = prepare_scenario(data, SimulationConfig(budget=max(budgets), seed=seed), progress=False)
    fit_seconds = time.perf_counter() - t0
    results = {}
    for b in budgets:
        table = scenario.compare(b)
        print(
            f"\nbudget ¥{b:,.0f} (cutoff {scenario.cutoff}, {len(scenario.scores):,} contactable customers)"
        )
        print(format_table(table))
        t = table.set_index("strategy")
        results[f"{b:g}"] = {
            "incremental_profit": {k: round(float(v), 2) for k, v in t["incremental_profit"].items()},
            "share_of_oracle": {k: round(float(v), 4) for k, v in t["share_of_oracle"].items()},
        }
    return {
        "benchmark": "targeting_simulation",
        "baseline": "oracle (true uplift)",
        "customers": int(len(scenario.scores)),
        "channels": scenario.channels,
        "budgets": results,
        "fit_seconds": round(fit_seconds, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000, help="size of the generated world")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--budgets", default="1000,2000,4000,8000", help="comma-separated budgets in ¥")
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

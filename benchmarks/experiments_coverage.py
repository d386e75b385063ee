"""Coverage of the readout's 95 % intervals over many simulated A/B experiments with a known effect.

Each experiment builds real ``touches`` and ``orders`` tables (50/50 design, 7-day window, a pre-period
order history that correlates with the outcome), runs them through ``campaign_outcomes`` and
``readout_campaign`` exactly as the CLI does, and checks whether each interval contains the true
effect. The baseline is the nominal 95 %; CUPED's variance ratio (CUPED / raw) is reported too.

Usage: ``python -m benchmarks.experiments_coverage [--experiments 400] [--customers 4000]``.
The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from tqdm import tqdm

from experiments.readout import ReadoutConfig, campaign_outcomes, readout_campaign

T0 = pd.Timestamp("2024-06-01 02:00", tz="UTC")
P_CONTROL, P_TREATMENT = 0.10, 0.13
SPEND_SHAPE, SPEND_SCALE = 2.0, 80.0  # order value ~ Gamma(2, 80): mean ¥160


def truth() -> dict[str, float]:
    """True effects of the simulated campaign (at most one order in the window).

    With latent scale s ~ Gamma(2, 0.5) (E s = 1, E s² = 1.5), P(convert) = p_arm · s and order value
    ~ Gamma(2, 80) · s, so E[revenue] = p_arm · 160 · E s² and E[conversion] = p_arm.
    """
    base_rev = SPEND_SHAPE * SPEND_SCALE * 1.5
    return {
        "conversion_abs": P_TREATMENT - P_CONTROL,
        "conversion_rel": P_TREATMENT / P_CONTROL - 1,
        "revenue_abs": (P_TREATMENT - P_CONTROL) * base_rev,
        "revenue_rel": P_TREATMENT / P_CONTROL - 1,
    }


def simulate_tables(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One experiment's touches and orders; customers with a higher pre-period spend buy more."""
    ids = np.array([f"C{i:06d}" for i in range(n)], dtype=object)
    # Complete randomisation (exactly half per arm) so no run trips the SRM guard by chance.
    arm = np.where(rng.permutation(n) < n // 2, "treatment", "control")
    touches = pd.DataFrame(
        {
            "touch_id": [f"T{i}" for i in range(n)],
            "customer_id": ids,
            "ts": T0 + pd.to_timedelta(rng.uniform(0, 3600, n), unit="s"),
            "campaign_id": "bench",
            "channel": "sms",
            "arm": arm,
            "cost": np.where(arm == "treatment", 0.05, 0.0),
        }
    )
    # Spend propensity: a latent per-customer scale shows up both before and after the touch.
    scale = rng.gamma(2.0, 0.5, n)
    n_pre = rng.poisson(1.5 * scale)
    pre_ids = np.repeat(ids, n_pre)
    pre_amt = rng.gamma(SPEND_SHAPE, SPEND_SCALE, len(pre_ids))
    pre_ts = T0 - pd.to_timedelta(rng.uniform(1, 89, len(pre_ids)), unit="D")
    conv = rng.random(n) < np.where(arm == "treatment", P_TREATMENT, P_CONTROL) * scale
    # Post amount: value ~ Gamma(2, 80) scaled by the latent scale (mean 1).
    post_amt = rng.gamma(SPEND_SHAPE, SPEND_SCALE, n) * scale
    post_ts = touches["ts"] + pd.to_timedelta(rng.uniform(0, 6.9, n), unit="D")
    orders = pd.DataFrame(
        {
            "customer_id": np.concatenate([pre_ids, ids[conv]]),
            "ts": pd.concat([pd.Series(pre_ts), post_ts[conv]], ignore_index=True),
            "status": "paid",
            "net_amount": np.concatenate([pre_amt, post_amt[conv]]),
        }
    )
    return touches, orders


def run(experiments: int, customers: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    cfg = ReadoutConfig(window_days=7, pre_period_days=90)
    true = truth()
    hits: dict[str, int] = {}
    ratios = []
    t_start = time.perf_counter()
    for _ in tqdm(range(experiments), desc="simulated experiments", disable=experiments < 50):
        touches, orders = simulate_tables(customers, rng)
        readout = readout_campaign(
            campaign_outcomes(touches, orders, cfg), {"treatment": 0.5, "control": 0.5}, cfg
        )
        for x in readout.lifts:
            tag = f"{x.metric}{'_cuped' if x.cuped else ''}"
            for kind, lo, hi in (("abs", x.abs_ci_low, x.abs_ci_high), ("rel", x.rel_ci_low, x.rel_ci_high)):
                key = f"{tag}_{kind}"
                hits[key] = hits.get(key, 0) + int(lo <= true[f"{x.metric}_{kind}"] <= hi)
            if x.cuped and x.metric == "revenue":
                ratios.append(x.variance_ratio)
    elapsed = time.perf_counter() - t_start
    coverage = {k: v / experiments for k, v in sorted(hits.items())}
    return {
        "benchmark": "experiments_coverage",
        "baseline": "nominal 95% coverage",
        "experiments": experiments,
        "customers_per_experiment": customers,
        "coverage": coverage,
        "coverage_ratio_vs_nominal": {k: v / 0.95 for k, v in coverage.items()},
        "all_within_93_97": all(0.93 <= v <= 0.97 for v in coverage.values()),
        "cuped_revenue_variance_ratio_median": float(np.median(ratios)) if ratios else None,
        "seconds": round(elapsed, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=400, help="number of simulated A/B tests")
    parser.add_argument("--customers", type=int, default=4_000, help="customers per experiment")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    result = run(args.experiments, args.customers, args.seed)
    for k, v in result["coverage"].items():  # type: ignore[union-attr]
        print(f"{k:28s} {v:.3f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

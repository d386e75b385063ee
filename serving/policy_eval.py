"""The tiering policy as a targeting strategy on the experiments simulator's truth.

:mod:`experiments.simulate` scores targeting strategies by their *true* incremental profit on a synthetic
world; ``experiments`` never imports ``serving``, so this adapter lives here. It turns a
:class:`experiments.simulate.Scenario` into the scores :func:`serving.tiering.plan_actions` expects,
through the production paths wherever they exist:

* lifecycle stage, value tier, recency and ``wecom_added`` from the feature snapshot at the same cutoff
  (:func:`features.snapshot.build_snapshot`);
* P(alive), expected purchases over 90 days and the 12-month CLV from a BG/NBD + Gamma-Gamma fitted on
  that snapshot (:func:`training.btyd_baseline.fit_btyd`, :class:`training.btyd_baseline.BTYDBundle`);
* ``p_repurchase_7d`` from the same BG/NBD in closed form (see :func:`bgnbd_p_purchase`), standing in
  for the repurchase classifier;
* ``p_churn`` from the simulator's churn classifier, NaN outside the churn population (no purchase in
  the last :data:`features.labels.CHURN_ACTIVE_DAYS` days), as in production;
* contact caps from the touches before the cutoff; the global holdout from
  :func:`experiments.assignment.global_holdout_mask`.

Two strategies are added beside the simulator's own: ``tiering_prior`` (the policy's channel priors)
and ``tiering_learned`` (the same policy given the simulator's learned per-channel uplift,
``uplift_<channel>`` from :class:`experiments.uplift.ChannelUpliftModel`). Both run at the simulator's
budget and channel prices; everything else (tiers, caps, capacities, margin) is the policy's own.

Usage: ``python -m serving.policy_eval [--data DIR | --customers 20000 --seed 3] [--budgets 500,1000]``;
the last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.assignment import global_holdout_mask
from experiments.simulate import (
    Scenario,
    SimulationConfig,
    Strategy,
    business_midnight,
    format_table,
    prepare_scenario,
)
from features.io import read_table
from features.labels import CHURN_ACTIVE_DAYS
from features.snapshot import build_snapshot
from serving.tiering import NO_ACTION, UPLIFT_PREFIX, Policy, load_policy, plan_actions
from training.btyd_baseline import AGE, FREQUENCY, BTYDBundle, fit_btyd

SCORE_COLUMNS: tuple[str, ...] = (
    "customer_id", "p_churn", "p_repurchase_7d", "p_alive", "expected_purchases_90d", "clv_12m",
    "lifecycle_stage", "value_tier", "recency_days", "wecom_added",
)  # fmt: skip


def bgnbd_p_purchase(
    bg: object, x: np.ndarray, T: np.ndarray, p_alive: np.ndarray, days: float
) -> np.ndarray:
    """P(≥1 purchase in the next ``days``) under BG/NBD.

    A BG/NBD customer can only drop out right after a purchase, so the first purchase in the window
    happens iff the customer is alive and their Poisson clock ticks; given alive, λ | data is
    Gamma(r + x, α + T) (Fader, Hardie & Lee 2005), hence
    ``P = P(alive) · (1 − ((α + T) / (α + T + days))^(r + x))``.
    """
    r, alpha = bg.params_["r"], bg.params_["alpha"]  # type: ignore[attr-defined]
    base = (alpha + T) / (alpha + T + days)
    return p_alive * (1.0 - base ** (r + x))


def tiering_scores(scenario: Scenario, data_dir: str | Path) -> pd.DataFrame:
    """The scores frame of ``plan_actions`` for the scenario's customers at its cutoff."""
    snap = build_snapshot(data_dir, scenario.cutoff)
    snap = snap.set_index("customer_id").reindex(scenario.scores["customer_id"]).reset_index()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BTYD convergence notes are reported by training, not here
        fit = fit_btyd(snap, scenario.cutoff)
    if fit.bg is None or fit.gg is None:
        raise RuntimeError(f"BTYD fit failed at {scenario.cutoff}: {fit.notes}")
    pred = BTYDBundle(fit.bg, fit.gg).predict_frame(snap)
    bought = snap[AGE].notna() & (snap[AGE] > 0)
    p_alive = pred["p_alive"].fillna(1.0).to_numpy()
    x = snap[FREQUENCY].where(bought, 0.0).to_numpy(float)
    T = snap[AGE].where(bought, 0.0).to_numpy(float)
    e90 = pred["exp_purchases_90d"].to_numpy(float)
    e90 = np.where(np.isnan(e90), float(fit.bg.expected_purchases_population(90.0)), e90)
    in_churn_population = snap["recency_days"] < CHURN_ACTIVE_DAYS
    churn = scenario.scores["churn_risk"].to_numpy(float)
    return pd.DataFrame(
        {
            "customer_id": snap["customer_id"].to_numpy(),
            "p_churn": np.where(in_churn_population, churn, np.nan),
            "p_repurchase_7d": bgnbd_p_purchase(fit.bg, x, T, p_alive, 7.0),
            "p_alive": p_alive,
            "expected_purchases_90d": e90,
            "clv_12m": pred["clv"].fillna(0.0).clip(lower=0.0).to_numpy(),
            "lifecycle_stage": snap["lifecycle_stage"].astype(str).to_numpy(),
            "value_tier": snap["value_tier"].astype(str).to_numpy(),
            "recency_days": snap["recency_days"].to_numpy(float),
            "wecom_added": snap["wecom_added"].astype(bool).to_numpy(),
            "expected_order_value": pred["expected_spend"].to_numpy(float),
        }
    )


def touches_before(data_dir: str | Path, cutoff: dt.date) -> pd.DataFrame:
    """The touches table cut at the cutoff (contact caps look only at the past)."""
    touches = read_table(data_dir, "touches")
    return touches[touches["ts"] < business_midnight(cutoff)]


def tiering_strategy(
    policy: Policy,
    scores: pd.DataFrame,
    history: pd.DataFrame,
    as_of: dt.date,
    learned_uplift: pd.DataFrame | None = None,
) -> Strategy:
    """A simulator strategy running :func:`plan_actions` at the simulator's budget and prices.

    ``scores`` is the ``plan_actions`` frame; ``learned_uplift`` (customer_id + ``uplift_<channel>``)
    replaces the priors when given. Channels the simulator has no truth for are not offered.
    """
    base = scores if learned_uplift is None else scores.merge(learned_uplift, on="customer_id", how="left")
    base = base.set_index("customer_id", drop=False)

    def strategy(sim_scores: pd.DataFrame, budget: float, costs: Mapping[str, float]) -> pd.DataFrame:
        channels = {
            name: spec if name == NO_ACTION else spec.model_copy(update={"cost": float(costs[name])})
            for name, spec in policy.channels.items()
            if name == NO_ACTION or name in costs
        }
        tiers = [
            t.model_copy(update={"channels": [c for c in t.channels if c in channels]}) for t in policy.tiers
        ]
        run_policy = policy.replace(budget=float(budget), channels=channels, tiers=tiers)
        frame = base.loc[sim_scores["customer_id"].to_numpy()].reset_index(drop=True)
        ids = frame["customer_id"]
        holdout = pd.Series(global_holdout_mask(ids, policy.global_holdout_share), index=ids.to_numpy())
        plan = plan_actions(frame, history, run_policy, as_of, holdout=holdout)
        chosen = plan[plan["action"] != NO_ACTION]
        return pd.DataFrame(
            {"customer_id": chosen["customer_id"].to_numpy(), "channel": chosen["action"].to_numpy()}
        )

    return strategy


def policy_strategies(
    scenario: Scenario, data_dir: str | Path, policy: Policy | None = None
) -> dict[str, Strategy]:
    """``tiering_prior`` and ``tiering_learned`` for :meth:`Scenario.compare`'s ``extra``."""
    policy = policy or load_policy()
    scores = tiering_scores(scenario, data_dir)
    history = touches_before(data_dir, scenario.cutoff)
    cols = [f"{UPLIFT_PREFIX}{ch}" for ch in scenario.channels]
    learned = scenario.scores[["customer_id", *cols]]
    return {
        "tiering_prior": tiering_strategy(policy, scores, history, scenario.cutoff),
        "tiering_learned": tiering_strategy(policy, scores, history, scenario.cutoff, learned),
    }


def evaluate(
    data_dir: str | Path, budgets: list[float], seed: int = 3, policy: Policy | None = None
) -> tuple[Scenario, dict[float, pd.DataFrame]]:
    """Prepare the simulator once and compare every strategy, the policy included, at each budget."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BTYD convergence notes are not the subject here
        scenario = prepare_scenario(
            data_dir, SimulationConfig(budget=max(budgets), seed=seed), progress=False
        )
    extra = policy_strategies(scenario, data_dir, policy)
    return scenario, {b: scenario.compare(b, extra=extra) for b in budgets}


def run(data_dir: Path, budgets: list[float], seed: int, policy_path: Path | None) -> dict[str, object]:
    policy = load_policy(policy_path)
    scenario, tables = evaluate(data_dir, budgets, seed, policy)
    out: dict[str, object] = {}
    for b, table in tables.items():
        print(
            f"\nbudget ¥{b:,.0f} (cutoff {scenario.cutoff}, {len(scenario.scores):,} contactable customers)"
        )
        print(format_table(table))
        t = table.set_index("strategy")
        out[f"{b:g}"] = {
            "incremental_profit": {k: round(float(v), 2) for k, v in t["incremental_profit"].items()},
            "share_of_oracle": {k: round(float(v), 4) for k, v in t["share_of_oracle"].items()},
        }
    return {
        "evaluation": "tiering_policy_on_simulator",
        "baseline": "oracle (true uplift)",
        "cutoff": scenario.cutoff.isoformat(),
        "customers": int(len(scenario.scores)),
        "channels": scenario.channels,
        "budgets": out,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="an existing synthetic world")
    parser.add_argument("--customers", type=int, default=20_000, help="size of a generated world")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--budgets", default="500,1000,2000,4000,8000", help="comma-separated budgets in ¥")
    parser.add_argument("--policy", type=Path, default=None, help="policy YAML (default: the packaged one)")
    args = parser.parse_args(argv)
    budgets = [float(x) for x in args.budgets.split(",") if x.strip()]
    if args.data is not None:
        result = run(args.data, budgets, args.seed, args.policy)
    else:
        from features.synthetic import SynthConfig, generate_world, write_world

        with tempfile.TemporaryDirectory() as d:
            write_world(generate_world(SynthConfig(customers=args.customers, seed=args.seed)), d)
            result = run(Path(d), budgets, args.seed, args.policy)
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()

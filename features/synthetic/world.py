"""Assemble a synthetic world: persons → purchases → campaigns → orders → events → identities."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.io import write_table
from features.schema import TABLES
from features.synthetic.btyd import Purchases, draw_purchases
from features.synthetic.calendar import Clock
from features.synthetic.campaigns import CampaignOutput, run_campaigns
from features.synthetic.config import CHANNEL_ANNOY, CHANNEL_COSTS, CHANNEL_KAPPA, SynthConfig
from features.synthetic.events import build_events
from features.synthetic.identities import build_identities
from features.synthetic.orders import build_orders
from features.synthetic.population import CHANNEL_NAMES, MEMBER_NAMES, PERSONAS, Persons, draw_persons
from features.synthetic.truth import Truth, write_truth

#: Named generation steps, reported through the ``progress`` callback of :func:`generate_world`.
STEPS: tuple[str, ...] = ("persons", "purchases", "campaigns", "orders", "events", "identities", "truth")


@dataclass(frozen=True)
class World:
    """The five contract tables (``tables[name]``) and the generator's truth."""

    tables: dict[str, pd.DataFrame]
    truth: Truth


def _nullable_utc(clock: Clock, t: np.ndarray) -> pd.Series:
    finite = np.isfinite(t)
    out = pd.Series(pd.NaT, index=range(t.size), dtype="datetime64[ns, UTC]")
    out[finite] = clock.to_utc(t[finite])
    return out


def _customers(persons: Persons, clock: Clock, ids: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": ids,
        "first_seen_ts": clock.to_utc(persons.acq_t),
        "acquisition_channel": CHANNEL_NAMES[persons.acq_channel],
        "city_tier": persons.city_tier.astype(np.int64),
        "member_level": MEMBER_NAMES[persons.member],
        "wecom_added_ts": _nullable_utc(clock, persons.wecom_t).to_numpy(),
    })


def _touches(out: CampaignOutput, clock: Clock, ids: np.ndarray) -> pd.DataFrame:
    t = out.touches
    if t.empty:
        return pd.DataFrame({
            "touch_id": pd.Series(dtype=object), "customer_id": pd.Series(dtype=object),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"), "campaign_id": pd.Series(dtype=object),
            "channel": pd.Series(dtype=object), "arm": pd.Series(dtype=object),
            "cost": pd.Series(dtype=float),
        })
    t = t.sort_values(["t", "pid"], kind="mergesort", ignore_index=True)
    cids = np.array([p.campaign_id for p in out.plans], dtype=object)
    return pd.DataFrame({
        "touch_id": np.array([f"T{i + 1:09d}" for i in range(len(t))], dtype=object),
        "customer_id": ids[t["pid"].to_numpy()],
        "ts": clock.to_utc(t["t"].to_numpy()),
        "campaign_id": cids[t["campaign"].to_numpy()],
        "channel": t["channel"].to_numpy(dtype=object),
        "arm": t["arm"].to_numpy(dtype=object),
        "cost": t["cost"].to_numpy(dtype=np.float64),
    })


def _size(sizes: pd.DataFrame, number: int, arm: str) -> int:
    return int(sizes.loc[number, arm]) if arm in sizes.columns and number in sizes.index else 0


def _truth(
    cfg: SynthConfig, persons: Persons, purchases: Purchases, order_ids: np.ndarray, camp: CampaignOutput,
    identity_truth: pd.DataFrame, clock: Clock, ids: np.ndarray,
) -> Truth:
    persons_df = pd.DataFrame({
        "customer_id": ids, "lam": persons.lam, "p": persons.p,
        "dropout_ts": _nullable_utc(clock, persons.dropout_t).to_numpy(),
        "persona": np.asarray(PERSONAS, dtype=object)[persons.persona],
        "mean_spend": persons.mean_spend, "gg_nu": persons.nu, "persuasion": persons.strength,
        "acquisition_ts": clock.to_utc(persons.acq_t),
        "acquisition_channel": CHANNEL_NAMES[persons.acq_channel],
        "city_tier": persons.city_tier.astype(np.int64), "member_level": MEMBER_NAMES[persons.member],
        "wecom_added_ts": _nullable_utc(clock, persons.wecom_t).to_numpy(),
        "engagement": persons.engagement, "holdout": persons.holdout,
    })
    cids = np.array([p.campaign_id for p in camp.plans] + [None], dtype=object)
    kinds = np.array(["first", "repeat", "campaign"], dtype=object)
    purchases_df = pd.DataFrame({
        "customer_id": ids[purchases.pid], "ts": clock.to_utc(purchases.t), "order_id": order_ids,
        "kind": kinds[purchases.kind], "campaign_id": cids[purchases.campaign],
    })
    eff = camp.effects
    if len(eff):
        sizes = eff.groupby(["campaign", "arm"]).size().unstack(fill_value=0)
        effects_df = eff.assign(
            campaign_id=cids[eff["campaign"].to_numpy()], customer_id=ids[eff["pid"].to_numpy()],
            touch_ts=clock.to_utc(eff["t"].to_numpy()),
        ).drop(columns=["campaign", "pid", "t"])
        first = ["campaign_id", "customer_id", "arm", "touch_ts"]
        effects_df = effects_df[first + [c for c in effects_df.columns if c not in first]]
    else:
        sizes = pd.DataFrame()
        effects_df = pd.DataFrame(columns=[
            "campaign_id", "customer_id", "arm", "touch_ts", "alive", "segment", "days_since_last",
            "base_p", "treated_p", "true_uplift", "uplift_value", "converted"])
    campaigns_df = pd.DataFrame({
        "campaign_id": [p.campaign_id for p in camp.plans],
        "channel": [p.channel for p in camp.plans],
        "start_ts": clock.to_utc(np.array([float(p.start_day) for p in camp.plans])),
        "window_days": np.array([p.window_days for p in camp.plans], dtype=np.int64),
        "cost_per_contact": [CHANNEL_COSTS[p.channel] for p in camp.plans],
        "audience": [p.audience for p in camp.plans],
        "kappa": [CHANNEL_KAPPA[p.channel] for p in camp.plans],
        "annoy": [CHANNEL_ANNOY[p.channel] for p in camp.plans],
        **{f"n_{arm}": np.array([_size(sizes, p.number, arm) for p in camp.plans], dtype=np.int64)
           for arm in ("treatment", "control", "holdout")},
    })
    return Truth(cfg, persons_df, campaigns_df, effects_df, identity_truth, purchases_df)


def generate_world(cfg: SynthConfig, progress: Callable[[str], None] | None = None) -> World:
    """Generate a synthetic world (deterministic for ``cfg``; see the package docstring).

    ``progress`` is called with each step name of :data:`STEPS` after the step completes.
    """
    step = progress or (lambda _name: None)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(6)]
    clock = Clock.build(cfg.start, cfg.end, cfg.season)
    persons = draw_persons(cfg, clock, streams[0])
    ids = persons.ids()
    step("persons")
    purchases = draw_purchases(persons, clock, streams[1])
    step("purchases")
    if cfg.campaigns:
        purchases, camp = run_campaigns(persons, purchases, clock, streams[2])
    else:
        camp = CampaignOutput([], pd.DataFrame(), pd.DataFrame())
    step("campaigns")
    orders, order_ids, row_pid, row_t = build_orders(
        cfg, persons, purchases, camp.plans, clock, ids, streams[3])
    step("orders")
    if cfg.events:
        events = build_events(persons, clock, orders, row_pid, row_t, camp.touches, ids, streams[4])
    else:
        events = pd.DataFrame({
            "customer_id": pd.Series(dtype=object), "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "event_type": pd.Series(dtype=object), "channel": pd.Series(dtype=object),
            "value": pd.Series(dtype=float)})
    step("events")
    identities, identity_truth = build_identities(persons, ids, cfg.seed, streams[5])
    step("identities")
    tables = {
        "customers": _customers(persons, clock, ids),
        "orders": orders,
        "events": events,
        "touches": _touches(camp, clock, ids),
        "identities": identities,
    }
    truth = _truth(cfg, persons, purchases, order_ids, camp, identity_truth, clock, ids)
    step("truth")
    return World(tables, truth)


def write_world(world: World, out: str | Path) -> None:
    """Write ``OUT/<table>.parquet`` (validated against the contract) and ``OUT/truth/``."""
    for name in TABLES:
        write_table(world.tables[name], out, name)
    write_truth(world.truth, out)


def summarize(world: World) -> dict[str, float | int]:
    """Headline figures of a world: sizes, repeat buyers, share alive at the end, paid revenue."""
    orders = world.tables["orders"]
    paid = orders[orders["status"] == "paid"]
    per_customer = paid.groupby("customer_id").size()
    persons = world.truth.persons
    return {
        "customers": len(world.tables["customers"]),
        "orders": len(orders),
        "paid_orders": len(paid),
        "events": len(world.tables["events"]),
        "touches": len(world.tables["touches"]),
        "identities": len(world.tables["identities"]),
        "repeat_buyers": int((per_customer > 1).sum()),
        "share_alive_at_end": float(persons["dropout_ts"].isna().mean()),
        "paid_net_revenue": float(paid["net_amount"].sum()),
        "campaign_orders": int((world.truth.purchases["kind"] == "campaign").sum()),
    }


"""Order rows: channel, store, coupon, discount, partial refunds, plus refunded/cancelled extras.

The net amount of every paid order is the person's Gamma-Gamma spend draw (rounded to cents), so the
true mean net spend per paid order is ``gg_p / ν``. Gross, discount and refund are built around it:
``a = net / (1 − f)`` is what was paid before a partial refund share ``f``; ``gross = (a + coupon) /
(1 − member_discount)``. Refunded and cancelled orders are *extra* rows next to the BTYD purchases
(net 0), so the purchase process over paid orders stays exactly BG/NBD.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import ORDER_CHANNELS
from features.synthetic.btyd import KIND_CAMPAIGN, KIND_FIRST, Purchases
from features.synthetic.calendar import Clock
from features.synthetic.campaigns import CampaignPlan
from features.synthetic.config import SynthConfig
from features.synthetic.population import CATEGORIES, CHANNEL_NAMES, TIER_STORES, Persons

MEMBER_DISCOUNT = np.array([0.0, 0.02, 0.05, 0.08])
PARTIAL_REFUND_RATE = 0.04
REFUNDED_RATE, CANCELLED_RATE = 0.05, 0.03
_N_STORES = int(TIER_STORES.sum())
_OFFLINE = ORDER_CHANNELS.index("offline_store")
_WECOM = ORDER_CHANNELS.index("wecom")


def _pick_channel(persons: Persons, pid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(pid.size)
    return (u[:, None] > persons.chan_cum[pid]).sum(axis=1)


def _stores(persons: Persons, pid: np.ndarray, channel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    store = np.where(rng.random(pid.size) < 0.85, persons.home_store[pid], rng.integers(1, _N_STORES + 1,
                                                                                     pid.size))
    labels = np.array([None] + [f"S{i:03d}" for i in range(1, _N_STORES + 1)], dtype=object)
    return labels[np.where(channel == _OFFLINE, store, 0)]


def _coupons(
    clock: Clock, t: np.ndarray, kind: np.ndarray, campaign: np.ndarray, plans: list[CampaignPlan],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Coupon id and face value per order: newcomer, 618/Double-11 promo, member day, campaign coupons."""
    n = t.size
    day = np.floor(t).astype(np.int64) + np.datetime64(clock.start.isoformat(), "D").astype(np.int64)
    dt = day.astype("datetime64[D]")
    year = dt.astype("datetime64[Y]").astype(np.int64) + 1970
    month = dt.astype("datetime64[M]").astype(np.int64) % 12 + 1
    promo = clock.daily[np.clip(np.floor(t).astype(np.int64), 0, clock.n_days - 1)] > 1.6
    u = rng.random(n)
    ids = np.full(n, None, dtype=object)
    face = np.zeros(n)
    member_day = u < 0.06
    ids[member_day], face[member_day] = "CPN-MEMBER-DAY", 15.0
    is_promo = promo & (u < 0.5)
    promo_name = np.where(month >= 10, "1111", "618")
    ids[is_promo] = ["CPN-" + p + "-" + str(y) for p, y in zip(promo_name[is_promo], year[is_promo],
                                                              strict=True)]
    face[is_promo] = 30.0
    newcomer = (kind == KIND_FIRST) & (u > 0.7)
    ids[newcomer], face[newcomer] = "CPN-NEWCOMER", 10.0
    coupon_campaign = {p.number: p.campaign_id for p in plans if p.channel == "coupon"}
    for number, cid in coupon_campaign.items():
        hit = (kind == KIND_CAMPAIGN) & (campaign == number)
        ids[hit], face[hit] = f"CPN-{cid}", 20.0
    return ids, face


def _amounts(net: np.ndarray, face: np.ndarray, member_rate: np.ndarray, refund_share: np.ndarray
             ) -> dict[str, np.ndarray]:
    paid = net / (1.0 - refund_share)
    gross = np.round((paid + face) / (1.0 - member_rate), 2)
    discount = np.round(gross - paid, 2)
    refund = np.round(paid - net, 2)
    return {"gross_amount": gross, "discount_amount": discount, "refund_amount": refund,
            "net_amount": gross - discount - refund}


def build_orders(
    cfg: SynthConfig, persons: Persons, purchases: Purchases, plans: list[CampaignPlan], clock: Clock,
    ids: np.ndarray, rng: np.random.Generator,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The orders table (paid + refunded/cancelled rows, sorted by time), the order id of each
    purchase, and each table row's person number and world time."""
    pid, t, kind = purchases.pid, purchases.t, purchases.kind
    n = pid.size
    channel = _pick_channel(persons, pid, rng)
    # Campaign-induced orders go where the campaign pointed: WeCom chats, store visits after calls.
    camp_channel = np.array([p.channel for p in plans] + [""], dtype=object)[purchases.campaign]
    channel = np.where(camp_channel == "wecom_1v1", _WECOM, channel)
    channel = np.where((camp_channel == "ai_call") & (rng.random(n) < 0.5), _OFFLINE, channel)
    coupon, face = _coupons(clock, t, kind, purchases.campaign, plans, rng)
    net = np.round(rng.gamma(cfg.gg_p, 1.0 / persons.nu[pid]), 2)
    net = np.maximum(net, 0.01)
    refund_share = np.where(rng.random(n) < PARTIAL_REFUND_RATE, rng.uniform(0.1, 0.6, n), 0.0)
    paid = _amounts(net, face, MEMBER_DISCOUNT[persons.member[pid]], refund_share)

    # Refunded / cancelled extra rows near a random subset of real purchases (net 0, not purchases).
    u = rng.random(n)
    src = np.flatnonzero(u < REFUNDED_RATE + CANCELLED_RATE)
    status_x = np.where(u[src] < REFUNDED_RATE, "refunded", "cancelled")
    lo = persons.acq_t[pid[src]] + 1.0 / 1440.0
    hi = clock.n_days - 1e-6
    t_x = np.minimum(np.maximum(t[src] + rng.uniform(-2.0, 2.0, src.size), lo), hi)
    gross_x = np.round(rng.gamma(cfg.gg_p, 1.0 / persons.nu[pid[src]]) + face[src], 2)
    disc_x = np.minimum(face[src], gross_x)
    extra = {"gross_amount": gross_x, "discount_amount": disc_x,
             "refund_amount": np.round(gross_x - disc_x, 2)}
    extra["net_amount"] = extra["gross_amount"] - extra["discount_amount"] - extra["refund_amount"]

    all_pid = np.concatenate([pid, pid[src]])
    all_t = np.concatenate([t, t_x])
    is_extra = np.concatenate([np.zeros(n, bool), np.ones(src.size, bool)])
    ch = np.concatenate([channel, channel[src]])
    store = _stores(persons, pid, channel, rng)
    items = 1 + rng.poisson(net / 180.0)
    cat = np.where(rng.random(n) < 0.6, persons.fav_category[pid], rng.integers(0, len(CATEGORIES), n))
    cats = np.array(CATEGORIES, dtype=object)

    order = np.lexsort((is_extra, all_pid, all_t))
    order_ids = np.array([f"O{i + 1:09d}" for i in range(order.size)], dtype=object)
    df = pd.DataFrame({
        "order_id": order_ids,
        "customer_id": ids[all_pid[order]],
        "ts": clock.to_utc(all_t[order]),
        "channel": CHANNEL_NAMES[ch[order]],
        "store_id": np.concatenate([store, store[src]])[order],
        "gross_amount": np.concatenate([paid["gross_amount"], extra["gross_amount"]])[order],
        "discount_amount": np.concatenate([paid["discount_amount"], extra["discount_amount"]])[order],
        "refund_amount": np.concatenate([paid["refund_amount"], extra["refund_amount"]])[order],
        "net_amount": np.concatenate([paid["net_amount"], extra["net_amount"]])[order],
        "coupon_id": np.concatenate([coupon, coupon[src]])[order],
        "status": np.concatenate([np.full(n, "paid", dtype=object), status_x.astype(object)])[order],
        "n_items": np.concatenate([items, items[src]]).astype(np.int64)[order],
        "category": cats[np.concatenate([cat, cat[src]])][order],
    })
    # Order id of every purchase (row position in the sorted table of each paid row).
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    return df, order_ids[rank[:n]], all_pid[order], all_t[order]

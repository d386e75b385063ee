"""Interaction events: correlated with the latent purchase rate and fading before dropout.

Customer-initiated events (mini-program visits, live views, WeCom messages in, coupon claims,
referrals) are Poisson processes with rate ``base · engagement · season·diurnal · fade(t)``, where
``engagement ∝ (λ/mean λ)^0.6`` times noise and ``fade`` is 1 until 4–10 weeks before the person's
dropout, declines linearly to 0.1 at dropout, then a trickle (0.03) for 90 days. They are drawn in
operational time (like purchases) and thinned by ``fade`` — no per-person loops. Staff messages fade
only half-way. Deterministic events tie to other tables: WeCom adds and group joins, a mini-program
visit just before online orders, coupon redeems on coupon orders, and responses to campaign touches
(connected calls, SMS clicks, coupon claims, WeCom replies).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import ORDER_CHANNELS
from features.synthetic.calendar import Clock
from features.synthetic.population import Persons

_TRICKLE, _AFTER = 0.03, 90.0
#: (event_type, base daily rate, needs WeCom, staff-initiated)
_RATE_EVENTS: tuple[tuple[str, float, bool, bool], ...] = (
    ("miniprogram_visit", 0.06, False, False),
    ("live_view", 0.025, False, False),
    ("wecom_msg_in", 0.03, True, False),
    ("wecom_msg_out", 0.02, True, True),
    ("coupon_claim", 0.01, False, False),
    ("referral", 0.0015, False, False),
)


def _prefs(persons: Persons) -> np.ndarray:
    return np.diff(np.concatenate([np.zeros((persons.n, 1)), persons.chan_cum], axis=1), axis=1)


def _fade(t: np.ndarray, dropout: np.ndarray, width: np.ndarray) -> np.ndarray:
    before = dropout - t
    ramp = np.clip(0.1 + 0.9 * before / width, 0.1, 1.0)
    return np.where(before > 0, ramp, _TRICKLE)


def _rate_events(persons: Persons, clock: Clock, rng: np.random.Generator) -> list[pd.DataFrame]:
    n = persons.n
    prefs = _prefs(persons)
    ch = {c: i for i, c in enumerate(ORDER_CHANNELS)}
    width = rng.uniform(28.0, 70.0, n)
    stop = np.minimum(persons.dropout_t + _AFTER, clock.n_days)
    out = []
    for etype, base, needs_wecom, staff in _RATE_EVENTS:
        start = persons.wecom_t if needs_wecom else persons.acq_t
        rate = base * (persons.engagement ** (0.3 if staff else 1.0))
        if etype == "miniprogram_visit":
            rate = rate * (3.0 * prefs[:, ch["miniprogram"]] + 0.3)
        elif etype == "live_view":
            rate = rate * (2.0 * (prefs[:, ch["douyin"]] + prefs[:, ch["tmall"]]) + 0.2)
        ok = ~np.isnan(start) & (stop > start)
        lo = clock.cum(np.where(ok, start, 0.0))
        hi = clock.cum(np.where(ok, stop, 0.0))
        k = rng.poisson(np.where(ok, rate * (hi - lo), 0.0))
        pid = np.repeat(np.arange(n), k)
        t = clock.inv(lo[pid] + rng.random(pid.size) * (hi - lo)[pid])
        fade = _fade(t, persons.dropout_t[pid], width[pid])
        if staff:
            fade = 0.5 + 0.5 * fade
        keep = rng.random(pid.size) < fade
        pid, t = pid[keep], t[keep]
        value = np.full(pid.size, np.nan)
        if etype == "live_view":
            value = np.round(rng.gamma(2.0, 6.0, pid.size), 1)  # minutes watched
            is_dy = rng.random(pid.size) * (prefs[pid, ch["douyin"]] + prefs[pid, ch["tmall"]]) < prefs[
                pid, ch["douyin"]]
            channel = np.where(is_dy, "douyin", "tmall")
        elif etype == "coupon_claim":
            value = rng.choice(np.array([10.0, 15.0, 20.0, 30.0]), pid.size)
            channel = np.where(rng.random(pid.size) < 0.6, "miniprogram", "tmall")
        elif etype == "referral":
            channel = np.where(rng.random(pid.size) < 0.5, "wecom", "miniprogram")
        else:
            channel = np.full(pid.size, "wecom" if needs_wecom else "miniprogram")
        out.append(_frame(pid, t, etype, channel, value))
    return out


def _frame(pid: np.ndarray, t: np.ndarray, etype: str, channel: np.ndarray | str, value: np.ndarray
           ) -> pd.DataFrame:
    return pd.DataFrame({"pid": pid, "t": t, "event_type": etype,
                         "channel": np.broadcast_to(np.asarray(channel, dtype=object), pid.shape),
                         "value": value})


def _linked_events(
    persons: Persons, clock: Clock, orders: pd.DataFrame, order_pid: np.ndarray, order_t: np.ndarray,
    touches: pd.DataFrame, rng: np.random.Generator,
) -> list[pd.DataFrame]:
    nan = np.nan
    out = []
    added = np.flatnonzero(~np.isnan(persons.wecom_t))
    out.append(_frame(added, persons.wecom_t[added], "wecom_add", "wecom", np.full(added.size, nan)))
    joins = added[rng.random(added.size) < 0.35]
    t_join = persons.wecom_t[joins] + rng.exponential(20.0, joins.size)
    ok = t_join < np.minimum(persons.dropout_t[joins] + _AFTER, clock.n_days)
    out.append(_frame(joins[ok], t_join[ok], "group_join", "wecom", np.full(int(ok.sum()), nan)))

    paid = (orders["status"] == "paid").to_numpy()
    online = orders["channel"].isin(["miniprogram", "app", "wecom"]).to_numpy() & paid
    t_visit = np.maximum(order_t[online] - rng.uniform(1.0, 90.0, int(online.sum())) / 1440.0, 0.0)
    out.append(_frame(order_pid[online], t_visit, "miniprogram_visit", "miniprogram",
                      np.full(t_visit.size, nan)))
    redeemed = paid & orders["coupon_id"].notna().to_numpy()
    out.append(_frame(order_pid[redeemed], order_t[redeemed], "coupon_redeem",
                      orders["channel"].to_numpy()[redeemed], orders["discount_amount"].to_numpy()[redeemed]))

    if len(touches):
        treated = touches[touches["arm"] == "treatment"]
        tp, tt = treated["pid"].to_numpy(), treated["t"].to_numpy()
        alive = persons.dropout_t[tp] > tt
        chan = treated["channel"].to_numpy()
        u = rng.random(tp.size)
        rules = (
            ("ai_call", "call_connected", "ai_call", u < 0.55, rng.gamma(2.0, 30.0, tp.size), 60.0 / 86400),
            ("sms", "sms_click", "sms", u < np.where(alive, 0.02, 0.003), np.full(tp.size, nan), 2.0 / 24),
            ("coupon", "coupon_claim", "miniprogram", u < np.where(alive, 0.35, 0.05), np.full(tp.size, 20.0),
             1.0),
            ("wecom_1v1", "wecom_msg_out", "wecom", np.ones(tp.size, bool), np.full(tp.size, nan), 0.0),
            ("wecom_1v1", "wecom_msg_in", "wecom", u < np.where(alive, 0.4, 0.05), np.full(tp.size, nan),
             3.0 / 24),
        )
        for channel, etype, ev_channel, hit, value, delay in rules:
            m = (chan == channel) & hit
            t = tt[m] + (rng.exponential(delay, int(m.sum())) if delay else 0.0)
            out.append(_frame(tp[m], t, etype, ev_channel, np.round(value[m], 1)))
    return out


def build_events(
    persons: Persons, clock: Clock, orders: pd.DataFrame, order_pid: np.ndarray, order_t: np.ndarray,
    touches: pd.DataFrame, ids: np.ndarray, rng: np.random.Generator,
) -> pd.DataFrame:
    """The events table, sorted by (ts, customer, type)."""
    parts = _rate_events(persons, clock, rng) + _linked_events(
        persons, clock, orders, order_pid, order_t, touches, rng)
    ev = pd.concat(parts, ignore_index=True)
    ev = ev[(ev["t"] >= 0) & (ev["t"] < clock.n_days)]
    ev = ev.sort_values(["t", "pid", "event_type"], kind="mergesort", ignore_index=True)
    return pd.DataFrame({
        "customer_id": ids[ev["pid"].to_numpy()],
        "ts": clock.to_utc(ev["t"].to_numpy()),
        "event_type": ev["event_type"].to_numpy(dtype=object),
        "channel": ev["channel"].to_numpy(dtype=object),
        "value": ev["value"].to_numpy(dtype=np.float64),
    })

"""Outreach campaigns with random assignment and a true heterogeneous effect on purchases.

The effect model (shared by generation and :func:`features.synthetic.truth.oracle_uplift`): for a
customer alive at the touch with rate λ and integrated calendar intensity ``S`` over the window,

- ``base_p = 1 − exp(−λ·S)`` (0 when dead) — the organic chance of ≥1 purchase in the window;
- persuadables gain an extra purchase hazard mass ``κ = κ_channel · strength · recency_factor``, so
  ``treated_p = 1 − (1 − base_p)·exp(−κ)``; the recency factor peaks for customers whose last purchase
  was ~2 months ago (lapsing recently) and WeCom 1:1 only reaches customers who added the brand;
- sleeping dogs are annoyed: with probability ``q_channel`` they leave at the touch, so
  ``treated_p = (1 − q)·base_p`` (a small negative uplift);
- sure things (heavy buyers) and lost causes (unresponsive, or dead at the touch) have no effect.

Generation realises exactly these probabilities: a treated persuadable with no organic purchase in the
window converts with probability ``1 − exp(−κ)`` (an extra paid order at a calendar-weighted time),
and a treated sleeping dog dies at the touch with probability ``q`` (later purchases removed).
Campaign windows never overlap, so each campaign's recorded probabilities are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.synthetic.btyd import KIND_CAMPAIGN, Purchases
from features.synthetic.calendar import Clock
from features.synthetic.config import CHANNEL_ANNOY, CHANNEL_COSTS, CHANNEL_KAPPA
from features.synthetic.population import (
    LOST_CAUSE,
    PERSONAS,
    PERSUADABLE,
    SLEEPING_DOG,
    Persons,
)

#: Channel rotation, window length (days), audience rule and audience sampling share.
_ROTATION: tuple[tuple[str, int, str, float], ...] = (
    ("sms", 7, "all", 0.5),
    ("ai_call", 14, "lapsing", 0.8),
    ("coupon", 14, "all", 0.4),
    ("wecom_1v1", 7, "wecom", 0.7),
    ("template_msg", 7, "wechat", 0.6),
)
TREAT_SHARE = 0.7
_FIRST_DAY, _MIN_GAP, _TAIL = 120, 21, 30


@dataclass(frozen=True)
class CampaignPlan:
    number: int
    campaign_id: str
    channel: str
    start_day: int  # world day (local midnight)
    window_days: int
    audience: str
    sample_share: float


def plan_campaigns(n_days: int, max_campaigns: int = 10) -> list[CampaignPlan]:
    """Evenly spaced, non-overlapping campaigns after a warm-up period (none if the period is short)."""
    span = n_days - _FIRST_DAY - _TAIL
    n = min(max_campaigns, max(0, span // _MIN_GAP))
    if n == 0:
        return []
    step = span // n
    plans = []
    for k in range(n):
        channel, window, audience, share = _ROTATION[k % len(_ROTATION)]
        plans.append(CampaignPlan(k, f"CMP{k + 1:02d}-{channel}", channel, _FIRST_DAY + k * step,
                                  window, audience, share))
    return plans


def recency_factor(days_since_last: np.ndarray) -> np.ndarray:
    """Persuadability by days since the last purchase: highest ~60 days (lapsing recently)."""
    d = np.maximum(np.asarray(days_since_last, dtype=np.float64), 0.5)
    return 0.35 + 0.65 * np.exp(-0.5 * (np.log(d / 60.0) / 0.8) ** 2)


def effect_probs(
    channel: str,
    lam: np.ndarray,
    alive: np.ndarray,
    intensity: np.ndarray,
    persona: np.ndarray,
    strength: np.ndarray,
    days_since_last: np.ndarray,
    wecom_added: np.ndarray,
) -> dict[str, np.ndarray]:
    """Exact base/treated P(≥1 purchase in the window) and the true segment per customer."""
    base = np.where(alive, 1.0 - np.exp(-lam * intensity), 0.0)
    reach = wecom_added if channel == "wecom_1v1" else np.ones_like(alive, dtype=bool)
    persuaded = alive & reach & (persona == PERSUADABLE)
    kappa = np.where(persuaded, CHANNEL_KAPPA[channel] * strength * recency_factor(days_since_last), 0.0)
    annoy = np.where(alive & (persona == SLEEPING_DOG), CHANNEL_ANNOY[channel], 0.0)
    treated = (1.0 - (1.0 - base) * np.exp(-kappa)) * (1.0 - annoy)
    segment = np.where(~alive, LOST_CAUSE, np.where(persona == PERSUADABLE, np.where(reach, PERSUADABLE,
                       LOST_CAUSE), persona))
    return {"base_p": base, "treated_p": treated, "kappa": kappa, "annoy": annoy,
            "segment": np.asarray(PERSONAS, dtype=object)[segment]}


def _audience(plan: CampaignPlan, persons: Persons, purchases: Purchases, touch: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    eligible = persons.acq_t < touch
    if plan.audience == "lapsing":
        since = touch - purchases.last_before(np.arange(persons.n), touch)
        eligible &= (since >= 30) & (since <= 365)
    elif plan.audience == "wecom":
        eligible &= persons.wecom_t < touch
    elif plan.audience == "wechat":
        eligible &= (persons.member > 0) | (persons.wecom_t < touch)
    return np.flatnonzero(eligible & (rng.random(persons.n) < plan.sample_share))


@dataclass
class CampaignOutput:
    plans: list[CampaignPlan]
    touches: pd.DataFrame  # contract columns except ids as person numbers
    effects: pd.DataFrame


def run_campaigns(
    persons: Persons, purchases: Purchases, clock: Clock, rng: np.random.Generator
) -> tuple[Purchases, CampaignOutput]:
    """Assign, treat and realise every planned campaign in time order; returns modified purchases."""
    plans = plan_campaigns(clock.n_days)
    touch_frames, effect_frames = [], []
    for plan in plans:
        # Touches go out on the start day between 10:00 and 19:00 local time.
        touch = plan.start_day + (10.0 + 9.0 * rng.random(persons.n)) / 24.0
        who = _audience(plan, persons, purchases, touch, rng)
        t = touch[who]
        arm = np.where(persons.holdout[who], "holdout",
                       np.where(rng.random(who.size) < TREAT_SHARE, "treatment", "control"))
        alive = persons.dropout_t[who] > t
        intensity = clock.cum(t + plan.window_days) - clock.cum(t)
        since = t - purchases.last_before(who, t)
        probs = effect_probs(plan.channel, persons.lam[who], alive, intensity, persons.persona[who],
                             persons.strength[who], since, persons.wecom_t[who] < t)
        treated = arm == "treatment"

        # Persuaded extra purchases: only when no organic purchase falls in the window.
        organic = purchases.count_between(who, t, t + plan.window_days) > 0
        convert = treated & ~organic & (rng.random(who.size) < 1.0 - np.exp(-probs["kappa"]))
        extra_t = clock.inv(clock.cum(t) + rng.random(who.size) * intensity)[convert]
        # Annoyed sleeping dogs leave at the touch: drop their later purchases.
        leave = treated & (rng.random(who.size) < probs["annoy"])
        cut = np.full(persons.n, np.inf)
        cut[who[leave]] = t[leave]
        persons.dropout_t[who[leave]] = t[leave]
        keep = purchases.t < cut[purchases.pid]
        n_extra = int(convert.sum())
        purchases = Purchases(
            np.concatenate([purchases.pid[keep], who[convert]]),
            np.concatenate([purchases.t[keep], extra_t]),
            np.concatenate([purchases.kind[keep], np.full(n_extra, KIND_CAMPAIGN, np.int8)]),
            np.concatenate([purchases.campaign[keep], np.full(n_extra, plan.number, np.int32)]),
        ).sort()
        converted = purchases.count_between(who, t, t + plan.window_days) > 0

        touch_frames.append(pd.DataFrame({
            "pid": who, "t": t, "campaign": plan.number, "channel": plan.channel, "arm": arm,
            "cost": np.where(treated, CHANNEL_COSTS[plan.channel], 0.0),
        }))
        effect_frames.append(pd.DataFrame({
            "pid": who, "t": t, "campaign": plan.number, "arm": arm, "alive": alive,
            "segment": probs["segment"], "days_since_last": since, "base_p": probs["base_p"],
            "treated_p": probs["treated_p"], "true_uplift": probs["treated_p"] - probs["base_p"],
            "uplift_value": (probs["treated_p"] - probs["base_p"]) * persons.mean_spend[who],
            "converted": converted,
        }))
    empty = pd.DataFrame({"pid": np.zeros(0, np.int64), "t": np.zeros(0), "campaign": np.zeros(0, np.int64)})
    touches = pd.concat(touch_frames, ignore_index=True) if touch_frames else empty
    effects = pd.concat(effect_frames, ignore_index=True) if effect_frames else empty
    return purchases, CampaignOutput(plans, touches, effects)


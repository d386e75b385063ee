"""Persons of the synthetic world: covariates, latent BTYD parameters, spend, persona, channel mix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.schema import MEMBER_LEVELS, ORDER_CHANNELS
from features.synthetic.calendar import Clock
from features.synthetic.config import SynthConfig

#: Acquisition channel shares and their covariate effects (log-λ shift, logit-p shift).
ACQ_SHARE = np.array([0.28, 0.12, 0.20, 0.12, 0.16, 0.05, 0.07])  # order of ORDER_CHANNELS
ACQ_LOG_LAM = np.array([0.0, -0.1, -0.35, 0.15, -0.1, 0.3, 0.35])
ACQ_LOGIT_P = np.array([0.0, 0.05, 0.45, -0.15, -0.1, -0.3, -0.35])
#: Probability of adding the brand's WeCom, by acquisition channel.
ACQ_WECOM = np.array([0.12, 0.10, 0.15, 0.45, 0.55, 0.30, 1.0])
WECOM_LOG_LAM, WECOM_LOGIT_P = 0.25, -0.4
MEMBER_SHARE = np.array([0.55, 0.25, 0.14, 0.06])  # order of MEMBER_LEVELS
MEMBER_LOG_LAM = np.array([0.0, 0.1, 0.25, 0.45])
MEMBER_LOGIT_P = np.array([0.0, -0.15, -0.3, -0.5])
TIER_SHARE = np.array([0.18, 0.27, 0.25, 0.18, 0.12])  # city tiers 1..5
TIER_LOG_LAM = np.array([0.1, 0.05, 0.0, -0.05, -0.1])
#: Stores per city tier (bigger cities have more stores); ids S001.. numbered tier by tier.
TIER_STORES = np.array([18, 16, 12, 8, 6])

CATEGORIES: tuple[str, ...] = (
    "skincare", "makeup", "fragrance", "body_care", "hair_care", "gift_set", "supplements",
)
PERSONAS: tuple[str, ...] = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
PERSUADABLE, SURE_THING, LOST_CAUSE, SLEEPING_DOG = range(4)


@dataclass
class Persons:
    """Column arrays, one entry per person (index = person number, id C0000001 = index 0)."""

    lam: np.ndarray
    p: np.ndarray
    acq_t: np.ndarray  # world days of the first purchase
    acq_channel: np.ndarray  # index into ORDER_CHANNELS
    city_tier: np.ndarray  # 1..5
    member: np.ndarray  # index into MEMBER_LEVELS
    wecom_t: np.ndarray  # world days when the brand's WeCom was added, NaN if never
    persona: np.ndarray  # index into PERSONAS
    strength: np.ndarray  # persuadability scale (0 unless persuadable)
    nu: np.ndarray  # Gamma-Gamma spend rate; mean spend = gg_p / nu
    mean_spend: np.ndarray
    chan_cum: np.ndarray  # (n, 7) cumulative channel preference
    home_store: np.ndarray  # store number 1..N
    fav_category: np.ndarray
    engagement: np.ndarray  # scale of interaction-event rates (tied to λ)
    holdout: np.ndarray  # persistent global holdout
    dropout_t: np.ndarray  # world days of dropout, +inf if alive at the end (filled by btyd)

    @property
    def n(self) -> int:
        return self.lam.size

    def ids(self) -> np.ndarray:
        return np.array([f"C{i + 1:07d}" for i in range(self.n)], dtype=object)


def _choice(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    return np.searchsorted(np.cumsum(probs) / probs.sum(), rng.random(n), side="right")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def draw_persons(cfg: SynthConfig, clock: Clock, rng: np.random.Generator) -> Persons:
    """Draw every person's covariates and latent parameters (vectorised)."""
    n = cfg.customers
    acq_channel = _choice(rng, ACQ_SHARE, n)
    city_tier = _choice(rng, TIER_SHARE, n) + 1
    member = _choice(rng, MEMBER_SHARE, n)
    wecom = rng.random(n) < ACQ_WECOM[acq_channel]

    lam0 = rng.gamma(cfg.r, 1.0 / cfg.alpha, n)
    p0 = rng.beta(cfg.a, cfg.b, n)
    if cfg.covariates:
        shift = (ACQ_LOG_LAM[acq_channel] + TIER_LOG_LAM[city_tier - 1] + MEMBER_LOG_LAM[member]
                 + WECOM_LOG_LAM * wecom)
        # Centre so the population mean rate stays r/alpha.
        lam = lam0 * np.exp(shift) / np.exp(shift).mean()
        logit = np.log(p0) - np.log1p(-p0)
        p = _sigmoid(logit + ACQ_LOGIT_P[acq_channel] + MEMBER_LOGIT_P[member] + WECOM_LOGIT_P * wecom)
    else:
        lam, p = lam0, p0
    p = np.clip(p, 1e-9, 1.0 - 1e-9)

    # Acquisition (= first purchase) spread over the period following the calendar intensity.
    acq_t = clock.inv(rng.random(n) * clock.total)
    wecom_delay = np.where(acq_channel == ORDER_CHANNELS.index("wecom"), 0.0, rng.exponential(45.0, n))
    wecom_t = acq_t + wecom_delay
    wecom_t = np.where(wecom & (wecom_t < clock.n_days), wecom_t, np.nan)

    nu = rng.gamma(cfg.gg_q, 1.0 / cfg.gg_gamma, n)
    mean_spend = cfg.gg_p / nu

    persona, strength = _personas(rng, lam, ~np.isnan(wecom_t), member, acq_channel)

    # Channel mix: mostly the acquisition channel, then a Dirichlet spread over the others.
    prefs = rng.dirichlet(np.full(len(ORDER_CHANNELS), 0.35), n)
    prefs[np.arange(n), acq_channel] += 1.5
    prefs[:, ORDER_CHANNELS.index("wecom")] *= np.where(np.isnan(wecom_t), 0.0, 1.0)
    chan_cum = np.cumsum(prefs / prefs.sum(axis=1, keepdims=True), axis=1)
    chan_cum[:, -1] = 1.0

    first_store = np.concatenate([[0], np.cumsum(TIER_STORES)])
    home_store = first_store[city_tier - 1] + 1 + (rng.random(n) * TIER_STORES[city_tier - 1]).astype(int)
    fav_category = rng.integers(0, len(CATEGORIES), n)
    engagement = (lam / (cfg.r / cfg.alpha)) ** 0.6 * rng.lognormal(0.0, 0.5, n)
    holdout = rng.random(n) < cfg.holdout_share
    return Persons(lam, p, acq_t, acq_channel, city_tier, member, wecom_t, persona, strength, nu,
                   mean_spend, chan_cum, home_store, fav_category, engagement, holdout,
                   np.full(n, np.inf))


def _personas(
    rng: np.random.Generator, lam: np.ndarray, wecom: np.ndarray, member: np.ndarray, acq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Response trait: heavy buyers are mostly sure things; WeCom contacts and members persuadable."""
    n = lam.size
    u = rng.random(n)
    heavy = lam > np.quantile(lam, 0.85)
    p_persuadable = 0.9 * _sigmoid(-0.4 + 1.3 * wecom + 0.35 * (member > 0)
                                  - 0.4 * (acq == ORDER_CHANNELS.index("douyin")))
    persona = np.full(n, LOST_CAUSE)
    persona[u < 0.10] = SLEEPING_DOG
    persona[(u >= 0.10) & (u < 0.10 + 0.9 * p_persuadable)] = PERSUADABLE
    persona[heavy & (rng.random(n) < 0.75)] = SURE_THING
    strength = np.where(persona == PERSUADABLE, rng.gamma(4.0, 0.25, n), 0.0)
    return persona, strength


MEMBER_NAMES = np.array(MEMBER_LEVELS, dtype=object)
CHANNEL_NAMES = np.array(ORDER_CHANNELS, dtype=object)

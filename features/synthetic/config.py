"""Typed configuration of the synthetic world and the fixed priors it draws from."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Per-contact cost of each outreach channel (¥). Priors from operator reports (see the project's
#: reference/CHANNELS.md), stated here as explicit assumptions — real brands replace them:
#: - ai_call: AI outbound calls are billed per call/minute; ~¥0.6 per dialled member (connected or not).
#: - sms: marketing SMS in China costs ~¥0.04–0.06 per message; ¥0.05.
#: - wecom_1v1: ~2 staff minutes per personalised WeCom chat at ~¥60/hour fully loaded; ¥2.0.
#: - wecom_group: a group post is shared by ~200 members; ~¥0.2 of staff time per member reached.
#: - coupon: face value × redemption; a ¥20 coupon redeemed ~15% of the time ≈ ¥3.0 per issued coupon.
#: - template_msg: WeChat service-account template messages are nearly free; ¥0.01 for delivery/ops.
CHANNEL_COSTS: dict[str, float] = {
    "ai_call": 0.6,
    "sms": 0.05,
    "wecom_1v1": 2.0,
    "wecom_group": 0.2,
    "coupon": 3.0,
    "template_msg": 0.01,
}

#: Extra purchase hazard mass a fully persuadable customer (strength 1, recency factor 1) gains over a
#: campaign window when treated: P(convert | no organic purchase) = 1 − exp(−κ). Chosen so that the
#: audience-wide uplift of an AI call lands near the ~1.5% visit→buy yield reported for member recalls,
#: 1:1 WeCom chats and coupons somewhat less, SMS and template messages an order of magnitude less.
CHANNEL_KAPPA: dict[str, float] = {
    "ai_call": 0.22,
    "wecom_1v1": 0.20,
    "coupon": 0.16,
    "wecom_group": 0.05,
    "sms": 0.04,
    "template_msg": 0.025,
}

#: Probability that treating a "sleeping dog" makes them leave for good (annoyance); intrusive channels
#: (calls, SMS) annoy most.
CHANNEL_ANNOY: dict[str, float] = {
    "ai_call": 0.08,
    "sms": 0.05,
    "wecom_1v1": 0.04,
    "wecom_group": 0.03,
    "coupon": 0.02,
    "template_msg": 0.03,
}


class SynthConfig(BaseModel):
    """Parameters of a synthetic private-domain world.

    Purchase rates are per **day**: λ ~ Gamma(shape=r, rate=alpha) (mean r/alpha ≈ 6 purchases a
    year), dropout after each repeat purchase p ~ Beta(a, b) (mean ≈ 0.2). Spend per order is
    Gamma-Gamma: z ~ Gamma(gg_p, rate ν), ν ~ Gamma(gg_q, rate gg_gamma), so the population mean spend
    is gg_p·gg_gamma/(gg_q−1) ≈ ¥200. ``end`` is the last observed day (inclusive).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    customers: int = Field(20_000, ge=1, description="number of distinct persons")
    seed: int = Field(7, ge=0)
    start: date = date(2023, 1, 1)
    end: date = date(2024, 12, 31)
    covariates: bool = Field(True, description="False: λ, p drawn with no covariate shifts")
    campaigns: bool = True
    events: bool = True
    season: bool = Field(True, description="False: flat calendar (the hourly profile stays)")
    r: float = Field(0.75, gt=0)
    alpha: float = Field(45.0, gt=0)
    a: float = Field(0.9, gt=0)
    b: float = Field(3.5, gt=0)
    gg_p: float = Field(6.0, gt=0)
    gg_q: float = Field(4.0, gt=1)
    gg_gamma: float = Field(100.0, gt=0)
    holdout_share: float = Field(0.05, ge=0, lt=1, description="persistent global holdout")

    @model_validator(mode="after")
    def _period(self) -> SynthConfig:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    @property
    def n_days(self) -> int:
        return (self.end - self.start).days + 1

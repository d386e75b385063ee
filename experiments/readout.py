"""Outreach readouts: did a campaign move conversion and revenue, by how much, and did it pay?

For each campaign and each contacted arm against ``control``:

* **outcomes** per customer from the touches and orders tables: conversion = at least one *paid*
  order in ``[touch, touch + window)``; net revenue = the sum of those orders' ``net_amount``;
  the CUPED covariate is the customer's net spend in ``[touch − pre_period, touch)``;
* **lift**: absolute (difference in means, Welch standard error and t interval) and relative
  (ratio of means − 1, delta-method standard error);
* **CUPED** (Deng et al., 2013): ``y − θ (x − x̄)`` with θ = cov(x, y) / var(x) from the pooled
  arms, which keeps the estimate unbiased under randomisation and removes the share of variance the
  pre-period explains; the variance ratio (CUPED / raw) is reported;
* **sample-ratio mismatch**: a chi-square test of the arm counts against the design weights; when
  p < 0.001 the randomisation is broken and the readout is *blocked* with :class:`SampleRatioMismatch`;
* **ROI** = incremental margin / channel cost, with the margin rate an explicit typed setting;
* **Holm** step-down correction of the p-values across the metrics (and arms) of one campaign;
* **planning**: sample size and minimum detectable effect for two proportions and for means.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import optimize, stats

from experiments.assignment import CONTROL_ARM, HOLDOUT_ARM
from features.schema import PURCHASE_STATUSES

SRM_THRESHOLD = 0.001
METRICS: tuple[str, ...] = ("conversion", "revenue")


class ReadoutConfig(BaseModel):
    """Settings of a readout; every default is an explicit, documented assumption."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: float = Field(7.0, gt=0, description="Outcome window after each customer's first touch.")
    pre_period_days: float = Field(
        90.0, gt=0, description="CUPED covariate: net spend in this window before."
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="Two-sided significance level of the intervals.")
    srm_threshold: float = Field(SRM_THRESHOLD, gt=0, lt=1, description="SRM p-value that blocks a readout.")
    margin_rate: float = Field(
        0.35,
        gt=0,
        le=1,
        description="Gross margin as a share of net revenue (assumption: apparel/FMCG ≈ 35%).",
    )
    cuped: bool = True
    control_arm: str = CONTROL_ARM


# ----------------------------------------------------------------------------- typed results


@dataclass(frozen=True)
class SRMResult:
    """Chi-square goodness-of-fit of observed arm counts against the design weights."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    dof: int
    p_value: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.p_value >= self.threshold

    def message(self) -> str:
        obs = ", ".join(f"{a}={n:,}" for a, n in self.observed.items())
        exp = ", ".join(f"{a}={n:,.0f}" for a, n in self.expected.items())
        verdict = "OK" if self.passed else "SAMPLE RATIO MISMATCH — READOUT BLOCKED"
        return (
            f"{verdict}: observed {obs}; expected {exp}; chi2={self.chi2:.2f} (dof {self.dof}), "
            f"p={self.p_value:.3g} (block below {self.threshold:g})"
        )


class SampleRatioMismatch(RuntimeError):
    """The arms' sizes do not match the design: randomisation or logging is broken, so no lift is trusted."""

    def __init__(self, srm: SRMResult, campaign_id: str = ""):
        self.srm = srm
        self.campaign_id = campaign_id
        where = f"campaign {campaign_id!r}: " if campaign_id else ""
        super().__init__(
            f"\n{'!' * 78}\n{where}{srm.message()}\n"
            "Do not read this experiment: find why the arm sizes differ from the design "
            "(assignment bug, lost touch logs, arm-dependent filtering) and fix it first.\n"
            f"{'!' * 78}"
        )


@dataclass(frozen=True)
class LiftEstimate:
    """Absolute and relative lift of one metric, treatment arm vs control."""

    metric: str
    arm: str
    cuped: bool
    n_treatment: int
    n_control: int
    mean_treatment: float
    mean_control: float
    abs_lift: float
    abs_se: float
    abs_ci_low: float
    abs_ci_high: float
    rel_lift: float
    rel_se: float
    rel_ci_low: float
    rel_ci_high: float
    df: float
    p_value: float
    p_holm: float = float("nan")
    theta: float = float("nan")
    variance_ratio: float = float("nan")


@dataclass(frozen=True)
class ROIEstimate:
    """Return of a treatment arm: incremental margin over the channel cost spent on it."""

    arm: str
    cost: float
    incremental_revenue: float
    incremental_margin: float
    roi: float
    roi_ci_low: float
    roi_ci_high: float


@dataclass(frozen=True)
class ArmSummary:
    arm: str
    n: int
    conversion: float
    revenue_per_customer: float
    pre_spend_per_customer: float
    cost: float


@dataclass
class CampaignReadout:
    """Everything known about one campaign's outcome."""

    campaign_id: str
    channel: str
    config: ReadoutConfig
    srm: SRMResult
    arms: list[ArmSummary]
    lifts: list[LiftEstimate]
    roi: list[ROIEstimate]
    notes: list[str] = field(default_factory=list)

    def lift_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(x) for x in self.lifts])

    def arm_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(x) for x in self.arms])

    def roi_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(x) for x in self.roi])

    def summary_frame(self) -> pd.DataFrame:
        """One row per (arm, metric, analysis) with the figures a reader needs."""
        rows = []
        for x in self.lifts:
            rows.append(
                {
                    "campaign": self.campaign_id,
                    "arm": x.arm,
                    "metric": x.metric + (" (CUPED)" if x.cuped else ""),
                    "control": x.mean_control,
                    "treatment": x.mean_treatment,
                    "abs_lift": x.abs_lift,
                    "abs_ci": f"[{x.abs_ci_low:.4g}, {x.abs_ci_high:.4g}]",
                    "rel_lift": x.rel_lift,
                    "rel_ci": f"[{x.rel_ci_low:+.1%}, {x.rel_ci_high:+.1%}]",
                    "p": x.p_value,
                    "p_holm": x.p_holm,
                    "var_ratio": x.variance_ratio,
                }
            )
        return pd.DataFrame(rows)

    def to_text(self) -> str:
        """A plain-text table for the terminal."""
        lines = [
            f"campaign {self.campaign_id} · channel {self.channel} · window {self.config.window_days:g}d"
        ]
        lines.append("  " + self.srm.message())
        with pd.option_context(
            "display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4g}".format
        ):
            lines.append(self.arm_frame().to_string(index=False))
            lines.append(self.summary_frame().drop(columns=["campaign"]).to_string(index=False))
            if self.roi:
                lines.append(self.roi_frame().to_string(index=False))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def plot(self):  # noqa: ANN201 - matplotlib Figure, imported lazily
        """Forest plot of relative lifts with their intervals (one row per arm × metric × analysis)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lifts = self.lifts
        fig, ax = plt.subplots(figsize=(7, 0.6 * max(len(lifts), 2) + 1.2))
        labels = [f"{x.arm} · {x.metric}{' (CUPED)' if x.cuped else ''}" for x in lifts]
        y = np.arange(len(lifts))[::-1]
        mid = np.array([x.rel_lift for x in lifts]) * 100
        lo = mid - np.array([x.rel_ci_low for x in lifts]) * 100
        hi = np.array([x.rel_ci_high for x in lifts]) * 100 - mid
        ax.errorbar(mid, y, xerr=[lo, hi], fmt="o", capsize=4, color="tab:blue")
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(y, labels)
        ax.set_xlabel(f"relative lift vs control, % ({1 - self.config.alpha:.0%} CI)")
        ax.set_title(f"{self.campaign_id} ({self.channel})")
        fig.tight_layout()
        return fig

    def to_html(self, png: bytes | None = None) -> str:
        """A self-contained HTML report (tables + the forest plot embedded as PNG)."""
        img = ""
        if png is not None:
            img = f'<img alt="lift plot" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
        notes = "".join(f"<li>{n}</li>" for n in self.notes)
        return (
            f"<html><head><meta charset='utf-8'><title>{self.campaign_id} readout</title></head><body>"
            f"<h1>Campaign {self.campaign_id} ({self.channel})</h1>"
            f"<p>{self.srm.message()}</p><h2>Arms</h2>{self.arm_frame().to_html(index=False)}"
            f"<h2>Lift</h2>{self.summary_frame().to_html(index=False)}"
            f"<h2>ROI (margin rate {self.config.margin_rate:.0%})</h2>{self.roi_frame().to_html(index=False)}"
            f"{img}<ul>{notes}</ul></body></html>"
        )


# ----------------------------------------------------------------------------- statistics


def srm_check(
    counts: Mapping[str, int], weights: Mapping[str, float], threshold: float = SRM_THRESHOLD
) -> SRMResult:
    """Chi-square test of observed arm ``counts`` against the design ``weights`` (normalised)."""
    missing = sorted(set(weights) - set(counts))
    extra = sorted(a for a in set(counts) - set(weights) if counts[a] > 0)
    if extra:
        raise ValueError(f"arms {extra} were observed but are not in the design {sorted(weights)}")
    arms = list(weights)
    obs = np.array([int(counts.get(a, 0)) for a in arms], dtype=float)
    w = np.array([float(weights[a]) for a in arms])
    if (w <= 0).any() or obs.sum() <= 0:
        raise ValueError(
            f"SRM check needs positive weights and at least one unit; got {dict(weights)} / {dict(counts)}"
        )
    exp = obs.sum() * w / w.sum()
    chi2, p = stats.chisquare(obs, exp)
    _ = missing  # arms with no unit at all simply count as zero (and will fail the test)
    return SRMResult(
        observed={a: int(o) for a, o in zip(arms, obs, strict=True)},
        expected={a: float(e) for a, e in zip(arms, exp, strict=True)},
        chi2=float(chi2),
        dof=len(arms) - 1,
        p_value=float(p),
        threshold=threshold,
    )


def require_no_srm(srm: SRMResult, campaign_id: str = "") -> SRMResult:
    """Return ``srm`` when it passes; raise :class:`SampleRatioMismatch` (blocking the readout) if not."""
    if not srm.passed:
        raise SampleRatioMismatch(srm, campaign_id)
    return srm


def _check_sample(name: str, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or len(y) < 2:
        raise ValueError(f"{name} needs a 1-d sample of at least 2 units, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"{name} has {int((~np.isfinite(y)).sum())} non-finite values")
    return y


def diff_in_means(
    y_treatment: np.ndarray,
    y_control: np.ndarray,
    alpha: float = 0.05,
    metric: str = "metric",
    arm: str = "treatment",
    cuped: bool = False,
) -> LiftEstimate:
    """Absolute lift (Welch) and relative lift (delta method) of ``mean(y_t)`` over ``mean(y_c)``.

    Relative lift r = m_t / m_c − 1 has Var ≈ Var(m_t)/m_c² + m_t² Var(m_c)/m_c⁴ (first-order delta
    method, arms independent). Intervals use Welch–Satterthwaite degrees of freedom for the absolute
    lift and the normal quantile for the relative one.
    """
    yt, yc = _check_sample("treatment", y_treatment), _check_sample("control", y_control)
    nt, nc = len(yt), len(yc)
    mt, mc = float(yt.mean()), float(yc.mean())
    vt, vc = float(yt.var(ddof=1)) / nt, float(yc.var(ddof=1)) / nc
    se = math.sqrt(vt + vc)
    diff = mt - mc
    if se > 0:
        df = (vt + vc) ** 2 / ((vt**2 / (nt - 1) if vt > 0 else 0.0) + (vc**2 / (nc - 1) if vc > 0 else 0.0))
        t_crit = float(stats.t.ppf(1 - alpha / 2, df))
        p = float(2 * stats.t.sf(abs(diff) / se, df))
    else:
        df, t_crit, p = float(nt + nc - 2), 0.0, (1.0 if diff == 0 else 0.0)
    z = float(stats.norm.ppf(1 - alpha / 2))
    if mc != 0:
        rel = mt / mc - 1
        rel_se = math.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    else:
        rel, rel_se = float("nan"), float("nan")
    return LiftEstimate(
        metric=metric,
        arm=arm,
        cuped=cuped,
        n_treatment=nt,
        n_control=nc,
        mean_treatment=mt,
        mean_control=mc,
        abs_lift=diff,
        abs_se=se,
        abs_ci_low=diff - t_crit * se,
        abs_ci_high=diff + t_crit * se,
        rel_lift=rel,
        rel_se=rel_se,
        rel_ci_low=rel - z * rel_se,
        rel_ci_high=rel + z * rel_se,
        df=float(df),
        p_value=p,
    )


def cuped_theta(y: np.ndarray, x: np.ndarray) -> float:
    """θ = cov(x, y) / var(x) on the pooled sample (0 when x does not vary)."""
    y, x = np.asarray(y, float), np.asarray(x, float)
    vx = float(np.var(x, ddof=1))
    if not vx > 0:
        return 0.0
    return float(np.cov(x, y, ddof=1)[0, 1] / vx)


def cuped_lift(
    y_treatment: np.ndarray,
    y_control: np.ndarray,
    x_treatment: np.ndarray,
    x_control: np.ndarray,
    alpha: float = 0.05,
    metric: str = "metric",
    arm: str = "treatment",
) -> LiftEstimate:
    """Lift on CUPED-adjusted outcomes ``y − θ (x − x̄)`` with θ and x̄ from the pooled arms.

    The reported ``variance_ratio`` is Var(CUPED lift) / Var(raw lift) — below 1 when the
    pre-period covariate explains part of the outcome.
    """
    yt, yc = _check_sample("treatment", y_treatment), _check_sample("control", y_control)
    xt, xc = _check_sample("treatment covariate", x_treatment), _check_sample("control covariate", x_control)
    if len(xt) != len(yt) or len(xc) != len(yc):
        raise ValueError("covariate and outcome samples must have the same length per arm")
    y_all, x_all = np.concatenate([yt, yc]), np.concatenate([xt, xc])
    theta = cuped_theta(y_all, x_all)
    x_bar = float(x_all.mean())
    raw = diff_in_means(yt, yc, alpha, metric, arm)
    adj = diff_in_means(yt - theta * (xt - x_bar), yc - theta * (xc - x_bar), alpha, metric, arm, cuped=True)
    ratio = (adj.abs_se / raw.abs_se) ** 2 if raw.abs_se > 0 else float("nan")
    return _replace(adj, theta=theta, variance_ratio=ratio)


def _replace(est: LiftEstimate, **changes: float) -> LiftEstimate:
    d = asdict(est)
    d.update(changes)
    return LiftEstimate(**d)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values (same order as the input; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adj)
    return out


# ----------------------------------------------------------------------------- planning


def _z(q: float) -> float:
    return float(stats.norm.ppf(q))


def n_two_proportions(
    p_control: float, mde_abs: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> tuple[int, int]:
    """Units needed (treatment, control) to detect ``p_control → p_control + mde_abs`` (two-sided z test).

    ``ratio`` = n_control / n_treatment. Pooled variance under H0, unpooled under H1 (Fleiss, 1981).
    """
    p0, p1 = p_control, p_control + mde_abs
    if not (0 < p0 < 1 and 0 < p1 < 1) or mde_abs == 0:
        raise ValueError(f"need 0 < p < 1 in both arms and a non-zero effect; got {p0} → {p1}")
    k = ratio
    p_bar = (p1 + k * p0) / (1 + k)
    za, zb = _z(1 - alpha / 2), _z(power)
    num = za * math.sqrt(p_bar * (1 - p_bar) * (1 + 1 / k)) + zb * math.sqrt(
        p1 * (1 - p1) + p0 * (1 - p0) / k
    )
    nt = math.ceil(num**2 / mde_abs**2)
    return nt, math.ceil(k * nt)


def power_two_proportions(
    p_control: float, mde_abs: float, n_treatment: int, n_control: int, alpha: float = 0.05
) -> float:
    """Power of the two-sided z test for two proportions at the given arm sizes."""
    p0, p1 = p_control, p_control + mde_abs
    k = n_control / n_treatment
    p_bar = (n_treatment * p1 + n_control * p0) / (n_treatment + n_control)
    se0 = math.sqrt(p_bar * (1 - p_bar) * (1 / n_treatment + 1 / n_control))
    se1 = math.sqrt(p1 * (1 - p1) / n_treatment + p0 * (1 - p0) / n_control)
    _ = k
    za = _z(1 - alpha / 2)
    d = abs(mde_abs)
    return float(stats.norm.cdf((d - za * se0) / se1) + stats.norm.cdf((-d - za * se0) / se1))


def mde_two_proportions(
    p_control: float, n_treatment: int, n_control: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest absolute increase over ``p_control`` detected with ``power`` at these arm sizes."""
    hi = 1 - p_control - 1e-9
    if power_two_proportions(p_control, hi, n_treatment, n_control, alpha) < power:
        return float("nan")
    return float(
        optimize.brentq(
            lambda d: power_two_proportions(p_control, d, n_treatment, n_control, alpha) - power, 1e-9, hi
        )
    )


def n_means(
    sd: float, mde: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> tuple[int, int]:
    """Units needed (treatment, control) to detect a mean difference ``mde`` with outcome s.d. ``sd``."""
    if sd <= 0 or mde == 0:
        raise ValueError("need sd > 0 and a non-zero effect")
    k = ratio
    nt = math.ceil((_z(1 - alpha / 2) + _z(power)) ** 2 * sd**2 * (1 + 1 / k) / mde**2)
    return nt, math.ceil(k * nt)


def mde_means(sd: float, n_treatment: int, n_control: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable mean difference at these arm sizes (normal approximation)."""
    return float((_z(1 - alpha / 2) + _z(power)) * sd * math.sqrt(1 / n_treatment + 1 / n_control))


# ----------------------------------------------------------------------------- outcomes from tables


def campaign_outcomes(
    touches: pd.DataFrame,
    orders: pd.DataFrame,
    config: ReadoutConfig | None = None,
    campaign_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (campaign, customer): arm, channel, first touch, cost and the outcomes.

    Columns: campaign_id, customer_id, arm, channel, touch_ts, cost, converted, revenue, pre_spend.
    A customer listed in two arms of one campaign is a logging error; every such pair is reported.
    """
    cfg = config or ReadoutConfig()
    need_t = {"customer_id", "campaign_id", "ts", "arm", "channel", "cost"}
    need_o = {"customer_id", "ts", "status", "net_amount"}
    problems = [f"touches lacks column {c!r}" for c in sorted(need_t - set(touches.columns))]
    problems += [f"orders lacks column {c!r}" for c in sorted(need_o - set(orders.columns))]
    if problems:
        raise ValueError("; ".join(problems))
    t = touches if campaign_ids is None else touches[touches["campaign_id"].isin(campaign_ids)]
    arms_per = t.groupby(["campaign_id", "customer_id"])["arm"].nunique()
    conflicted = arms_per[arms_per > 1]
    if len(conflicted):
        pairs = [f"{c}/{k}" for c, k in conflicted.index[:20]]
        raise ValueError(f"{len(conflicted)} customers appear in more than one arm of a campaign: {pairs}")
    units = (
        t.sort_values("ts", kind="stable")
        .groupby(["campaign_id", "customer_id"], sort=True)
        .agg(
            arm=("arm", "first"), channel=("channel", "first"), touch_ts=("ts", "first"), cost=("cost", "sum")
        )
        .reset_index()
    )
    paid = orders.loc[orders["status"].isin(PURCHASE_STATUSES), ["customer_id", "ts", "net_amount"]]
    paid = paid[paid["customer_id"].isin(units["customer_id"].unique())]
    joined = units[["campaign_id", "customer_id", "touch_ts"]].merge(paid, on="customer_id", how="inner")
    dt_days = (joined["ts"] - joined["touch_ts"]) / pd.Timedelta(days=1)
    in_window = (dt_days >= 0) & (dt_days < cfg.window_days)
    in_pre = (dt_days < 0) & (dt_days >= -cfg.pre_period_days)
    key = ["campaign_id", "customer_id"]
    post = joined[in_window].groupby(key)["net_amount"].agg(["size", "sum"])
    pre = joined[in_pre].groupby(key)["net_amount"].sum()
    units = units.set_index(key)
    units["converted"] = (post["size"].reindex(units.index).fillna(0) > 0).astype(float)
    units["revenue"] = post["sum"].reindex(units.index).fillna(0.0)
    units["pre_spend"] = pre.reindex(units.index).fillna(0.0)
    return units.reset_index()


def readout_campaign(
    outcomes: pd.DataFrame,
    weights: Mapping[str, float],
    config: ReadoutConfig | None = None,
    campaign_id: str | None = None,
) -> CampaignReadout:
    """Read out one campaign from its :func:`campaign_outcomes` rows; SRM first, then lifts and ROI.

    ``weights`` is the design (arm → weight). The ``holdout`` arm (global holdout) takes part in the SRM
    test only when the design lists it; it is never a comparison arm. Raises
    :class:`SampleRatioMismatch` when the arm sizes contradict the design.
    """
    cfg = config or ReadoutConfig()
    if campaign_id is None:
        ids = outcomes["campaign_id"].unique()
        if len(ids) != 1:
            raise ValueError(f"outcomes hold {len(ids)} campaigns; pass campaign_id")
        campaign_id = str(ids[0])
    df = outcomes[outcomes["campaign_id"] == campaign_id]
    if df.empty:
        raise ValueError(f"no units for campaign {campaign_id!r}")
    counts = df["arm"].value_counts().to_dict()
    srm_counts = {a: n for a, n in counts.items() if a in weights or a != HOLDOUT_ARM}
    srm = require_no_srm(srm_check(srm_counts, weights, cfg.srm_threshold), campaign_id)

    ctrl_arm = cfg.control_arm
    if counts.get(ctrl_arm, 0) < 2:
        raise ValueError(f"campaign {campaign_id!r} has fewer than 2 units in control arm {ctrl_arm!r}")
    arms_t = [a for a in weights if a not in (ctrl_arm, HOLDOUT_ARM) and counts.get(a, 0) >= 2]
    ctrl = df[df["arm"] == ctrl_arm]
    raw: list[LiftEstimate] = []
    adj: list[LiftEstimate] = []
    for arm in arms_t:
        tr = df[df["arm"] == arm]
        for metric, col in (("conversion", "converted"), ("revenue", "revenue")):
            raw.append(diff_in_means(tr[col].to_numpy(), ctrl[col].to_numpy(), cfg.alpha, metric, arm))
            if cfg.cuped:
                adj.append(
                    cuped_lift(
                        tr[col].to_numpy(),
                        ctrl[col].to_numpy(),
                        tr["pre_spend"].to_numpy(),
                        ctrl["pre_spend"].to_numpy(),
                        cfg.alpha,
                        metric,
                        arm,
                    )
                )
    # Holm within each analysis family (raw; CUPED) across every metric × arm of this campaign.
    lifts = []
    for family in (raw, adj):
        adjusted = holm([x.p_value for x in family])
        lifts += [_replace(x, p_holm=float(p)) for x, p in zip(family, adjusted, strict=True)]

    primary = {(x.arm, x.metric): x for x in (adj if cfg.cuped else raw)}
    roi = [_roi(arm, df, primary[(arm, "revenue")], cfg) for arm in arms_t]
    arms = [
        ArmSummary(
            arm=str(a),
            n=int(len(g)),
            conversion=float(g["converted"].mean()),
            revenue_per_customer=float(g["revenue"].mean()),
            pre_spend_per_customer=float(g["pre_spend"].mean()),
            cost=float(g["cost"].sum()),
        )
        for a, g in df.groupby("arm", sort=True)
    ]
    channel = (
        str(df.loc[df["arm"] != ctrl_arm, "channel"].mode().iat[0]) if arms_t else str(df["channel"].iat[0])
    )
    notes = []
    if not arms_t:
        notes.append("no treatment arm with at least 2 units; only arm summaries are shown")
    return CampaignReadout(str(campaign_id), channel, cfg, srm, arms, lifts, roi, notes)


def _roi(arm: str, df: pd.DataFrame, rev: LiftEstimate, cfg: ReadoutConfig) -> ROIEstimate:
    cost = float(df.loc[df["arm"] == arm, "cost"].sum())
    n = rev.n_treatment
    inc_rev = rev.abs_lift * n
    margin = cfg.margin_rate * n

    def ratio(v: float) -> float:
        return v * margin / cost if cost > 0 else float("nan")

    return ROIEstimate(
        arm=arm,
        cost=cost,
        incremental_revenue=inc_rev,
        incremental_margin=cfg.margin_rate * inc_rev,
        roi=ratio(rev.abs_lift),
        roi_ci_low=ratio(rev.abs_ci_low),
        roi_ci_high=ratio(rev.abs_ci_high),
    )


def figure_png(fig) -> bytes:  # noqa: ANN001 - matplotlib Figure
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()

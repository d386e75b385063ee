"""Every figure of the operations report, computed as typed results from data cut at the cutoff.

Definitions (all point-in-time: only records with ``ts < cutoff`` are used; "paid" orders only):

* **customers** — customers first seen before the cutoff.
* **active rate** — customers with a paid order in the last ``active_days`` / customers.
* **repurchase rate at N days** — of the customers whose *first* paid order fell in
  ``[c − N − cohort_days, c − N)``, the share with another paid order within N days after it
  (so every window has fully elapsed before the cutoff).
* **AOV** — mean net amount of the paid orders in the last ``period_days``; **net revenue** their sum.
* **purchases per year** — paid orders in the last ``frequency_days`` per customer who bought in them,
  scaled to 365 days.
* **LTV by acquisition cohort × channel** — mean net spend per customer to date, and within
  ``ltv_age_days`` of acquisition (only where every customer of the cell is that old).
* **channel contribution / overlap** — per order channel over the last ``period_days``: orders, buyers,
  revenue and shares; buyers in both channels of each pair.
* **lifecycle** — stages from the feature snapshot (``features.snapshot.lifecycle_stage``); transitions
  between the snapshot one month earlier and the current one.
* **monitoring** — PSI (``features.quality.psi``) per feature and per score between the reference
  (training) snapshot and the scoring snapshot; calibration of the latest scored cutoff whose labels
  (``features.labels``) have matured before the cutoff.
* **data checks** — rows per channel per business day (recent window vs a trimmed-mean baseline),
  null rates of raw columns (recent vs baseline) and of snapshot features (current vs reference).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from features.as_of import before, business_day_number, cutoff_ts
from features.labels import LabelWindowError, compute_labels
from features.quality import PSIResult, psi
from features.schema import BUSINESS_TZ, ORDER_CHANNELS, PURCHASE_STATUSES
from features.snapshot import LIFECYCLE_NAMES

STAGES: tuple[str, ...] = tuple(LIFECYCLE_NAMES)
#: Row label of customers who were not yet acquired at the earlier snapshot of a transition matrix.
NOT_ACQUIRED = "not_acquired"
SNAPSHOT_KEYS: tuple[str, ...] = ("customer_id", "cutoff")
#: Score column → (label column, horizon in days; None = the churn horizon of the config).
SCORE_LABELS: dict[str, tuple[str, int | None]] = {
    "p_churn": ("label_churn", None),
    "p_repurchase_7d": ("label_repurchase_7d", 7),
    "clv_12m": ("label_future_net_spend_365d", 365),
}


class ReportConfig(BaseModel):
    """Windows and bins of the report's figures; every default is a stated operating choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    active_days: int = Field(90, gt=0, description="Active = paid order in this many days before.")
    period_days: int = Field(90, gt=0, description="Window of AOV, revenue, channel contribution/overlap.")
    frequency_days: int = Field(365, gt=0, description="Window of purchases per year.")
    repurchase_days: tuple[int, ...] = Field((7, 30, 90), description="Repurchase-rate horizons.")
    repurchase_cohort_days: int = Field(90, gt=0, description="Width of the first-purchase cohort.")
    ltv_age_days: int = Field(180, gt=0, description="LTV at this age since acquisition.")
    trend_months: int = Field(6, ge=1, description="Monthly KPI history (trend plot, metric drops).")
    psi_bins: int = Field(10, ge=2)
    calibration_bins: int = Field(10, ge=2)
    churn_horizon_days: int = Field(90, gt=0, description="Horizon of label_churn (as in training).")
    recent_days: int = Field(7, gt=0, description="Data checks: the window judged.")
    baseline_days: int = Field(28, gt=0, description="Data checks: the trailing baseline before it.")
    baseline_trim: float = Field(0.2, ge=0, lt=0.5, description="Trimmed share at each end of the baseline.")
    score_prefixes: tuple[str, ...] = ("p_", "clv", "expected_")


# ----------------------------------------------------------------------------- typed results


@dataclass(frozen=True)
class StageDistribution:
    cutoff: dt.date
    total: int
    counts: dict[str, int]
    shares: dict[str, float]
    names_zh: dict[str, str] = field(default_factory=lambda: dict(LIFECYCLE_NAMES))


@dataclass(frozen=True)
class StageTransitions:
    """counts[from][to]: customers in stage ``from`` at ``from_cutoff`` and ``to`` at ``to_cutoff``."""

    from_cutoff: dt.date
    to_cutoff: dt.date
    counts: dict[str, dict[str, int]]
    row_shares: dict[str, dict[str, float]]


@dataclass(frozen=True)
class MetricValue:
    """A KPI with the standard error used to judge a drop against the previous month."""

    value: float
    se: float
    n: int


@dataclass(frozen=True)
class RepurchaseRate:
    days: int
    cohort_start: dt.date
    cohort_end: dt.date
    cohort_size: int
    repeaters: int
    rate: float


@dataclass(frozen=True)
class KPIs:
    cutoff: dt.date
    customers: int
    active_customers: int
    active_rate: float
    repurchase: list[RepurchaseRate]
    period_orders: int
    net_revenue_period: float
    aov: float
    aov_sd: float
    net_sq_sum: float
    frequency_orders: int
    frequency_buyers: int
    purchases_per_year: float
    purchases_per_year_sd: float

    def metric_values(self) -> dict[str, MetricValue]:
        """Each alertable KPI with its standard error (binomial, CLT or compound Poisson)."""
        out = {
            "active_rate": MetricValue(
                self.active_rate, _binom_se(self.active_rate, self.customers), self.customers
            ),
            "aov": MetricValue(self.aov, _mean_se(self.aov_sd, self.period_orders), self.period_orders),
            "net_revenue_period": MetricValue(
                self.net_revenue_period, math.sqrt(self.net_sq_sum), self.period_orders
            ),
            "purchases_per_year": MetricValue(
                self.purchases_per_year,
                _mean_se(self.purchases_per_year_sd, self.frequency_buyers),
                self.frequency_buyers,
            ),
        }
        for r in self.repurchase:
            out[f"repurchase_rate_{r.days}d"] = MetricValue(
                r.rate, _binom_se(r.rate, r.cohort_size), r.cohort_size
            )
        return out


@dataclass(frozen=True)
class CohortLTV:
    cohort: str
    channel: str
    customers: int
    ltv_to_date: float
    ltv_at_age: float | None


@dataclass(frozen=True)
class ChannelShare:
    channel: str
    orders: int
    buyers: int
    revenue: float
    revenue_share: float
    order_share: float


@dataclass(frozen=True)
class ChannelOverlap:
    """buyers[a][b]: customers who bought in both ``a`` and ``b`` in the period (diagonal: in ``a``)."""

    channels: list[str]
    buyers: dict[str, dict[str, int]]
    n_channels: dict[str, int]


@dataclass(frozen=True)
class DriftRow:
    name: str
    kind: str  # "feature" | "score"
    reference_cutoff: dt.date
    current_cutoff: dt.date
    psi: float
    bins: list[str]
    reference_share: list[float]
    current_share: list[float]
    n_reference: int
    n_current: int


@dataclass(frozen=True)
class CalibrationBin:
    lo: float
    hi: float
    n: int
    mean_predicted: float
    mean_realised: float


@dataclass(frozen=True)
class Calibration:
    """Predicted vs realised for one score on the latest scored cutoff whose labels have matured."""

    score: str
    label: str
    scored_cutoff: dt.date
    horizon_days: int
    kind: str  # "probability" (equal-width bins) | "value" (equal-count bins by prediction)
    n: int
    mean_predicted: float
    mean_realised: float
    brier: float | None
    ece: float | None
    bins: list[CalibrationBin]


@dataclass(frozen=True)
class RowCountCheck:
    """Rows per business day of one table/group: recent window vs the trimmed-mean baseline."""

    table: str
    group: str
    days: list[dt.date]
    counts: list[int]
    baseline_mean: float
    dispersion: float
    expected: float
    observed: int
    ratio: float | None
    p_value: float


@dataclass(frozen=True)
class NullRateCheck:
    """Null rate of one column, recent vs baseline (raw tables) or current vs reference (snapshot)."""

    source: str  # "orders" | "events" | "customers" | "snapshot"
    column: str
    baseline_rows: int
    baseline_rate: float
    recent_rows: int
    recent_rate: float
    z: float | None


@dataclass(frozen=True)
class StageScores:
    stage: str
    customers: int
    means: dict[str, float]


@dataclass(frozen=True)
class CampaignROI:
    campaign: str
    arm: str
    n_treatment: int
    cost: float
    conversion_lift: float | None
    revenue_lift: float
    revenue_lift_p_holm: float | None
    incremental_revenue: float
    incremental_margin: float
    roi: float | None


@dataclass
class ReportFigures:
    """Everything the report shows; ``notes`` say which sections were skipped and why."""

    cutoff: dt.date
    reference_cutoff: dt.date
    config: ReportConfig
    lifecycle: StageDistribution
    transitions: StageTransitions
    kpis: KPIs
    kpi_trend: list[KPIs]
    cohort_ltv: list[CohortLTV]
    channel_shares: list[ChannelShare]
    channel_overlap: ChannelOverlap
    feature_drift: list[DriftRow]
    score_drift: list[DriftRow]
    calibration: list[Calibration]
    stage_scores: list[StageScores]
    row_counts: list[RowCountCheck]
    raw_null_rates: list[NullRateCheck]
    snapshot_null_rates: list[NullRateCheck]
    campaign_roi: list[CampaignROI]
    margin_rate: float | None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers


def _binom_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n > 0 and np.isfinite(p) else float("nan")


def _mean_se(sd: float, n: int) -> float:
    return sd / math.sqrt(n) if n > 1 and np.isfinite(sd) else float("nan")


def business_date(ts: pd.Timestamp) -> dt.date:
    """Business date of a timestamp (a cutoff timestamp maps back to its cutoff date)."""
    return ts.tz_convert(BUSINESS_TZ).date()


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` earlier (clipped to the month's end)."""
    return (pd.Timestamp(day) - pd.DateOffset(months=months)).date()


def paid_orders(tables: Mapping[str, pd.DataFrame], cutoff: dt.date) -> pd.DataFrame:
    """Paid orders before ``cutoff``."""
    o = before(tables["orders"], cutoff_ts(cutoff))
    return o[o["status"].isin(PURCHASE_STATUSES)]


def cut_tables(tables: Mapping[str, pd.DataFrame], cutoff: dt.date) -> dict[str, pd.DataFrame]:
    """The tables as known at ``cutoff``: rows before it (customers by ``first_seen_ts``)."""
    c = cutoff_ts(cutoff)
    out = {}
    for name, df in tables.items():
        col = "first_seen_ts" if name == "customers" else "ts"
        out[name] = before(df, c, col) if col in df.columns else df
    return out


# ----------------------------------------------------------------------------- lifecycle


def lifecycle_distribution(snapshot: pd.DataFrame, cutoff: dt.date) -> StageDistribution:
    """Customers per lifecycle stage in a snapshot."""
    counts = snapshot["lifecycle_stage"].value_counts()
    total = int(len(snapshot))
    c = {s: int(counts.get(s, 0)) for s in STAGES}
    return StageDistribution(
        cutoff, total, c, {s: (n / total if total else float("nan")) for s, n in c.items()}
    )


def lifecycle_transitions(
    earlier: pd.DataFrame, later: pd.DataFrame, from_cutoff: dt.date, to_cutoff: dt.date
) -> StageTransitions:
    """Stage of every customer at ``to_cutoff`` against their stage at ``from_cutoff``."""
    prev = earlier.set_index("customer_id")["lifecycle_stage"]
    cur = later.set_index("customer_id")["lifecycle_stage"]
    src = prev.reindex(cur.index).fillna(NOT_ACQUIRED)
    table = pd.crosstab(src, cur)
    rows = (NOT_ACQUIRED, *STAGES)
    counts = {
        r: {s: int(table.at[r, s]) if r in table.index and s in table.columns else 0 for s in STAGES}
        for r in rows
    }
    shares = {}
    for r, row in counts.items():
        n = sum(row.values())
        shares[r] = {s: (v / n if n else float("nan")) for s, v in row.items()}
    return StageTransitions(from_cutoff, to_cutoff, counts, shares)


# ----------------------------------------------------------------------------- KPIs


def _repurchase(paid: pd.DataFrame, c: pd.Timestamp, days: int, cohort_days: int) -> RepurchaseRate:
    lo, hi = c - pd.Timedelta(days=days + cohort_days), c - pd.Timedelta(days=days)
    first = paid.groupby("customer_id")["ts"].min()
    cohort = first[(first >= lo) & (first < hi)]
    later = paid[paid["customer_id"].isin(cohort.index)].join(cohort.rename("first_ts"), on="customer_id")
    again = later[
        (later["ts"] > later["first_ts"]) & (later["ts"] < later["first_ts"] + pd.Timedelta(days=days))
    ]
    n, k = len(cohort), int(again["customer_id"].nunique())
    return RepurchaseRate(days, business_date(lo), business_date(hi), n, k, k / n if n else float("nan"))


def kpis(tables: Mapping[str, pd.DataFrame], cutoff: dt.date, cfg: ReportConfig) -> KPIs:
    """Headline KPIs at ``cutoff`` (see the module docstring for each definition)."""
    c = cutoff_ts(cutoff)
    customers = int((tables["customers"]["first_seen_ts"] < c).sum())
    paid = paid_orders(tables, cutoff)
    active = int(paid.loc[paid["ts"] >= c - pd.Timedelta(days=cfg.active_days), "customer_id"].nunique())
    period = paid[paid["ts"] >= c - pd.Timedelta(days=cfg.period_days)]
    net = period["net_amount"].to_numpy(float)
    freq = paid[paid["ts"] >= c - pd.Timedelta(days=cfg.frequency_days)]
    per_buyer = freq.groupby("customer_id").size().to_numpy(float) * 365.0 / cfg.frequency_days
    return KPIs(
        cutoff=cutoff,
        customers=customers,
        active_customers=active,
        active_rate=active / customers if customers else float("nan"),
        repurchase=[_repurchase(paid, c, d, cfg.repurchase_cohort_days) for d in cfg.repurchase_days],
        period_orders=int(net.size),
        net_revenue_period=float(net.sum()),
        aov=float(net.mean()) if net.size else float("nan"),
        aov_sd=float(net.std(ddof=1)) if net.size > 1 else float("nan"),
        net_sq_sum=float(np.sum(net**2)),
        frequency_orders=int(len(freq)),
        frequency_buyers=int(per_buyer.size),
        purchases_per_year=float(per_buyer.mean()) if per_buyer.size else float("nan"),
        purchases_per_year_sd=float(per_buyer.std(ddof=1)) if per_buyer.size > 1 else float("nan"),
    )


def kpi_trend(tables: Mapping[str, pd.DataFrame], cutoff: dt.date, cfg: ReportConfig) -> list[KPIs]:
    """KPIs at the same day of each of the last ``trend_months`` months and at the cutoff (oldest first)."""
    return [kpis(tables, months_before(cutoff, k), cfg) for k in range(cfg.trend_months, -1, -1)]


# ----------------------------------------------------------------------------- cohorts & channels


def _cohort_label(ts: pd.Series) -> pd.Series:
    local = ts.dt.tz_convert(BUSINESS_TZ).dt.tz_localize(None)
    return local.dt.to_period("Q").astype(str)


def cohort_ltv(tables: Mapping[str, pd.DataFrame], cutoff: dt.date, cfg: ReportConfig) -> list[CohortLTV]:
    """Mean net spend per customer by acquisition quarter × acquisition channel."""
    c = cutoff_ts(cutoff)
    cust = tables["customers"]
    cust = cust.loc[cust["first_seen_ts"] < c, ["customer_id", "first_seen_ts", "acquisition_channel"]]
    paid = paid_orders(tables, cutoff)[["customer_id", "ts", "net_amount"]]
    age = pd.Timedelta(days=cfg.ltv_age_days)
    joined = paid.merge(cust[["customer_id", "first_seen_ts"]], on="customer_id", how="inner")
    early = joined[joined["ts"] < joined["first_seen_ts"] + age]
    df = cust.set_index("customer_id")
    df["spend"] = paid.groupby("customer_id")["net_amount"].sum().reindex(df.index).fillna(0.0)
    df["spend_age"] = early.groupby("customer_id")["net_amount"].sum().reindex(df.index).fillna(0.0)
    df["mature"] = df["first_seen_ts"] + age <= c
    df["cohort"] = _cohort_label(df["first_seen_ts"])
    out = []
    for (cohort, channel), g in df.groupby(["cohort", "acquisition_channel"], sort=True):
        at_age = float(g["spend_age"].mean()) if bool(g["mature"].all()) else None
        out.append(CohortLTV(str(cohort), str(channel), int(len(g)), float(g["spend"].mean()), at_age))
    return out


def channel_shares(
    tables: Mapping[str, pd.DataFrame], cutoff: dt.date, cfg: ReportConfig
) -> list[ChannelShare]:
    """Each order channel's orders, buyers and net revenue in the period, with shares of the totals."""
    paid = paid_orders(tables, cutoff)
    period = paid[paid["ts"] >= cutoff_ts(cutoff) - pd.Timedelta(days=cfg.period_days)]
    total_rev, total_n = float(period["net_amount"].sum()), len(period)
    g = period.groupby("channel")
    orders, buyers, rev = g.size(), g["customer_id"].nunique(), g["net_amount"].sum()
    out = []
    for ch in ORDER_CHANNELS:
        r = float(rev.get(ch, 0.0))
        n = int(orders.get(ch, 0))
        out.append(
            ChannelShare(
                ch,
                n,
                int(buyers.get(ch, 0)),
                r,
                r / total_rev if total_rev else float("nan"),
                n / total_n if total_n else float("nan"),
            )
        )
    return out


def channel_overlap(tables: Mapping[str, pd.DataFrame], cutoff: dt.date, cfg: ReportConfig) -> ChannelOverlap:
    """Buyers shared by each pair of order channels in the period, and buyers by number of channels."""
    paid = paid_orders(tables, cutoff)
    period = paid[paid["ts"] >= cutoff_ts(cutoff) - pd.Timedelta(days=cfg.period_days)]
    member = pd.crosstab(period["customer_id"], period["channel"]).clip(upper=1)
    member = member.reindex(columns=list(ORDER_CHANNELS), fill_value=0)
    both = member.T @ member
    buyers = {a: {b: int(both.at[a, b]) for b in ORDER_CHANNELS} for a in ORDER_CHANNELS}
    k = member.sum(axis=1)
    n_channels = {"1": int((k == 1).sum()), "2": int((k == 2).sum()), "3+": int((k >= 3).sum())}
    return ChannelOverlap(list(ORDER_CHANNELS), buyers, n_channels)


# ----------------------------------------------------------------------------- monitoring


def feature_columns(snapshot: pd.DataFrame) -> list[str]:
    """Every snapshot column except the keys."""
    return [c for c in snapshot.columns if c not in SNAPSHOT_KEYS]


def _drift(name: str, kind: str, ref_c: dt.date, cur_c: dt.date, r: PSIResult) -> DriftRow:
    return DriftRow(
        name,
        kind,
        ref_c,
        cur_c,
        r.value,
        r.bins,
        r.reference_share,
        r.current_share,
        r.n_reference,
        r.n_current,
    )


def feature_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    ref_cutoff: dt.date,
    cur_cutoff: dt.date,
    cfg: ReportConfig,
) -> list[DriftRow]:
    """PSI of every feature present in both snapshots (sorted by PSI, largest first)."""
    cols = [c for c in feature_columns(current) if c in reference.columns]
    rows = [
        _drift(c, "feature", ref_cutoff, cur_cutoff, psi(reference[c], current[c], cfg.psi_bins))
        for c in cols
    ]
    return sorted(rows, key=lambda r: -r.psi)


def score_columns(scores: pd.DataFrame, cfg: ReportConfig) -> list[str]:
    """Numeric score columns (named with one of the configured prefixes)."""
    return [
        c
        for c in scores.columns
        if c not in SNAPSHOT_KEYS
        and c.startswith(cfg.score_prefixes)
        and pd.api.types.is_numeric_dtype(scores[c])
        and not pd.api.types.is_bool_dtype(scores[c])
    ]


def score_drift(
    scores: pd.DataFrame, ref_cutoff: dt.date, cur_cutoff: dt.date, cfg: ReportConfig
) -> list[DriftRow]:
    """PSI of every score between two scored cutoffs of the scores table (column ``score_date``)."""
    ref = scores[scores["score_date"] == ref_cutoff]
    cur = scores[scores["score_date"] == cur_cutoff]
    return [
        _drift(c, "score", ref_cutoff, cur_cutoff, psi(ref[c], cur[c], cfg.psi_bins))
        for c in score_columns(scores, cfg)
    ]


def _probability_calibration(
    p: np.ndarray, y: np.ndarray, bins: int
) -> tuple[float, float, list[CalibrationBin]]:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        mp, my = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / len(p) * abs(mp - my)
        out.append(CalibrationBin(b / bins, (b + 1) / bins, int(m.sum()), mp, my))
    return float(np.mean((p - y) ** 2)), float(ece), out


def _value_calibration(pred: np.ndarray, y: np.ndarray, ids: np.ndarray, bins: int) -> list[CalibrationBin]:
    order = np.lexsort((ids, pred))
    group = np.empty(len(pred), dtype=int)
    group[order] = (np.arange(len(pred)) * bins) // len(pred)
    out = []
    for b in range(bins):
        m = group == b
        if m.any():
            out.append(
                CalibrationBin(
                    float(pred[m].min()),
                    float(pred[m].max()),
                    int(m.sum()),
                    float(pred[m].mean()),
                    float(y[m].mean()),
                )
            )
    return out


def calibration(
    scores: pd.DataFrame, tables: Mapping[str, pd.DataFrame], cutoff: dt.date, cfg: ReportConfig
) -> tuple[list[Calibration], list[str]]:
    """Calibration of each known score on its latest scored cutoff whose label window ended by ``cutoff``.

    ``tables`` must already be cut at ``cutoff`` so that no label can see past it.
    """
    results, notes = [], []
    scored = sorted(set(scores["score_date"]), reverse=True)
    for score, (label, horizon) in SCORE_LABELS.items():
        if score not in scores.columns:
            continue
        h = horizon or cfg.churn_horizon_days
        result = None
        for s in (d for d in scored if d + dt.timedelta(days=h) <= cutoff):
            rows = scores[scores["score_date"] == s].dropna(subset=[score])
            try:
                lab = compute_labels(
                    dict(tables), s, pd.Index(rows["customer_id"]), cfg.churn_horizon_days, labels=(label,)
                )
            except LabelWindowError:
                continue
            y = lab[label].to_numpy(float)
            keep = ~np.isnan(y)
            if not keep.any():
                continue
            result = _calibrate(
                score,
                label,
                s,
                h,
                rows[score].to_numpy(float)[keep],
                y[keep],
                rows["customer_id"].to_numpy()[keep],
                cfg.calibration_bins,
            )
            break
        if result is None:
            notes.append(f"calibration of {score}: no scored cutoff whose {h}-day labels matured by {cutoff}")
        else:
            results.append(result)
    return results, notes


def _calibrate(
    score: str, label: str, s: dt.date, h: int, p: np.ndarray, y: np.ndarray, ids: np.ndarray, bins: int
) -> Calibration:
    if label == "label_future_net_spend_365d":
        return Calibration(
            score,
            label,
            s,
            h,
            "value",
            len(p),
            float(p.mean()),
            float(y.mean()),
            None,
            None,
            _value_calibration(p, y, ids, bins),
        )
    brier, ece, cal_bins = _probability_calibration(p, y, bins)
    return Calibration(
        score, label, s, h, "probability", len(p), float(p.mean()), float(y.mean()), brier, ece, cal_bins
    )


def stage_scores(scores_now: pd.DataFrame, snapshot: pd.DataFrame, cfg: ReportConfig) -> list[StageScores]:
    """Mean of each score per lifecycle stage at the cutoff."""
    cols = score_columns(scores_now, cfg)
    df = snapshot[["customer_id", "lifecycle_stage"]].merge(
        scores_now[["customer_id", *cols]], on="customer_id"
    )
    out = []
    for stage in STAGES:
        g = df[df["lifecycle_stage"] == stage]
        if len(g):
            out.append(StageScores(stage, int(len(g)), {c: float(g[c].mean()) for c in cols}))
    return out


# ----------------------------------------------------------------------------- data checks


def _trimmed_mean(values: np.ndarray, trim: float) -> float:
    return float(stats.trim_mean(values, trim)) if values.size else float("nan")


def low_count_p_value(observed: int, expected: float, dispersion: float) -> float:
    """P(X ≤ observed) for X with mean ``expected`` and variance ``dispersion`` × mean.

    Negative binomial when the baseline is over-dispersed (campaigns and promotions make daily counts
    vary more than Poisson), Poisson otherwise.
    """
    if expected <= 0:
        return 1.0
    if dispersion <= 1.0:
        return float(stats.poisson.cdf(observed, expected))
    return float(stats.nbinom.cdf(observed, expected / (dispersion - 1.0), 1.0 / dispersion))


def daily_row_counts(
    df: pd.DataFrame, group_col: str | None, groups: list[str], cutoff: dt.date, table: str, cfg: ReportConfig
) -> list[RowCountCheck]:
    """Rows per business day per group over the baseline + recent windows before ``cutoff``.

    ``expected`` = trimmed mean of the baseline's daily counts × ``recent_days`` (trimmed so that a
    promotion peak or a quiet holiday in the baseline does not move it); ``dispersion`` = variance / mean
    of the baseline's daily counts (at least 1); ``p_value`` = :func:`low_count_p_value`, how surprising
    so few rows in the recent window would be.
    """
    c_day = int(business_day_number(pd.Series([cutoff_ts(cutoff)])).iloc[0])
    n_days = cfg.baseline_days + cfg.recent_days
    first = c_day - n_days
    day_no = business_day_number(df["ts"]) if len(df) else pd.Series(dtype="int64")
    in_win = (day_no >= first) & (day_no < c_day)
    days = [dt.date(1970, 1, 1) + dt.timedelta(days=int(d)) for d in range(first, c_day)]
    out = []
    for grp in groups:
        m = in_win if group_col is None else in_win & (df[group_col] == grp)
        counts = np.bincount((day_no[m] - first).to_numpy(int), minlength=n_days)
        base = counts[: cfg.baseline_days].astype(float)
        mean = _trimmed_mean(base, cfg.baseline_trim)
        disp = max(float(base.var(ddof=1) / base.mean()), 1.0) if base.mean() > 0 else 1.0
        expected = mean * cfg.recent_days
        observed = int(counts[cfg.baseline_days :].sum())
        out.append(
            RowCountCheck(
                table,
                grp,
                days,
                counts.tolist(),
                mean,
                disp,
                expected,
                observed,
                observed / expected if expected > 0 else None,
                low_count_p_value(observed, expected, disp),
            )
        )
    return out


def row_count_checks(
    tables: Mapping[str, pd.DataFrame],
    cutoff: dt.date,
    cfg: ReportConfig,
    monitored: list[tuple[str, str | None]],
) -> list[RowCountCheck]:
    """Daily row counts for each monitored ``(table, group column)`` (None = the whole table)."""
    out = []
    for table, col in monitored:
        if table not in tables:
            continue
        df = tables[table]
        if col is None:
            groups: list[str] = ["all"]
        elif table == "orders" and col == "channel":
            groups = list(ORDER_CHANNELS)
        else:
            groups = sorted(df[col].dropna().astype(str).unique())
        out += daily_row_counts(df, col, groups, cutoff, table, cfg)
    return out


def _null_z(p0: float, p1: float, n1: int) -> float | None:
    # One-sample z of the recent rate against the baseline rate (floored so a zero baseline still scores).
    p = min(max(p0, 0.5 / max(n1, 1)), 1 - 1e-9)
    return (p1 - p0) / math.sqrt(p * (1 - p) / n1) if n1 > 0 else None


def raw_null_rates(
    tables: Mapping[str, pd.DataFrame], cutoff: dt.date, cfg: ReportConfig, monitored: list[str]
) -> list[NullRateCheck]:
    """Null rate of every column of the monitored tables: the recent window's rows vs the baseline.

    The baseline rate is the trimmed mean of the baseline's *daily* null rates (days with rows), so a
    few promotion days (when, say, most orders carry a coupon) do not set the norm.
    """
    c = cutoff_ts(cutoff)
    recent_lo = c - pd.Timedelta(days=cfg.recent_days)
    base_lo = recent_lo - pd.Timedelta(days=cfg.baseline_days)
    out = []
    for table in monitored:
        if table not in tables:
            continue
        df = tables[table]
        ts_col = "first_seen_ts" if table == "customers" else "ts"
        recent = df[(df[ts_col] >= recent_lo) & (df[ts_col] < c)]
        base = df[(df[ts_col] >= base_lo) & (df[ts_col] < recent_lo)]
        base_day = business_day_number(base[ts_col]) if len(base) else pd.Series(dtype="int64")
        for col in df.columns:
            if col == ts_col:
                continue
            daily = base[col].isna().groupby(base_day.to_numpy()).mean().to_numpy(float)
            p0 = _trimmed_mean(daily, cfg.baseline_trim)
            p1 = float(recent[col].isna().mean()) if len(recent) else float("nan")
            z = _null_z(p0, p1, len(recent)) if len(base) and len(recent) else None
            out.append(NullRateCheck(table, col, len(base), p0, len(recent), p1, z))
    return out


def snapshot_null_rates(reference: pd.DataFrame, current: pd.DataFrame) -> list[NullRateCheck]:
    """Null rate of every feature, reference snapshot vs current snapshot."""
    out = []
    for col in feature_columns(current):
        if col not in reference.columns:
            continue
        p0, p1 = float(reference[col].isna().mean()), float(current[col].isna().mean())
        out.append(
            NullRateCheck(
                "snapshot", col, len(reference), p0, len(current), p1, _null_z(p0, p1, len(current))
            )
        )
    return out


# ----------------------------------------------------------------------------- campaigns


def campaign_roi(
    readouts: pd.DataFrame, touches: pd.DataFrame, margin_rate: float
) -> tuple[list[CampaignROI], list[str]]:
    """ROI per campaign arm from a readout summary (``siyu experiment readout``) and the touch log.

    ROI = incremental margin / cost with incremental revenue = revenue lift per customer × customers
    in the arm (the CUPED lift when the readout has it) — the definition of ``experiments.readout``.
    """
    out, notes = [], []
    for (cid, arm), g in readouts.groupby(["campaign", "arm"], sort=True):
        metrics = dict(zip(g["metric"], g.index, strict=True))
        rev_key = "revenue (CUPED)" if "revenue (CUPED)" in metrics else "revenue"
        conv_key = "conversion (CUPED)" if "conversion (CUPED)" in metrics else "conversion"
        if rev_key not in metrics:
            notes.append(f"campaign {cid} arm {arm}: no revenue lift in the readout")
            continue
        t = touches[(touches["campaign_id"] == cid) & (touches["arm"] == arm)]
        if t.empty:
            notes.append(f"campaign {cid} arm {arm}: no touches before the cutoff")
            continue
        n, cost = int(t["customer_id"].nunique()), float(t["cost"].sum())
        rev = g.loc[metrics[rev_key]]
        lift = float(rev["abs_lift"])
        conv = float(g.loc[metrics[conv_key], "abs_lift"]) if conv_key in metrics else None
        inc = lift * n
        margin = margin_rate * inc
        p_holm = float(rev["p_holm"]) if "p_holm" in rev and pd.notna(rev["p_holm"]) else None
        out.append(
            CampaignROI(
                str(cid),
                str(arm),
                n,
                cost,
                conv,
                lift,
                p_holm,
                inc,
                margin,
                margin / cost if cost > 0 else None,
            )
        )
    return out, notes


# ----------------------------------------------------------------------------- everything


SnapshotSource = Callable[[dt.date], pd.DataFrame]


def compute_figures(
    tables: Mapping[str, pd.DataFrame],
    cutoff: dt.date,
    reference_cutoff: dt.date,
    snapshot_at: SnapshotSource,
    cfg: ReportConfig,
    row_count_tables: list[tuple[str, str | None]],
    null_rate_tables: list[str],
    scores: pd.DataFrame | None = None,
    readouts: pd.DataFrame | None = None,
    margin_rate: float | None = None,
) -> ReportFigures:
    """All report figures at ``cutoff`` from ``tables`` (cut here at the cutoff) and the snapshots."""
    if reference_cutoff >= cutoff:
        raise ValueError(f"reference cutoff {reference_cutoff} must be before the cutoff {cutoff}")
    tabs = cut_tables(tables, cutoff)
    notes: list[str] = []
    current = snapshot_at(cutoff)
    previous_c = months_before(cutoff, 1)
    previous = snapshot_at(previous_c)
    reference = snapshot_at(reference_cutoff)
    k = kpis(tabs, cutoff, cfg)
    score_rows, cal, st_scores = [], [], []
    if scores is None:
        notes.append(
            "model scores: no scores file given (pass --scores with the batch output); "
            "score drift, calibration and scores by stage are skipped"
        )
    else:
        scores = scores[scores["score_date"] <= cutoff]
        now = scores[scores["score_date"] == cutoff]
        if now.empty:
            notes.append(
                f"model scores: no scores at the cutoff {cutoff}; score drift and scores by stage skipped"
            )
        else:
            st_scores = stage_scores(now, current, cfg)
            earlier = sorted(d for d in set(scores["score_date"]) if d < cutoff)
            ref_s = reference_cutoff if reference_cutoff in earlier else (earlier[-1] if earlier else None)
            if ref_s is None:
                notes.append("score drift: the scores file has no cutoff before the current one")
            else:
                if ref_s != reference_cutoff:
                    notes.append(
                        f"score drift: no scores at the reference cutoff {reference_cutoff}; "
                        f"compared with the latest earlier scores ({ref_s})"
                    )
                score_rows = score_drift(scores, ref_s, cutoff, cfg)
        cal, cal_notes = calibration(scores, tabs, cutoff, cfg)
        notes += cal_notes
    roi: list[CampaignROI] = []
    if readouts is None:
        notes.append(
            "campaign ROI: no experiment readouts given (pass --readouts with the folder written "
            "by `siyu experiment readout`)"
        )
    else:
        roi, roi_notes = campaign_roi(
            readouts,
            tabs.get("touches", pd.DataFrame(columns=["campaign_id", "arm", "customer_id", "cost"])),
            margin_rate or 0.0,
        )
        notes += roi_notes
    return ReportFigures(
        cutoff=cutoff,
        reference_cutoff=reference_cutoff,
        config=cfg,
        lifecycle=lifecycle_distribution(current, cutoff),
        transitions=lifecycle_transitions(previous, current, previous_c, cutoff),
        kpis=k,
        kpi_trend=kpi_trend(tabs, cutoff, cfg),
        cohort_ltv=cohort_ltv(tabs, cutoff, cfg),
        channel_shares=channel_shares(tabs, cutoff, cfg),
        channel_overlap=channel_overlap(tabs, cutoff, cfg),
        feature_drift=feature_drift(reference, current, reference_cutoff, cutoff, cfg),
        score_drift=score_rows,
        calibration=cal,
        stage_scores=st_scores,
        row_counts=row_count_checks(tabs, cutoff, cfg, row_count_tables),
        raw_null_rates=raw_null_rates(tabs, cutoff, cfg, null_rate_tables),
        snapshot_null_rates=snapshot_null_rates(reference, current),
        campaign_roi=roi,
        margin_rate=margin_rate if readouts is not None else None,
        notes=notes,
    )

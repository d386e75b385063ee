"""Data alerts of the operations report: thresholds from YAML applied to the computed figures.

Every check is a pure comparison of a figure from :mod:`serving.report.metrics` with a threshold of
:class:`AlertConfig` (``serving/report/alerts.yaml`` by default), so the same figures always raise the
same alerts and a test can state exactly which alert a fault should raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from serving.report.metrics import ReportFigures

DEFAULT_ALERTS_PATH = Path(__file__).with_name("alerts.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MonitoredTable(_Strict):
    table: str
    by: str | None = None


class RowCountThresholds(_Strict):
    monitor: list[MonitoredTable] = Field(
        default_factory=lambda: [MonitoredTable(table="orders", by="channel"), MonitoredTable(table="events")]
    )
    min_expected: float = Field(10.0, ge=0)
    max_ratio: float = Field(0.25, gt=0, le=1)
    max_p_value: float = Field(1e-4, gt=0, lt=1)


class NullRateThresholds(_Strict):
    tables: list[str] = Field(default_factory=lambda: ["orders", "events", "customers"])
    max_increase: float = Field(0.10, gt=0, le=1)
    min_z: float = Field(5.0, ge=0)
    min_rows: int = Field(30, ge=1)


class MetricDropThresholds(_Strict):
    min_z: float = Field(3.0, ge=0)
    max_drop: dict[str, float] = Field(
        default_factory=lambda: {
            "active_rate": 0.25,
            "repurchase_rate_30d": 0.35,
            "aov": 0.25,
            "net_revenue_period": 0.35,
        }
    )


class PSIThresholds(_Strict):
    max_psi: float = Field(0.2, gt=0)
    min_rows: int = Field(200, ge=1)
    ignore: dict[str, str] = Field(
        default_factory=lambda: {
            "cutoff_month": "calendar feature, constant within a snapshot",
            "days_to_next_sale": "calendar feature, constant within a snapshot",
            "days_since_last_touch": "jumps with every campaign's send date",
            "touches_90d": "follows the campaign calendar (our own outreach, not the customers)",
        },
        description="feature → why it is not alerted",
    )


class AlertConfig(_Strict):
    """Every alert threshold of the report."""

    row_counts: RowCountThresholds = Field(default_factory=RowCountThresholds)
    null_rates: NullRateThresholds = Field(default_factory=NullRateThresholds)
    metric_drops: MetricDropThresholds = Field(default_factory=MetricDropThresholds)
    psi: PSIThresholds = Field(default_factory=PSIThresholds)


def load_alert_config(path: str | Path | None = None) -> AlertConfig:
    """Thresholds from a YAML file (the packaged ``alerts.yaml`` by default); unknown keys are errors."""
    p = Path(path) if path is not None else DEFAULT_ALERTS_PATH
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    return AlertConfig.model_validate(data)


@dataclass(frozen=True)
class Alert:
    """One alert: what broke, the figure and the threshold it crossed."""

    kind: str  # row_count | null_rate | metric_drop | psi
    subject: str
    value: float
    threshold: float
    message: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"


def row_count_alerts(fig: ReportFigures, th: RowCountThresholds) -> list[Alert]:
    out = []
    for r in fig.row_counts:
        if r.expected < th.min_expected or r.ratio is None:
            continue
        if r.ratio <= th.max_ratio and r.p_value <= th.max_p_value:
            subject = r.table if r.group == "all" else f"{r.table}.{r.group}"
            out.append(
                Alert(
                    "row_count",
                    subject,
                    r.ratio,
                    th.max_ratio,
                    f"{subject}: {r.observed} rows in the last {fig.config.recent_days} days, "
                    f"{r.expected:.1f} expected ({r.ratio:.0%}; p = {r.p_value:.2g})",
                )
            )
    return out


def null_rate_alerts(fig: ReportFigures, th: NullRateThresholds) -> list[Alert]:
    out = []
    for r in [*fig.raw_null_rates, *fig.snapshot_null_rates]:
        if r.z is None or r.recent_rows < th.min_rows or r.baseline_rows < th.min_rows:
            continue
        rise = r.recent_rate - r.baseline_rate
        if rise >= th.max_increase and r.z >= th.min_z:
            subject = f"{r.source}.{r.column}"
            out.append(
                Alert(
                    "null_rate",
                    subject,
                    rise,
                    th.max_increase,
                    f"{subject}: null rate {r.baseline_rate:.1%} → {r.recent_rate:.1%} "
                    f"(+{rise:.1%}, z = {r.z:.1f})",
                )
            )
    return out


def metric_drop_alerts(fig: ReportFigures, th: MetricDropThresholds) -> list[Alert]:
    if len(fig.kpi_trend) < 2:
        return []
    prev, cur = fig.kpi_trend[-2].metric_values(), fig.kpi_trend[-1].metric_values()
    out = []
    for name, max_drop in th.max_drop.items():
        if name not in cur or name not in prev:
            continue
        a, b = prev[name], cur[name]
        if not (a.value > 0 and b.se == b.se and a.se == a.se):  # NaN guards: nothing to judge
            continue
        drop = 1 - b.value / a.value
        se = (a.se**2 + b.se**2) ** 0.5
        z = (a.value - b.value) / se if se > 0 else 0.0
        if drop >= max_drop and z >= th.min_z:
            out.append(
                Alert(
                    "metric_drop",
                    name,
                    drop,
                    max_drop,
                    f"{name}: {a.value:.4g} → {b.value:.4g} month over month (−{drop:.0%}, z = {z:.1f})",
                )
            )
    return out


def psi_alerts(fig: ReportFigures, th: PSIThresholds) -> list[Alert]:
    out = []
    for r in [*fig.feature_drift, *fig.score_drift]:
        if r.name in th.ignore or min(r.n_reference, r.n_current) < th.min_rows:
            continue
        if r.psi > th.max_psi:
            out.append(
                Alert(
                    "psi",
                    f"{r.kind}.{r.name}",
                    r.psi,
                    th.max_psi,
                    f"{r.kind} {r.name}: PSI {r.psi:.3f} between {r.reference_cutoff} and {r.current_cutoff}",
                )
            )
    return out


def evaluate_alerts(fig: ReportFigures, cfg: AlertConfig) -> list[Alert]:
    """Every alert the figures raise under ``cfg`` (row counts, null rates, metric drops, PSI)."""
    return [
        *row_count_alerts(fig, cfg.row_counts),
        *null_rate_alerts(fig, cfg.null_rates),
        *metric_drop_alerts(fig, cfg.metric_drops),
        *psi_alerts(fig, cfg.psi),
    ]

"""Render the report: one self-contained HTML file (plots embedded as base64 PNG) and ``figures.json``.

Every number shown comes from :class:`serving.report.metrics.ReportFigures` through the few formatters
below, so a test can check each table cell against the figures (and the figures against the data).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import io
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from serving.report.alerts import Alert, AlertConfig
from serving.report.metrics import STAGES, ReportFigures

# ----------------------------------------------------------------------------- formatting


def fmt_int(x: Any) -> str:
    return "–" if x is None else f"{int(x):,}"


def fmt_pct(x: Any) -> str:
    return "–" if _missing(x) else f"{x:.1%}"


def fmt_num(x: Any) -> str:
    return "–" if _missing(x) else f"{x:,.2f}"


def fmt_psi(x: Any) -> str:
    return "–" if _missing(x) else f"{x:.3f}"


def fmt_p(x: Any) -> str:
    return "–" if _missing(x) else f"{x:.2g}"


FORMATTERS: tuple[Callable[[Any], str], ...] = (fmt_int, fmt_pct, fmt_num, fmt_psi, fmt_p)


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# ----------------------------------------------------------------------------- JSON


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if hasattr(x, "model_dump"):
        return _jsonable(x.model_dump(mode="json"))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, dt.date):
        return x.isoformat()
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def figures_json(fig: ReportFigures, alerts: list[Alert]) -> dict[str, Any]:
    """The figures and alerts as JSON-ready data (NaN → null, dates → ISO strings)."""
    data = _jsonable(fig)
    data["alerts"] = [{**_jsonable(a), "key": a.key} for a in alerts]
    return data


def write_figures_json(path: Any, fig: ReportFigures, alerts: list[Alert]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(figures_json(fig, alerts), fh, ensure_ascii=False, indent=1, allow_nan=False)


# ----------------------------------------------------------------------------- plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards)."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _heatmap(ax: Any, values: np.ndarray, rows: Sequence[str], cols: Sequence[str], fmt: str) -> None:
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    top = np.nanmax(values) if np.isfinite(values).any() else 1.0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                color = "white" if values[i, j] > 0.6 * top else "black"
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=7, color=color)
    ax.figure.colorbar(im, ax=ax, shrink=0.8)


def plot_lifecycle(fig: ReportFigures) -> bytes:
    plt = _plt()
    f, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    counts = [fig.lifecycle.counts[s] for s in STAGES]
    a1.bar(STAGES, counts, color="tab:blue")
    a1.set_title(f"Lifecycle stages at {fig.cutoff}")
    a1.set_ylabel("customers")
    rows = list(fig.transitions.row_shares)
    m = np.array([[fig.transitions.row_shares[r][s] for s in STAGES] for r in rows], dtype=float)
    _heatmap(a2, m, rows, list(STAGES), ".2f")
    a2.set_title(f"Transitions {fig.transitions.from_cutoff} → {fig.transitions.to_cutoff} (row shares)")
    f.tight_layout()
    return png_bytes(f)


def plot_kpi_trend(fig: ReportFigures) -> bytes:
    plt = _plt()
    f, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    x = [k.cutoff.isoformat() for k in fig.kpi_trend]
    series = [
        ("active rate", [k.active_rate for k in fig.kpi_trend]),
        (
            "repurchase rate (30 d)",
            [next((r.rate for r in k.repurchase if r.days == 30), np.nan) for k in fig.kpi_trend],
        ),
        ("AOV", [k.aov for k in fig.kpi_trend]),
    ]
    for ax, (name, ys) in zip(axes, series, strict=True):
        ax.plot(x, ys, marker="o")
        ax.set_title(name)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    f.tight_layout()
    return png_bytes(f)


def plot_ltv(fig: ReportFigures) -> bytes:
    plt = _plt()
    cohorts = sorted({r.cohort for r in fig.cohort_ltv})
    channels = sorted({r.channel for r in fig.cohort_ltv})
    m = np.full((len(cohorts), len(channels)), np.nan)
    for r in fig.cohort_ltv:
        m[cohorts.index(r.cohort), channels.index(r.channel)] = r.ltv_to_date
    f, ax = plt.subplots(figsize=(9, 0.4 * max(len(cohorts), 4) + 1.5))
    _heatmap(ax, m, cohorts, channels, ".0f")
    ax.set_title("LTV to date (net spend per customer) by acquisition cohort × channel")
    f.tight_layout()
    return png_bytes(f)


def plot_channels(fig: ReportFigures) -> bytes:
    plt = _plt()
    f, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    ch = [c.channel for c in fig.channel_shares]
    a1.barh(ch, [c.revenue_share for c in fig.channel_shares], color="tab:green")
    a1.invert_yaxis()
    a1.set_xlabel("share of net revenue")
    a1.set_title(f"Channel contribution (last {fig.config.period_days} days)")
    ov = fig.channel_overlap
    m = np.array([[ov.buyers[a][b] for b in ov.channels] for a in ov.channels], dtype=float)
    _heatmap(a2, m, ov.channels, ov.channels, ".0f")
    a2.set_title("Buyers in both channels")
    f.tight_layout()
    return png_bytes(f)


def plot_psi(fig: ReportFigures, cfg: AlertConfig) -> bytes:
    plt = _plt()
    rows = sorted([*fig.feature_drift, *fig.score_drift], key=lambda r: -r.psi)[:30]
    f, ax = plt.subplots(figsize=(9, 0.25 * max(len(rows), 4) + 1.2))
    colors = [
        "grey" if r.name in cfg.psi.ignore else ("tab:red" if r.psi > cfg.psi.max_psi else "tab:blue")
        for r in rows
    ]
    ax.barh([f"{r.kind}: {r.name}" for r in rows], [min(r.psi, 1.0) for r in rows], color=colors)
    ax.axvline(cfg.psi.max_psi, color="tab:red", ls="--", lw=1)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel(f"PSI {fig.reference_cutoff} → {fig.cutoff} (capped at 1; grey = not alerted)")
    f.tight_layout()
    return png_bytes(f)


def plot_calibration(fig: ReportFigures) -> bytes:
    plt = _plt()
    n = len(fig.calibration)
    f, axes = plt.subplots(1, n, figsize=(4 * n, 3.6), squeeze=False)
    for ax, c in zip(axes[0], fig.calibration, strict=True):
        xs = [b.mean_predicted for b in c.bins]
        ys = [b.mean_realised for b in c.bins]
        ax.plot(xs, ys, marker="o")
        top = max(xs + ys) if xs else 1.0
        ax.plot([0, top], [0, top], color="grey", ls="--", lw=1)
        ax.set_xlabel("mean predicted")
        ax.set_ylabel("mean realised")
        ax.set_title(f"{c.score} @ {c.scored_cutoff}", fontsize=9)
    f.tight_layout()
    return png_bytes(f)


def plot_row_counts(fig: ReportFigures) -> bytes:
    plt = _plt()
    f, ax = plt.subplots(figsize=(11, 3.8))
    for r in fig.row_counts:
        if r.table == "orders":
            ax.plot(r.days, r.counts, label=r.group, lw=1)
    recent = fig.row_counts[0].days[-fig.config.recent_days] if fig.row_counts else fig.cutoff
    ax.axvspan(recent, fig.cutoff, color="orange", alpha=0.2, label="judged window")
    ax.set_ylabel("orders per business day")
    ax.set_title("Order rows per channel per day (baseline, then the judged window)")
    ax.legend(fontsize=7, ncol=4)
    f.autofmt_xdate()
    f.tight_layout()
    return png_bytes(f)


def plot_roi(fig: ReportFigures) -> bytes:
    plt = _plt()
    rows = [r for r in fig.campaign_roi if r.roi is not None]
    f, ax = plt.subplots(figsize=(9, 0.3 * max(len(rows), 4) + 1.2))
    ax.barh(
        [f"{r.campaign} ({r.arm})" for r in rows],
        [r.roi for r in rows],
        color=["tab:green" if r.roi > 0 else "tab:red" for r in rows],
    )
    ax.axvline(0, color="grey", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel(f"ROI = incremental margin / cost (margin rate {fig.margin_rate:.0%})")
    f.tight_layout()
    return png_bytes(f)


def plots(fig: ReportFigures, cfg: AlertConfig) -> dict[str, bytes]:
    """Every plot of the report as PNG bytes, by name (sections without data have no plot)."""
    out = {
        "lifecycle": plot_lifecycle(fig),
        "kpi_trend": plot_kpi_trend(fig),
        "ltv": plot_ltv(fig),
        "channels": plot_channels(fig),
        "psi": plot_psi(fig, cfg),
        "row_counts": plot_row_counts(fig),
    }
    if fig.calibration:
        out["calibration"] = plot_calibration(fig)
    if any(r.roi is not None for r in fig.campaign_roi):
        out["roi"] = plot_roi(fig)
    return out


# ----------------------------------------------------------------------------- HTML


_FOLD_ROWS = 12


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    table = f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    # Long tables fold away so the plots stay on the first screens; the numbers remain in the page.
    if len(rows) > _FOLD_ROWS:
        return f"<details><summary>table ({len(rows)} rows)</summary>{table}</details>"
    return table


def _img(name: str, png: bytes | None) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode()
    return f'<img class="plot" id="plot-{name}" alt="{name} plot" src="data:image/png;base64,{data}"/>'


def _alerts_html(alerts: list[Alert]) -> str:
    if not alerts:
        return '<div class="ok">No alerts.</div>'
    items = "".join(f"<li><b>{html.escape(a.kind)}</b> · {html.escape(a.message)}</li>" for a in alerts)
    return f'<div class="alerts"><h2>{len(alerts)} alert(s)</h2><ul>{items}</ul></div>'


def _kpi_section(fig: ReportFigures, png: dict[str, bytes]) -> str:
    k = fig.kpis
    prev = fig.kpi_trend[-2] if len(fig.kpi_trend) >= 2 else None
    pv = prev.metric_values() if prev else {}
    rows = []
    for name, m in k.metric_values().items():
        fmt = fmt_pct if "rate" in name else fmt_num
        p = pv.get(name)
        rows.append([name, fmt(m.value), fmt_int(m.n), fmt(p.value) if p else "–"])
    rows += [
        ["customers", fmt_int(k.customers), "–", fmt_int(prev.customers) if prev else "–"],
        [
            "active customers",
            fmt_int(k.active_customers),
            "–",
            fmt_int(prev.active_customers) if prev else "–",
        ],
    ]
    rep = _table(
        ["horizon (days)", "first purchases from", "to", "cohort size", "repurchased", "rate"],
        [
            [
                fmt_int(r.days),
                r.cohort_start.isoformat(),
                r.cohort_end.isoformat(),
                fmt_int(r.cohort_size),
                fmt_int(r.repeaters),
                fmt_pct(r.rate),
            ]
            for r in k.repurchase
        ],
    )
    prev_label = f"previous month ({prev.cutoff})" if prev else "previous month"
    return (
        "<h2>Headline metrics</h2>"
        f"<p>Active: a paid order in the last {fig.config.active_days} days. AOV and net revenue over "
        f"the last {fig.config.period_days} days; purchases per year over the last "
        f"{fig.config.frequency_days} days.</p>"
        + _table(["metric", f"at {fig.cutoff}", "n", prev_label], rows)
        + "<h3>Repurchase (first → second purchase)</h3>"
        + rep
        + _img("kpi_trend", png.get("kpi_trend"))
    )


def _lifecycle_section(fig: ReportFigures, png: dict[str, bytes]) -> str:
    lc = fig.lifecycle
    dist = _table(
        ["stage", "阶段", "customers", "share"],
        [[s, lc.names_zh[s], fmt_int(lc.counts[s]), fmt_pct(lc.shares[s])] for s in STAGES]
        + [["total", "合计", fmt_int(lc.total), ""]],
    )
    tr = fig.transitions
    trans = _table(
        ["from \\ to", *STAGES], [[r, *(fmt_int(tr.counts[r][s]) for s in STAGES)] for r in tr.counts]
    )
    return (
        "<h2>Lifecycle (引入 / 成长 / 成熟 / 休眠 / 流失)</h2>"
        + dist
        + f"<h3>Month-over-month transitions ({tr.from_cutoff} → {tr.to_cutoff}, customers)</h3>"
        + trans
        + _img("lifecycle", png.get("lifecycle"))
    )


def _ltv_section(fig: ReportFigures, png: dict[str, bytes]) -> str:
    rows = [
        [r.cohort, r.channel, fmt_int(r.customers), fmt_num(r.ltv_to_date), fmt_num(r.ltv_at_age)]
        for r in fig.cohort_ltv
    ]
    return (
        f"<h2>LTV by acquisition cohort × channel</h2><p>Mean net spend per customer to date, and within "
        f"{fig.config.ltv_age_days} days of acquisition where every customer of the cell is that old.</p>"
        + _img("ltv", png.get("ltv"))
        + _table(
            ["cohort", "channel", "customers", "LTV to date", f"LTV at {fig.config.ltv_age_days} days"],
            rows,
            "compact",
        )
    )


def _channel_section(fig: ReportFigures, png: dict[str, bytes]) -> str:
    shares = _table(
        ["channel", "orders", "buyers", "net revenue", "revenue share", "order share"],
        [
            [
                c.channel,
                fmt_int(c.orders),
                fmt_int(c.buyers),
                fmt_num(c.revenue),
                fmt_pct(c.revenue_share),
                fmt_pct(c.order_share),
            ]
            for c in fig.channel_shares
        ],
    )
    ov = fig.channel_overlap
    overlap = _table(
        ["buyers in both", *ov.channels],
        [[a, *(fmt_int(ov.buyers[a][b]) for b in ov.channels)] for a in ov.channels],
    )
    nch = _table(["channels used", "buyers"], [[k, fmt_int(v)] for k, v in ov.n_channels.items()])
    return (
        f"<h2>Channels (last {fig.config.period_days} days)</h2>"
        + shares
        + _img("channels", png.get("channels"))
        + "<h3>Channel overlap</h3>"
        + overlap
        + nch
    )


def _monitoring_section(fig: ReportFigures, cfg: AlertConfig, png: dict[str, bytes]) -> str:
    def status(name: str, value: float) -> str:
        if name in cfg.psi.ignore:
            return "not alerted: " + cfg.psi.ignore[name]
        return "ALERT" if value > cfg.psi.max_psi else "ok"

    drift = _table(
        ["kind", "name", "PSI", "n reference", "n current", "status"],
        [
            [
                r.kind,
                r.name,
                fmt_psi(r.psi),
                fmt_int(r.n_reference),
                fmt_int(r.n_current),
                status(r.name, r.psi),
            ]
            for r in [*fig.score_drift, *fig.feature_drift]
        ],
        "compact",
    )
    cal_rows = [
        [
            c.score,
            c.label,
            c.scored_cutoff.isoformat(),
            fmt_int(c.horizon_days),
            fmt_int(c.n),
            fmt_num(c.mean_predicted) if c.kind == "value" else fmt_pct(c.mean_predicted),
            fmt_num(c.mean_realised) if c.kind == "value" else fmt_pct(c.mean_realised),
            fmt_psi(c.brier),
            fmt_psi(c.ece),
        ]
        for c in fig.calibration
    ]
    cal = (
        _table(
            [
                "score",
                "label",
                "scored at",
                "horizon (days)",
                "n",
                "mean predicted",
                "mean realised",
                "Brier",
                "ECE",
            ],
            cal_rows,
        )
        if cal_rows
        else "<p>No calibration (see notes).</p>"
    )
    bins = "".join(
        f"<h4>{html.escape(c.score)} by bin</h4>"
        + _table(
            ["from", "to", "n", "mean predicted", "mean realised"],
            [
                [
                    fmt_num(b.lo),
                    fmt_num(b.hi),
                    fmt_int(b.n),
                    fmt_psi(b.mean_predicted) if c.kind == "probability" else fmt_num(b.mean_predicted),
                    fmt_psi(b.mean_realised) if c.kind == "probability" else fmt_num(b.mean_realised),
                ]
                for b in c.bins
            ],
            "compact",
        )
        for c in fig.calibration
    )
    stage = ""
    if fig.stage_scores:
        cols = list(fig.stage_scores[0].means)
        stage = "<h3>Scores by lifecycle stage (means)</h3>" + _table(
            ["stage", "customers", *cols],
            [
                [
                    s.stage,
                    fmt_int(s.customers),
                    *(fmt_psi(s.means[c]) if c.startswith("p_") else fmt_num(s.means[c]) for c in cols),
                ]
                for s in fig.stage_scores
            ],
        )
    return (
        f"<h2>Model monitoring</h2><p>PSI between the reference (training) snapshot at "
        f"{fig.reference_cutoff} and the scoring snapshot at {fig.cutoff}; alert above {cfg.psi.max_psi}.</p>"
        + _img("psi", png.get("psi"))
        + drift
        + "<h3>Calibration of the latest matured cohort</h3>"
        + cal
        + _img("calibration", png.get("calibration"))
        + bins
        + stage
    )


def _data_section(fig: ReportFigures, png: dict[str, bytes]) -> str:
    rc = _table(
        ["table", "group", "baseline rows/day", "dispersion", "expected", "observed", "ratio", "p"],
        [
            [
                r.table,
                r.group,
                fmt_num(r.baseline_mean),
                fmt_num(r.dispersion),
                fmt_num(r.expected),
                fmt_int(r.observed),
                fmt_pct(r.ratio),
                fmt_p(r.p_value),
            ]
            for r in fig.row_counts
        ],
    )
    nulls = [
        r
        for r in [*fig.raw_null_rates, *fig.snapshot_null_rates]
        if (r.baseline_rate or 0) > 0 or (r.recent_rate or 0) > 0
    ]
    nr = _table(
        ["source", "column", "baseline rows", "baseline null rate", "recent rows", "recent null rate"],
        [
            [
                r.source,
                r.column,
                fmt_int(r.baseline_rows),
                fmt_pct(r.baseline_rate),
                fmt_int(r.recent_rows),
                fmt_pct(r.recent_rate),
            ]
            for r in nulls
        ],
        "compact",
    )
    c = fig.config
    return (
        f"<h2>Data checks</h2><p>Rows per business day: the last {c.recent_days} days against the "
        f"{c.baseline_days} days before (trimmed mean). Null rates: same windows for raw tables; snapshot "
        f"features at {fig.cutoff} against {fig.reference_cutoff}. Columns without nulls are not listed.</p>"
        + _img("row_counts", png.get("row_counts"))
        + rc
        + "<h3>Null rates</h3>"
        + nr
    )


def _roi_section(fig: ReportFigures, png: dict[str, bytes]) -> str:
    if fig.margin_rate is None:
        return "<h2>Campaign ROI</h2><p>No experiment readouts (see notes).</p>"
    rows = [
        [
            r.campaign,
            r.arm,
            fmt_int(r.n_treatment),
            fmt_num(r.cost),
            fmt_pct(r.conversion_lift),
            fmt_num(r.revenue_lift),
            fmt_p(r.revenue_lift_p_holm),
            fmt_num(r.incremental_revenue),
            fmt_num(r.incremental_margin),
            fmt_num(r.roi),
        ]
        for r in fig.campaign_roi
    ]
    return (
        f"<h2>Campaign ROI</h2><p>From the experiment readouts; margin rate {fig.margin_rate:.0%}.</p>"
        + _table(
            [
                "campaign",
                "arm",
                "customers",
                "cost",
                "conversion lift",
                "revenue lift / customer",
                "p (Holm)",
                "incremental revenue",
                "incremental margin",
                "ROI",
            ],
            rows,
        )
        + _img("roi", png.get("roi"))
    )


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC",sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f2f2f2}td{text-align:right}td:first-child{text-align:left}table.compact td{font-size:12px}
.alerts{background:#fdecea;border:2px solid #d93025;padding:8px 16px}.ok{background:#e6f4ea;padding:8px 16px}
img.plot{display:block;max-width:100%;margin:8px 0 16px;border:1px solid #eee}.notes{color:#555}
"""

#: Marks the page once every plot has decoded (read back by the headless-browser test).
_MARKER_JS = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.plot'), ok = 0;
  imgs.forEach(function (im) { if (im.complete && im.naturalWidth > 0) { ok++; } });
  document.body.setAttribute('data-plots-decoded', ok + '/' + imgs.length);
});
"""


def render_html(fig: ReportFigures, alerts: list[Alert], cfg: AlertConfig, png: dict[str, bytes]) -> str:
    """The whole report as one self-contained HTML document."""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in fig.notes)
    body = (
        f"<h1>siyu operations report · cutoff {fig.cutoff}</h1>"
        f"<p>Reference (training) snapshot: {fig.reference_cutoff}. "
        "Only records before the cutoff are used.</p>"
        + _alerts_html(alerts)
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + _kpi_section(fig, png)
        + _lifecycle_section(fig, png)
        + _ltv_section(fig, png)
        + _channel_section(fig, png)
        + _monitoring_section(fig, cfg, png)
        + _data_section(fig, png)
        + _roi_section(fig, png)
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>siyu report {fig.cutoff}</title><style>{_CSS}</style></head>"
        f"<body>{body}<script>{_MARKER_JS}</script></body></html>"
    )

"""`siyu report` end to end: read and validate the inputs, compute figures, raise alerts, render, log.

Inputs are checked at this boundary and every problem is reported at once (:class:`ReportInputError`):
the contract tables (lazy pandera validation), the batch scores (keys, probabilities in [0, 1]), the
experiment readouts and any stored feature snapshot (its cutoff must be the one asked for).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from features.as_of import cutoff_ts
from features.io import read_table, snapshot_dir, table_path
from features.schema import ContractError
from features.snapshot import compute_snapshot
from serving.report.alerts import Alert, AlertConfig, evaluate_alerts, load_alert_config
from serving.report.metrics import ReportConfig, ReportFigures, business_date, compute_figures, months_before
from serving.report.render import plots, render_html, write_figures_json

MLFLOW_EXPERIMENT = "siyu-report"
REPORT_HTML, FIGURES_JSON = "report.html", "figures.json"
READOUT_SUMMARY = "readout_summary.csv"


class ReportInputError(ValueError):
    """An input of the report is missing or malformed; the message lists every problem found."""


@dataclass
class ReportOutcome:
    """What one report run produced."""

    html_path: Path
    figures_path: Path
    plot_paths: list[Path]
    figures: ReportFigures
    alerts: list[Alert]
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- inputs


def load_tables(data_dir: Path) -> dict[str, pd.DataFrame]:
    """Contract tables of ``data_dir`` (customers and orders required), validated lazily all at once."""
    missing = [n for n in ("customers", "orders") if not table_path(data_dir, n).exists()]
    if missing:
        raise ReportInputError(f"{data_dir}: missing required table(s) {', '.join(missing)}")
    tables, reports = {}, []
    for name in ("customers", "orders", "events", "touches"):
        if not table_path(data_dir, name).exists():
            continue
        try:
            tables[name] = read_table(data_dir, name, validate=True)
        except ContractError as err:
            reports += err.reports
    if reports:
        raise ReportInputError(str(ContractError(reports)))
    return tables


class SnapshotSource:
    """Feature snapshot at a cutoff: ``DIR/snapshots/<cutoff>.parquet`` when stored, else computed.

    Reading the stored file means the report judges the very snapshot the batch scored on; computing
    goes through the same ``features.snapshot.compute_snapshot`` (cut by ``features.as_of``).
    """

    def __init__(self, data_dir: Path, tables: dict[str, pd.DataFrame]):
        self.data_dir = data_dir
        self.tables = tables
        self._cache: dict[dt.date, pd.DataFrame] = {}
        self.sources: dict[dt.date, str] = {}

    def __call__(self, cutoff: dt.date) -> pd.DataFrame:
        if cutoff not in self._cache:
            path = snapshot_dir(self.data_dir) / f"{cutoff.isoformat()}.parquet"
            if path.exists():
                snap = pd.read_parquet(path)
                _check_snapshot(snap, cutoff, path)
                self.sources[cutoff] = str(path)
            else:
                snap = compute_snapshot(self.tables, cutoff)
                self.sources[cutoff] = "computed"
            self._cache[cutoff] = snap
        return self._cache[cutoff]


def _check_snapshot(snap: pd.DataFrame, cutoff: dt.date, path: Path) -> None:
    problems = [f"lacks column {c!r}" for c in ("customer_id", "cutoff", "lifecycle_stage") if c not in snap]
    if not problems:
        wrong = snap["cutoff"] != cutoff_ts(cutoff)
        if wrong.any():
            problems.append(
                f"{int(wrong.sum())} rows have a cutoff other than {cutoff} (rows "
                f"{snap.index[wrong][:10].tolist()})"
            )
        dup = snap["customer_id"].duplicated()
        if dup.any():
            problems.append(
                f"{int(dup.sum())} duplicated customer_id rows (rows {snap.index[dup][:10].tolist()})"
            )
    if problems:
        raise ReportInputError(f"snapshot {path}: " + "; ".join(problems))


def _score_schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "customer_id": pa.Column(str, pa.Check.str_length(min_value=1)),
            "cutoff": pa.Column(nullable=False),
            "^p_": pa.Column(float, pa.Check.in_range(0.0, 1.0), regex=True, nullable=True, required=False),
            "^clv_12m": pa.Column(float, pa.Check.ge(0.0), regex=True, nullable=True, required=False),
        },
        unique=["customer_id", "cutoff"],
        name="scores",
        coerce=False,
    )


def _score_dates(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.map(business_date)
    return pd.to_datetime(s).dt.date


def load_scores(path: Path) -> pd.DataFrame:
    """Batch scores (one parquet file, or a folder of them) with a ``score_date`` column added.

    Expected columns: ``customer_id``, ``cutoff`` (the snapshot's cutoff timestamp or date) and score
    columns such as ``p_churn``, ``p_repurchase_7d``, ``clv_12m``. Every bad row is reported at once.
    """
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise ReportInputError(f"scores: no parquet file at {path}")
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    try:
        _score_schema().validate(df, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
        lines = [f"scores {path}: {len(cases)} problem(s)"]
        for (col, check), g in cases.groupby(["column", "check"], dropna=False, sort=True):
            rows = g["index"].dropna().head(10).tolist()
            lines.append(
                f"  - column {col}: {check} failed {len(g)}x; rows {rows}; "
                f"values {g['failure_case'].head(5).tolist()}"
            )
        raise ReportInputError("\n".join(lines)) from err
    return df.assign(score_date=_score_dates(df["cutoff"]))


def load_readouts(folder: Path) -> pd.DataFrame:
    """The readout summary written by ``siyu experiment readout --out FOLDER``."""
    path = folder / READOUT_SUMMARY if folder.is_dir() else folder
    if not path.exists():
        raise ReportInputError(f"readouts: {path} not found (write it with `siyu experiment readout --out`)")
    df = pd.read_csv(path)
    need = {"campaign", "arm", "metric", "abs_lift"}
    if need - set(df.columns):
        raise ReportInputError(f"readouts {path}: missing column(s) {sorted(need - set(df.columns))}")
    bad = df.index[df["abs_lift"].isna()].tolist()
    if bad:
        raise ReportInputError(f"readouts {path}: abs_lift missing in rows {bad[:20]}")
    return df


# ----------------------------------------------------------------------------- the run


def _default_margin_rate() -> float:
    from experiments.readout import ReadoutConfig

    return ReadoutConfig().margin_rate


def build_report(
    data_dir: Path,
    cutoff: dt.date,
    out: Path,
    scores: Path | None = None,
    readouts: Path | None = None,
    alerts: Path | None = None,
    reference_cutoff: dt.date | None = None,
    margin_rate: float | None = None,
    log_mlflow: bool = True,
    config: ReportConfig | None = None,
) -> ReportOutcome:
    """Compute, render and write the report for ``cutoff`` into ``out`` (and log it to MLflow)."""
    cfg = config or ReportConfig()
    alert_cfg: AlertConfig = load_alert_config(alerts)
    tables = load_tables(data_dir)
    ref = reference_cutoff or months_before(cutoff, 1)
    snapshots = SnapshotSource(data_dir, tables)
    fig = compute_figures(
        tables,
        cutoff,
        ref,
        snapshots,
        cfg,
        row_count_tables=[(m.table, m.by) for m in alert_cfg.row_counts.monitor],
        null_rate_tables=list(alert_cfg.null_rates.tables),
        scores=load_scores(scores) if scores else None,
        readouts=load_readouts(readouts) if readouts else None,
        margin_rate=(margin_rate if margin_rate is not None else _default_margin_rate())
        if readouts
        else None,
    )
    raised = evaluate_alerts(fig, alert_cfg)
    png = plots(fig, alert_cfg)
    out.mkdir(parents=True, exist_ok=True)
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    plot_paths = []
    for name, data in png.items():
        p = plot_dir / f"{name}.png"
        p.write_bytes(data)
        plot_paths.append(p)
    html_path, json_path = out / REPORT_HTML, out / FIGURES_JSON
    html_path.write_text(render_html(fig, raised, alert_cfg, png), encoding="utf-8")
    write_figures_json(json_path, fig, raised)
    outcome = ReportOutcome(html_path, json_path, plot_paths, fig, raised)
    if log_mlflow:
        outcome.run_id = log_report(outcome, snapshots.sources)
    return outcome


def log_report(outcome: ReportOutcome, snapshot_sources: dict[dt.date, str]) -> str:
    """Log the HTML, figures.json, plots, headline metrics and alert keys to MLflow."""
    from training import tracking

    fig = outcome.figures
    tags = {"stage": "report", "cutoff": fig.cutoff.isoformat(), "n_alerts": len(outcome.alerts)}
    with tracking.start_run(MLFLOW_EXPERIMENT, run_name=f"report-{fig.cutoff}", tags=tags) as run:
        run.log_params(
            {
                "cutoff": fig.cutoff.isoformat(),
                "reference_cutoff": fig.reference_cutoff.isoformat(),
                **{f"snapshot.{d}": s for d, s in snapshot_sources.items()},
            }
        )
        metrics = {f"kpi.{k}": v.value for k, v in fig.kpis.metric_values().items()}
        metrics["n_alerts"] = float(len(outcome.alerts))
        metrics.update({f"psi.{r.kind}.{r.name}": r.psi for r in [*fig.feature_drift, *fig.score_drift]})
        run.log_metrics(metrics)
        if outcome.alerts:
            run.set_tags({"alerts": ",".join(a.key for a in outcome.alerts)[:5000]})
        run.log_file(outcome.html_path)
        run.log_file(outcome.figures_path)
        for p in outcome.plot_paths:
            run.log_figure(p)
        return run.run_id

"""`siyu report`: the operations report (registered on the root app by ``serving.cli.register``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer

#: Exit code of `siyu report --fail-on-alert` when at least one alert was raised.
EXIT_ALERT = 4


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as err:
        raise typer.BadParameter(f"{name}: expected YYYY-MM-DD, got {value!r}") from err


def report_cmd(
    data: Path = typer.Option(..., "--data", help="Data directory with the contract tables."),
    cutoff: str = typer.Option(..., "--cutoff", help="Report cutoff YYYY-MM-DD (only records before it)."),
    out: Path = typer.Option(..., "--out", help="Folder for report.html, figures.json and plots/."),
    scores: Path | None = typer.Option(
        None, "--scores", help="Batch scores parquet (or a folder of them): customer_id, cutoff, p_churn, …"
    ),
    readouts: Path | None = typer.Option(
        None, "--readouts", help="Folder written by `siyu experiment readout` (readout_summary.csv)."
    ),
    alerts: Path | None = typer.Option(
        None, "--alerts", help="Alert thresholds YAML (default: the packaged serving/report/alerts.yaml)."
    ),
    reference_cutoff: str | None = typer.Option(
        None,
        "--reference-cutoff",
        help="Cutoff of the training snapshot to compare with (default: 1 month before).",
    ),
    margin_rate: float | None = typer.Option(
        None,
        "--margin-rate",
        min=0.0,
        max=1.0,
        help="Gross margin share for campaign ROI (default: readout's).",
    ),
    fail_on_alert: bool = typer.Option(
        False, "--fail-on-alert", help=f"Exit with code {EXIT_ALERT} when any alert is raised."
    ),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also log the report to MLflow."),
) -> None:
    """Operations report: lifecycle, KPIs, LTV, channels, drift and calibration, data alerts, campaign ROI.

    Writes one self-contained HTML file (plots embedded) and figures.json; alerts are listed at the top.
    """
    from serving.report.run import ReportInputError, build_report

    day = _date(cutoff, "--cutoff")
    ref = _date(reference_cutoff, "--reference-cutoff")
    if ref is not None and day is not None and ref >= day:
        raise typer.BadParameter(f"--reference-cutoff {ref} must be before --cutoff {day}")
    try:
        result = build_report(
            data,
            day,
            out,
            scores=scores,
            readouts=readouts,
            alerts=alerts,
            reference_cutoff=ref,
            margin_rate=margin_rate,
            log_mlflow=mlflow,
        )
    except (ReportInputError, FileNotFoundError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    except ValueError as err:  # pydantic validation of --alerts, among others
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    for note in result.figures.notes:
        typer.echo(f"note: {note}")
    for a in result.alerts:
        typer.secho(f"ALERT {a.kind}: {a.message}", fg=typer.colors.RED, err=True)
    typer.echo(f"report at {day}: {len(result.alerts)} alert(s) → {result.html_path}")
    if fail_on_alert and result.alerts:
        raise typer.Exit(code=EXIT_ALERT)

"""`siyu experiment ...`: holdout assignment, readouts, uplift models and the targeting simulator.

Heavy modules are imported inside each command so that `siyu --help` stays fast. MLflow logging goes
through :mod:`training.tracking` (the only module that imports mlflow); ``--no-mlflow`` writes to disk
only.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer

experiment_app = typer.Typer(
    help="Run every outreach as an experiment: assign arms, read out lift, fit uplift, simulate.",
    no_args_is_help=True,
)

#: Exit code of `siyu experiment readout` when a sample-ratio mismatch blocks a campaign's readout.
EXIT_SRM = 3
MLFLOW_EXPERIMENT = "siyu-experiments"


def parse_weights(text: str) -> dict[str, float]:
    """Parse ``"treatment=0.7,control=0.3"`` into a mapping, reporting every malformed item."""
    out: dict[str, float] = {}
    bad = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            bad.append(item)
    if bad or not out:
        raise typer.BadParameter(
            f"expected arm=weight pairs like treatment=0.7,control=0.3; bad: {bad or text!r}"
        )
    return out


def _log_run(name: str, params: dict[str, Any], metrics: dict[str, float], files: list[Path]) -> None:
    from training import tracking

    with tracking.start_run(MLFLOW_EXPERIMENT, run_name=name, tags={"stage": "experiment"}) as run:
        run.log_params(params)
        if metrics:
            run.log_metrics(metrics)
        for f in files:
            if f.suffix == ".png":
                run.log_figure(f)
            else:
                run.log_file(f)


# ----------------------------------------------------------------------------- assign


@experiment_app.command("assign")
def assign_cmd(
    experiment_id: str = typer.Option(..., "--experiment-id", "-e", help="Campaign / experiment id."),
    data: Path = typer.Option(
        None, "--data", help="Data directory: assigns every customer in customers.parquet."
    ),
    customers: Path = typer.Option(
        None, "--customers", help="Parquet or CSV with a customer_id column (and the stratum column, if any)."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the assignment (parquet)."),
    weights: str = typer.Option("treatment=0.7,control=0.3", help="Arm weights among non-holdout customers."),
    salt: str = typer.Option("", help="Hash salt (default: the experiment id)."),
    holdout_share: float = typer.Option(0.05, help="Persistent global holdout share (never contacted)."),
    stratify_by: str = typer.Option(None, help="Column to balance arms within (e.g. a tier)."),
    previous: Path = typer.Option(
        None, help="Earlier assignment of this experiment: those customers keep arms."
    ),
    log: Path = typer.Option(None, help="Assignment log (CSV, appended); default: next to --out."),
) -> None:
    """Assign customers to arms by a SHA-256 hash of salt + customer id.

    Deterministic: the same customer always lands in the same arm, also after new customers arrive.
    Customers in the global holdout get arm `holdout` and are never contacted.
    """
    import pandas as pd

    from experiments.assignment import ExperimentDesign, arm_counts, assign, log_assignment
    from features.io import atomic_write_parquet, read_table

    if (data is None) == (customers is None):
        raise typer.BadParameter("pass exactly one of --data or --customers")
    if data is not None:
        frame = read_table(data, "customers")
    elif customers.suffix == ".csv":
        frame = pd.read_csv(customers, dtype={"customer_id": str})
    else:
        frame = pd.read_parquet(customers)
    design = ExperimentDesign(
        experiment_id=experiment_id,
        salt=salt,
        weights=parse_weights(weights),
        global_holdout_share=holdout_share,
        stratify_by=stratify_by,
    )
    prev = pd.read_parquet(previous) if previous is not None else None
    result = assign(frame, design, previous=prev)
    atomic_write_parquet(result, out)
    row = log_assignment(result, design, log or out.with_name("assignments.csv"))
    counts = arm_counts(result)
    typer.echo(
        f"experiment {experiment_id}: {len(result):,} customers → "
        + ", ".join(f"{a}={n:,}" for a, n in counts.items())
    )
    typer.echo(f"wrote {out}; logged design {row['assignment_sha256'][:12]}…")


# ----------------------------------------------------------------------------- readout


@experiment_app.command("readout")
def readout_cmd(
    data: Path = typer.Option(..., "--data", help="Data directory with touches.parquet and orders.parquet."),
    out: Path = typer.Option(
        Path("readouts"), "--out", help="Folder for the HTML reports, PNG plots and CSVs."
    ),
    campaign: list[str] = typer.Option(
        None, "--campaign", "-c", help="Campaign id(s); default: every campaign."
    ),
    weights: str = typer.Option(
        None,
        help="Design arm weights, e.g. treatment=0.7,control=0.3. Default: the assignment log, else 0.7/0.3.",
    ),
    assignment_log: Path = typer.Option(
        None, help="Assignment log to read each campaign's design weights from."
    ),
    window_days: float = typer.Option(
        None, help="Outcome window; default: the campaign's own window (DIR/truth/campaigns) else 7."
    ),
    pre_period_days: float = typer.Option(
        90.0, help="CUPED covariate: net spend this many days before the touch."
    ),
    margin_rate: float = typer.Option(0.35, help="Gross margin share of net revenue, for ROI."),
    cuped: bool = typer.Option(
        True, "--cuped/--no-cuped", help="CUPED variance reduction on pre-period spend."
    ),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also log the readout to MLflow."),
) -> None:
    """Read out campaigns: conversion and net revenue lift with CIs, CUPED, Holm, ROI.

    A sample-ratio mismatch (chi-square p < 0.001 against the design weights) blocks that campaign's
    readout with a loud message; the command then exits with code 3 after reading the others.
    """
    from experiments.assignment import DEFAULT_WEIGHTS, design_weights_from_log
    from experiments.readout import (
        ReadoutConfig,
        SampleRatioMismatch,
        campaign_outcomes,
        figure_png,
        readout_campaign,
    )
    from experiments.simulate import campaign_windows
    from features.io import read_table

    touches, orders = read_table(data, "touches"), read_table(data, "orders")
    ids = list(campaign) if campaign else sorted(touches["campaign_id"].astype(str).unique())
    unknown = sorted(set(ids) - set(touches["campaign_id"].astype(str)))
    if unknown:
        raise typer.BadParameter(f"campaigns not in the touches table: {unknown}")
    windows = campaign_windows(data)
    fixed_weights = parse_weights(weights) if weights else None
    out.mkdir(parents=True, exist_ok=True)
    blocked, frames, files = [], [], []
    metrics: dict[str, float] = {}
    for cid in ids:
        cfg = ReadoutConfig(
            window_days=window_days or windows.get(cid, 7.0),
            pre_period_days=pre_period_days,
            margin_rate=margin_rate,
            cuped=cuped,
        )
        w = fixed_weights or (design_weights_from_log(assignment_log, cid) if assignment_log else None)
        w = w or dict(DEFAULT_WEIGHTS)
        try:
            readout = readout_campaign(campaign_outcomes(touches, orders, cfg, [cid]), w, cfg, cid)
        except SampleRatioMismatch as err:
            typer.secho(str(err), fg=typer.colors.RED, bold=True, err=True)
            blocked.append(cid)
            continue
        typer.echo(readout.to_text() + "\n")
        png = figure_png(readout.plot())
        (out / f"{cid}.png").write_bytes(png)
        (out / f"{cid}.html").write_text(readout.to_html(png), encoding="utf-8")
        files += [out / f"{cid}.png", out / f"{cid}.html"]
        frames.append(readout.summary_frame())
        for x in readout.lifts:
            key = f"{cid}.{x.arm}.{x.metric}{'_cuped' if x.cuped else ''}"
            metrics[f"{key}.abs_lift"] = x.abs_lift
            metrics[f"{key}.p_holm"] = x.p_holm
        for r in readout.roi:
            metrics[f"{cid}.{r.arm}.roi"] = r.roi
    if frames:
        import pandas as pd

        summary = pd.concat(frames, ignore_index=True)
        summary.to_csv(out / "readout_summary.csv", index=False)
        files.append(out / "readout_summary.csv")
        typer.echo(f"wrote {len(frames)} readouts to {out}")
    if mlflow and frames:
        _log_run(
            "readout",
            {"data": str(data), "campaigns": ",".join(ids), "blocked": ",".join(blocked)},
            metrics,
            files,
        )
    if blocked:
        typer.secho(
            f"READOUT BLOCKED for {len(blocked)} campaign(s) by sample-ratio mismatch: {', '.join(blocked)}",
            fg=typer.colors.RED,
            bold=True,
            err=True,
        )
        raise typer.Exit(code=EXIT_SRM)


# ----------------------------------------------------------------------------- uplift


@experiment_app.command("uplift")
def uplift_cmd(
    data: Path = typer.Option(..., "--data", help="Data directory (contract tables)."),
    cutoff: dt.datetime = typer.Option(
        ...,
        formats=["%Y-%m-%d"],
        help="Train on campaigns finished before this date; evaluate on later ones.",
    ),
    out: Path = typer.Option(
        Path("uplift"), "--out", help="Folder for channel_uplift.json, metrics and plots."
    ),
    seed: int = typer.Option(0, help="Random seed of the LightGBM learners."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also log to MLflow."),
) -> None:
    """Fit T-, X- and channel uplift models on past campaigns; Qini / AUUC / uplift@k on later ones.

    Writes `channel_uplift.json` — channel → measured mean uplift in conversion and revenue with CI and
    n (from randomised treatment vs control) — which the tiering policy may use in place of its priors.
    """
    from experiments.readout import figure_png
    from experiments.simulate import (
        UpliftConfig,
        campaign_training_frame,
        campaign_windows,
        fit_channel_uplift,
        load_history,
    )
    from experiments.uplift import (
        TLearner,
        XLearner,
        channel_uplift_table,
        feature_columns,
        plot_qini,
        qini_curve_frame,
        uplift_metrics,
    )

    day = cutoff.date()
    hist = load_history(data)
    train = campaign_training_frame(data, hist, finished_before=day)
    cols = feature_columns(train)
    y, w = train["converted"].to_numpy(), train["treatment"].to_numpy()
    models = {
        "t_learner": TLearner(random_state=seed, min_child_samples=200).fit(train[cols], y, w),
        "x_learner": XLearner(random_state=seed, min_child_samples=200).fit(train[cols], y, w),
        "channel_model": fit_channel_uplift(data, hist, day, UpliftConfig(), seed=seed),
    }
    out.mkdir(parents=True, exist_ok=True)
    camp_windows = campaign_windows(data)
    channel_windows = {
        str(ch): float(g["campaign_id"].map(camp_windows).fillna(7.0).median())
        for ch, g in train[train["arm"] == "treatment"].groupby("channel")
    }
    table = channel_uplift_table(train, windows=channel_windows)
    table.to_json(out / "channel_uplift.json")
    typer.echo(table.frame().round(4).to_string(index=False))
    results: dict[str, Any] = {"cutoff": day.isoformat(), "n_train": len(train), "evaluation": {}}
    files = [out / "channel_uplift.json"]
    try:
        test = campaign_training_frame(data, hist, started_on_or_after=day)
    except ValueError:
        test = None
        typer.echo(f"no campaign starts on or after {day}: models fitted, nothing to evaluate on")
    if test is not None:
        yt, wt = test["converted"].to_numpy(), test["treatment"].to_numpy()
        curves = {}
        for name, m in models.items():
            pred = _channel_predictions(m, test, cols) if name == "channel_model" else m.predict(test[cols])
            met = uplift_metrics(yt, pred, wt)
            results["evaluation"][name] = met.model_dump()
            curves[name] = qini_curve_frame(yt, pred, wt)
            typer.echo(
                f"{name:14s} qini_auc={met.qini_auc:.4f} auuc={met.uplift_auc:.4f} "
                f"uplift@10%={met.uplift_at_10:.4f}"
            )
        png = figure_png(plot_qini(curves, f"Qini on campaigns from {day}"))
        (out / "qini.png").write_bytes(png)
        files.append(out / "qini.png")
    (out / "uplift_metrics.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    files.append(out / "uplift_metrics.json")
    if mlflow:
        flat = {
            f"{k}.{m}": v
            for k, d in results["evaluation"].items()
            for m, v in d.items()
            if isinstance(v, float)
        }
        _log_run("uplift", {"data": str(data), "cutoff": day.isoformat(), "seed": seed}, flat, files)
    typer.echo(json.dumps(results))


def _channel_predictions(model: Any, frame: Any, cols: list[str]) -> Any:
    import numpy as np

    pred = np.zeros(len(frame))
    for ch in frame["channel"].unique():
        rows = (frame["channel"] == ch).to_numpy()
        if ch in model.channel_mean_:
            pred[rows] = model.predict(frame.loc[rows, cols], str(ch))
    return pred


# ----------------------------------------------------------------------------- simulate


@experiment_app.command("simulate")
def simulate_cmd(
    data: Path = typer.Option(..., "--data", help="Synthetic world directory (contract tables + truth/)."),
    budget: float = typer.Option(..., "--budget", help="Outreach budget in ¥ for one wave."),
    cutoff: dt.datetime = typer.Option(
        None, formats=["%Y-%m-%d"], help="Decision date; default: the day after the world's observed period."
    ),
    window_days: int = typer.Option(14, help="Outcome window of the simulated wave."),
    margin_rate: float = typer.Option(0.35, help="Gross margin share of incremental revenue."),
    baseline_channel: str = typer.Option(
        "ai_call", help="Channel used by the random / score-only strategies."
    ),
    feature_oracle: bool = typer.Option(
        True, "--feature-oracle/--no-feature-oracle", help="Report the ceiling."
    ),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="Optional CSV of the strategy table."),
) -> None:
    """Compare targeting strategies at a fixed budget by TRUE incremental profit on a synthetic world.

    Strategies: random, churn-risk top-k, CLV × risk, uplift-ranked (channel uplift model), the
    feature-oracle ceiling and the oracle (true uplift). The last line is one JSON object with each
    strategy's incremental profit and its share of the oracle's.
    """
    from experiments.simulate import SimulationConfig, format_table, simulate, summary_line

    cfg = SimulationConfig(
        budget=budget,
        cutoff=cutoff.date() if cutoff else None,
        window_days=window_days,
        margin_rate=margin_rate,
        baseline_channel=baseline_channel,
        feature_oracle=feature_oracle,
        seed=seed,
    )
    sim = simulate(data, cfg)
    typer.echo(f"cutoff {sim.cutoff} · budget ¥{budget:,.0f} · channels {', '.join(sim.channels)}")
    typer.echo(format_table(sim.table))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        sim.table.to_csv(out, index=False)
    typer.echo(summary_line(sim))

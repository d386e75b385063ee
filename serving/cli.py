"""`siyu score`, `siyu serve` and `siyu report`: scores become decisions."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Attach the serving commands to the root app."""
    from serving.report.cli import report_cmd

    app.command("score")(score_cmd)
    app.command("serve")(serve_cmd)
    app.command("report")(report_cmd)


def score_cmd(
    data: Path = typer.Option(
        ..., "--data", help="Data directory with the contract tables.", exists=True, file_okay=False
    ),
    cutoff: str = typer.Option(..., "--cutoff", help="Scoring cutoff YYYY-MM-DD (only records before it)."),
    out: Path = typer.Option(
        ..., "--out", help="Output parquet (written atomically; a re-run gives the same bytes)."
    ),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb (in-process, default) or spark."),
    alias: str = typer.Option("champion", "--alias", help="Registry alias of the models to score with."),
    policy: Path | None = typer.Option(
        None,
        "--policy",
        help="Outreach policy YAML (default: the packaged serving/policy.yaml).",
        exists=True,
        dir_okay=False,
    ),
    explain: str = typer.Option(
        "actioned",
        "--explain",
        help="Whose SHAP reasons to compute: actioned (customers contacted), all, or none.",
    ),
    trees: str = typer.Option(
        "auto",
        "--trees",
        help="Tree predictor: native (boosters compiled to C with tl2cgen, cached per model version; "
        "same values, faster), lightgbm, or auto (native from 50,000 customers).",
    ),
) -> None:
    """Nightly scoring: snapshot at CUTOFF → champion models → tiers and actions → one parquet.

    Every row carries churn and 7-day repurchase probabilities, P(alive), expected purchases (30/90 d),
    12-month CLV with its interval, lifecycle stage, value tier, the policy's tier, action, channel,
    expected value and reason, the top-3 SHAP reasons, the cutoff and the three model versions.
    """
    from serving.batch import BatchConfig, run_batch

    try:
        day = dt.date.fromisoformat(cutoff)
    except ValueError as err:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {cutoff!r}", param_hint="--cutoff") from err
    try:
        cfg = BatchConfig(
            data,
            day,
            out,
            engine=engine,
            alias=alias,
            policy_path=policy,  # type: ignore[arg-type]
            explain=explain,
            trees=trees,
        )  # type: ignore[arg-type]
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    try:
        run_batch(cfg, echo=typer.echo)
    except Exception as err:  # noqa: BLE001 - one readable line, exit code 1
        typer.echo(f"error: siyu score failed: {type(err).__name__}: {err}", err=True)
        raise typer.Exit(code=1) from err


def serve_cmd(
    data: Path = typer.Option(
        ...,
        "--data",
        help="Data directory whose newest snapshots/*.parquet is served.",
        exists=True,
        file_okay=False,
    ),
    port: int = typer.Option(3000, "--port", min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
    alias: str = typer.Option("champion", "--alias", help="Registry alias of the models to serve."),
    policy: Path | None = typer.Option(
        None, "--policy", help="Outreach policy YAML for /tier.", exists=True, dir_okay=False
    ),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes (one per core)."),
    trees: str = typer.Option(
        "native",
        "--trees",
        help="Tree predictor: native (boosters compiled to C at start, cached per model version; same "
        "values, faster) or lightgbm.",
    ),
    no_auth: bool = typer.Option(
        False,
        "--no-auth",
        help="Disable bearer-token authentication (local use only; logged as a loud warning).",
    ),
) -> None:
    """Start the BentoML scoring service (POST /score, POST /tier, /livez, /readyz, /metrics).

    Models are read from the registry named by MLFLOW_TRACKING_URI; clients authenticate with
    ``Authorization: Bearer $SIYU_API_TOKEN`` unless --no-auth is given.
    """
    from features.io import snapshot_dir
    from serving.auth import DISABLE_ENV, TOKEN_ENV
    from serving.service import ALIAS_ENV, DATA_ENV, POLICY_ENV, TREES_ENV

    if trees not in ("native", "lightgbm"):
        raise typer.BadParameter(f"expected native or lightgbm, got {trees!r}", param_hint="--trees")

    if not any(snapshot_dir(data).glob("????-??-??.parquet")):
        typer.echo(
            f"error: no feature snapshot in {snapshot_dir(data)}; run `siyu features build` or "
            "`siyu score` first",
            err=True,
        )
        raise typer.Exit(code=1)
    if not no_auth and not os.environ.get(TOKEN_ENV):
        typer.echo(
            f"error: set {TOKEN_ENV} (clients send it as a bearer token) or pass --no-auth for local use",
            err=True,
        )
        raise typer.Exit(code=1)
    env = {**os.environ, DATA_ENV: str(data.resolve()), ALIAS_ENV: alias, TREES_ENV: trees}
    if policy is not None:
        env[POLICY_ENV] = str(policy.resolve())
    if no_auth:
        env[DISABLE_ENV] = "1"
    if workers > 1:
        if os.environ.get("BENTOML_CONFIG"):
            typer.echo(
                "error: BENTOML_CONFIG is set; put `services: {siyu: {workers: N}}` in it instead of "
                "--workers",
                err=True,
            )
            raise typer.Exit(code=1)
        config = Path(tempfile.gettempdir()) / f"siyu-serve-{port}.yaml"
        config.write_text(f"services:\n  siyu:\n    workers: {workers}\n")
        env["BENTOML_CONFIG"] = str(config)
    args = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:SiyuService",
        "--host",
        host,
        "--port",
        str(port),
    ]
    sys.stdout.flush()
    os.execve(sys.executable, args, env)

"""`siyu data ...` and `siyu features ...`: the data and feature stages.

Heavy modules are imported inside each command so that `siyu --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

data_app = typer.Typer(
    help="Generate, ingest and validate unified customer histories (the data contract).",
    no_args_is_help=True,
)
features_app = typer.Typer(
    help="Point-in-time feature snapshots and training sets (DuckDB by default, Spark at scale).",
    no_args_is_help=True,
)


@data_app.command("validate")
def validate(
    data: Path = typer.Argument(..., help="Data directory holding the contract tables (*.parquet)."),
) -> None:
    """Validate every contract table in DATA and print a readable summary of all failures.

    Exits with code 1 when any table breaks the contract, listing every bad row at once.
    """
    from features.quality import validate_data_dir

    reports, missing = validate_data_dir(data)
    for name in missing:
        typer.echo(f"{name}: MISSING ({data / (name + '.parquet')})")
    for report in reports:
        typer.echo(report.summary())
    if missing or not all(r.ok for r in reports):
        raise typer.Exit(code=1)
    typer.echo(f"all {len(reports)} tables pass the data contract")

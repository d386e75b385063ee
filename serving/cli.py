"""`siyu score`, `siyu serve` and `siyu report`: scores become decisions."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the serving commands to the root app."""
    from serving.report.cli import report_cmd

    app.command("report")(report_cmd)

"""`siyu experiment ...`: holdout assignment, readouts, uplift models and the targeting simulator."""

from __future__ import annotations

import typer

experiment_app = typer.Typer(
    help="Run every outreach as an experiment: assign arms, read out lift, fit uplift, simulate.",
    no_args_is_help=True,
)

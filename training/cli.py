"""`siyu train ...`: fit, evaluate, track and register the churn, repurchase and CLV models."""

from __future__ import annotations

import typer

train_app = typer.Typer(
    help="Train churn / repurchase_7d (LightGBM) and BG/NBD + Gamma-Gamma CLV models, "
    "tracked and registered in MLflow.",
    no_args_is_help=True,
)

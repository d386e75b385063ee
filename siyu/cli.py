"""The `siyu` console command: one sub-command per stage, each owned by its package's cli.py."""

from __future__ import annotations

import typer

from experiments.cli import experiment_app
from features.cli import data_app, features_app
from serving.cli import register as register_serving
from training.cli import train_app

app = typer.Typer(
    name="siyu",
    help="siyu — churn, 7-day repurchase and lifetime-value models for private-domain retail, "
    "and outreach decided by expected return and run as experiments.\n\n"
    "Stages: data → features → train → experiment → score / serve → report.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(train_app, name="train")
app.add_typer(experiment_app, name="experiment")
register_serving(app)

if __name__ == "__main__":  # pragma: no cover
    app()

"""A small synthetic world with champion models trained by `siyu train`, shared by the serving tests."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from tests.training.world import fast_config, write_config, write_small_world

#: Scoring cutoff: after every training cutoff of the fast config, inside the synthetic period.
CUTOFF = dt.date(2024, 12, 1)


@dataclass(frozen=True)
class ServedWorld:
    """A data directory, the sqlite MLflow store holding its champion models, and the scoring cutoff."""

    data: Path
    store_uri: str
    cutoff: dt.date = CUTOFF


@contextmanager
def tracking_env(uri: str) -> Iterator[None]:
    """Point MLFLOW_TRACKING_URI at ``uri`` for the duration (restored afterwards)."""
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def train_world(root: Path, customers: int = 2000, seed: int = 11) -> ServedWorld:
    """Generate a world under ``root`` and train churn, repurchase_7d and CLV into ``root/mlruns.db``."""
    from siyu.cli import app

    data = write_small_world(root / "data", customers, seed=seed)
    config = write_config(fast_config(), root / "fast.yaml")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    with tracking_env(uri):
        res = CliRunner().invoke(app, ["train", "all", "--data", str(data), "--config", str(config)])
    if res.exit_code != 0:
        raise RuntimeError(f"siyu train failed: {res.output[-2000:]} {res.exception!r}")
    ensure_champions(uri)
    return ServedWorld(data, uri)


def ensure_champions(uri: str) -> None:
    """Make the newest version of each model champion where the promotion gate held it back.

    The serving tests need champions; whether a small test world's model passes the calibration gate is
    the training tests' concern (the override is tagged as a manual promotion in the registry).
    """
    from training import tracking

    for name in ("siyu-churn", "siyu-repurchase-7d", "siyu-clv"):
        versions = tracking.model_versions(name, uri=uri)
        if not versions["aliases"].str.contains("champion").any():
            tracking.promote(name, str(versions["version"].max()), uri=uri)

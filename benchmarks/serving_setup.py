"""Set-up shared by the serving benchmarks: a synthetic world and champion models in a private MLflow store.

Nothing here is timed. Models are trained by ``siyu train all`` (a child process) on a synthetic world;
``quick=True`` uses quarterly training cutoffs and fewer trees (smoke tests), otherwise the packaged
default training config.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

#: Scoring cutoff of the benchmarks (inside the synthetic period, after every training cutoff).
CUTOFF = dt.date(2024, 12, 1)


@dataclass(frozen=True)
class Trained:
    """A sqlite MLflow store holding champion siyu-churn, siyu-repurchase-7d and siyu-clv."""

    store_uri: str
    train_data: Path


def store_env(uri: str) -> dict[str, str]:
    """Environment pointing a child process at one MLflow store, as both tracking and registry.

    MLflow exports ``MLFLOW_REGISTRY_URI`` into this process's environment whenever a registry is used,
    and a child would otherwise inherit whichever store was used last.
    """
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}


def write_world(out: Path, customers: int, seed: int) -> Path:
    """Generate a synthetic world into ``out`` (skipped when ``out`` already holds one)."""
    from features.synthetic import SynthConfig, generate_world
    from features.synthetic import write_world as write

    if (out / "customers.parquet").exists() and (out / "orders.parquet").exists():
        return out
    write(generate_world(SynthConfig(customers=customers, seed=seed)), out)
    return out


def quick_config() -> dict[str, object]:
    """The default training config with quarterly cutoffs and 300 faster trees."""
    from training.config import load_config

    cfg = load_config().model_dump(mode="json")
    cfg["cutoffs"]["train"] = {"start": "2023-06-01", "end": "2024-03-01", "every_months": 3}
    cfg["repurchase_cutoffs"]["train"] = {"start": "2023-09-01", "end": "2024-06-01", "every_months": 3}
    cfg["repurchase_cutoffs"]["early_stopping"] = ["2024-07-01"]
    cfg["repurchase_cutoffs"]["calibration"] = ["2024-08-01", "2024-09-01"]
    cfg["lightgbm"]["n_estimators"] = 300
    cfg["lightgbm"]["learning_rate"] = 0.1
    return cfg


def train(root: Path, customers: int, seed: int, quick: bool) -> Trained:
    """Train the three models on a ``customers``-sized world into ``root/mlruns.db`` (reused if present)."""
    root.mkdir(parents=True, exist_ok=True)
    data = write_world(root / "train_data", customers, seed)
    uri = f"sqlite:///{(root / 'mlruns.db').resolve()}"
    done = root / "trained.ok"
    if not done.exists():
        args = [sys.executable, "-m", "siyu.cli", "train", "all", "--data", str(data)]
        if quick:
            config = root / "quick.yaml"
            config.write_text(yaml.safe_dump(quick_config(), sort_keys=False))
            args += ["--config", str(config)]
        env = {**os.environ, **store_env(uri)}
        res = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"siyu train failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        held = ensure_champions(uri)
        if held:
            print(f"set-up: the promotion gate held back {held}; promoted their newest versions", flush=True)
        done.write_text("ok\n")
    return Trained(uri, data)


def ensure_champions(uri: str) -> list[str]:
    """Promote the newest version of every model that has no champion (returns their names)."""
    from training import tracking

    held = []
    for name in ("siyu-churn", "siyu-repurchase-7d", "siyu-clv"):
        versions = tracking.model_versions(name, uri=uri)
        if not versions["aliases"].str.contains("champion").any():
            tracking.promote(name, str(versions["version"].max()), uri=uri)
            held.append(name)
    return held

"""A small synthetic world on disk and a fast training config for the training tests."""

from __future__ import annotations

from pathlib import Path

from features.synthetic.config import SynthConfig
from features.synthetic.world import generate_world, write_world
from training.config import TrainingConfig, load_config


def write_small_world(out: Path, customers: int, seed: int) -> Path:
    """Generate and write a synthetic world (contract tables + truth/) into ``out``."""
    write_world(generate_world(SynthConfig(customers=customers, seed=seed)), out)
    return out


def fast_config(**overrides: object) -> TrainingConfig:
    """The default config with quarterly training cutoffs and fewer trees (tests only).

    The default leaves (400 rows, 0.7 subsampling) are sized for tens of thousands of customers; the
    test worlds hold a few thousand, so leaves are smaller to keep the models calibrated there.
    """
    base = load_config().model_dump(mode="json")
    base["cutoffs"]["train"] = {"start": "2023-06-01", "end": "2024-03-01", "every_months": 3}
    base["repurchase_cutoffs"]["train"] = {"start": "2023-09-01", "end": "2024-06-01", "every_months": 3}
    base["repurchase_cutoffs"]["early_stopping"] = ["2024-07-01"]
    base["repurchase_cutoffs"]["calibration"] = ["2024-08-01", "2024-09-01"]
    base["lightgbm"]["n_estimators"] = 300
    base["lightgbm"]["learning_rate"] = 0.1
    base["lightgbm"].update(min_child_samples=100, feature_fraction=0.9, bagging_fraction=0.9)
    base.update(overrides)
    return TrainingConfig.model_validate(base)


def write_config(cfg: TrainingConfig, path: Path) -> Path:
    """Write ``cfg`` as a YAML file the CLI can read."""
    import yaml

    data = cfg.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from pydantic import ValidationError

from training.config import ModelKind, MonthlyCutoffs, load_config


def test_default_config_loads_and_resolves():
    cfg = load_config()
    assert cfg.model is ModelKind.churn
    train = cfg.cutoffs.train_cutoffs()
    assert train[0] == dt.date(2023, 4, 1) and len(train) == 12
    resolved = yaml.safe_load(cfg.to_yaml())
    assert resolved["cutoffs"]["train_resolved"][0] == "2023-04-01"
    assert cfg.for_model("repurchase").plan() == cfg.repurchase_cutoffs
    assert cfg.for_model("repurchase").effective_horizon_days() == 7


def test_monthly_rule_starts_on_first_of_month():
    rule = MonthlyCutoffs(start=dt.date(2024, 1, 15), end=dt.date(2024, 6, 1), every_months=2)
    assert rule.resolve() == [dt.date(2024, 2, 1), dt.date(2024, 4, 1), dt.date(2024, 6, 1)]


def test_bad_config_lists_every_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "model": "upsell", "horizon_days": 0, "typo_key": 1,
        "cutoffs": {"train": ["2024-01-01"], "early_stopping": ["2024-02-01"], "calibration": ["2024-03-01"],
                    "evaluation": "2024-08-01"},
        "clv": {"cutoff": "2024-01-01"},
    }))
    with pytest.raises(ValidationError) as err:
        load_config(path)
    text = str(err.value)
    assert "model" in text and "horizon_days" in text and "typo_key" in text


def test_label_windows_must_end_before_evaluation():
    base = load_config().model_dump(mode="json")
    base["cutoffs"]["evaluation"] = "2024-08-01"  # calibration labels (to 2024-09-29) would leak past it
    with pytest.raises(ValidationError, match="end after the evaluation cutoff"):
        load_config(None, **{k: v for k, v in base.items() if k == "cutoffs"})
    base = load_config().model_dump(mode="json")
    base["cutoffs"]["early_stopping"] = ["2023-06-01"]
    with pytest.raises(ValidationError, match="not after the last training cutoff"):
        load_config(None, cutoffs=base["cutoffs"])

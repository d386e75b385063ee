"""Typed training configuration: one pydantic model, loaded from YAML, saved with every run.

A config says which model to train, on which cutoffs (an explicit list or a monthly rule), which later
cutoffs serve for early stopping, calibration and evaluation, the LightGBM hyper-parameters, the seed,
and the promotion thresholds of the registry gate. Unknown keys are errors, so a typo in a YAML file
fails loudly instead of silently training with a default.
"""

from __future__ import annotations

import datetime as dt
import json
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_CONFIG_NAME = "default.yaml"


class ModelKind(StrEnum):
    """The three models siyu trains (``repurchase_7d`` is also reachable as ``repurchase``)."""

    churn = "churn"
    repurchase_7d = "repurchase_7d"
    clv = "clv"

    @classmethod
    def parse(cls, value: str) -> ModelKind:
        """Accept the CLI spelling ``repurchase`` as well as the canonical names."""
        return cls("repurchase_7d" if value == "repurchase" else value)


#: Label column of each classifier (the training set prefixes every label with ``label_``).
LABEL_COLUMNS: dict[ModelKind, str] = {
    ModelKind.churn: "label_churn",
    ModelKind.repurchase_7d: "label_repurchase_7d",
    ModelKind.clv: "label_future_net_spend_365d",
}

#: Registered-model name of each model in the MLflow registry.
REGISTERED_NAMES: dict[ModelKind, str] = {
    ModelKind.churn: "siyu-churn",
    ModelKind.repurchase_7d: "siyu-repurchase-7d",
    ModelKind.clv: "siyu-clv",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MonthlyCutoffs(_Strict):
    """Rule: the first day of every ``every_months``-th month from ``start`` to ``end`` (inclusive)."""

    start: dt.date
    end: dt.date
    every_months: int = Field(1, ge=1, le=12)

    @model_validator(mode="after")
    def _ordered(self) -> MonthlyCutoffs:
        if self.end < self.start:
            raise ValueError(f"monthly cutoffs: end {self.end} is before start {self.start}")
        return self

    def resolve(self) -> list[dt.date]:
        """The explicit list of cutoff dates this rule denotes."""
        first = pd.Timestamp(self.start)
        if first.day != 1:
            first = first + pd.offsets.MonthBegin(1)
        dates = pd.date_range(first, pd.Timestamp(self.end), freq=f"{self.every_months}MS")
        return [d.date() for d in dates]


class CutoffPlan(_Strict):
    """Which cutoffs train, early-stop, calibrate and evaluate a model.

    Cutoffs are dates meaning midnight in the business timezone. ``train`` is an explicit list or a
    monthly rule. Early stopping and calibration use cutoffs later than every training cutoff; the
    evaluation cutoff is the latest of all, and its label window should lie after every training window.
    """

    train: list[dt.date] | MonthlyCutoffs
    early_stopping: list[dt.date]
    calibration: list[dt.date]
    evaluation: dt.date

    @field_validator("early_stopping", "calibration", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return v if isinstance(v, list | tuple) else [v]

    def train_cutoffs(self) -> list[dt.date]:
        """Training cutoffs as a sorted explicit list."""
        dates = self.train.resolve() if isinstance(self.train, MonthlyCutoffs) else list(self.train)
        return sorted(set(dates))

    @model_validator(mode="after")
    def _time_ordered(self) -> CutoffPlan:
        problems = []
        train = self.train_cutoffs()
        if not train:
            problems.append("no training cutoffs")
        if not self.early_stopping or not self.calibration:
            problems.append("need at least one early-stopping and one calibration cutoff")
        if problems:
            raise ValueError("; ".join(problems))
        last = train[-1]
        for name in ("early_stopping", "calibration"):
            for d in getattr(self, name):
                if d <= last:
                    problems.append(f"{name} cutoff {d} is not after the last training cutoff {last}")
        if set(self.early_stopping) & set(self.calibration):
            problems.append("early-stopping and calibration cutoffs overlap")
        later = max([*self.early_stopping, *self.calibration, last])
        if self.evaluation <= later:
            problems.append(f"evaluation cutoff {self.evaluation} is not after every other cutoff ({later})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def check_horizon(self, horizon_days: int) -> None:
        """Refuse a plan whose fitted label windows reach past the evaluation cutoff.

        Labels of every cutoff used in fitting (training, early stopping, calibration) must be fully
        observed at the evaluation cutoff, so the evaluation is a true forecast.
        """
        fitted = [*self.train_cutoffs(), *self.early_stopping, *self.calibration]
        late = [d for d in fitted if d + dt.timedelta(days=horizon_days) > self.evaluation]
        if late:
            raise ValueError(
                f"label windows of {horizon_days} days from cutoffs {[d.isoformat() for d in late]} end "
                f"after the evaluation cutoff {self.evaluation}: move them earlier or the evaluation later"
            )

    def folds(self) -> dict[str, list[dt.date]]:
        """The cutoffs of each fold, in the order they come in time."""
        return {"train": self.train_cutoffs(), "early_stopping": sorted(self.early_stopping),
                "calibration": sorted(self.calibration), "evaluation": [self.evaluation]}

    def all_cutoffs(self) -> list[dt.date]:
        """Every distinct cutoff the plan needs a snapshot for, sorted."""
        return sorted({*self.train_cutoffs(), *self.early_stopping, *self.calibration, self.evaluation})


class LightGBMParams(_Strict):
    """LightGBM hyper-parameters (binary objective; probabilities are calibrated afterwards)."""

    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2)
    max_depth: int = -1
    min_child_samples: int = Field(50, ge=1)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    bagging_fraction: float = Field(0.9, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(1.0, ge=0)
    n_estimators: int = Field(1000, ge=1)
    early_stopping_rounds: int = Field(50, ge=1)
    num_threads: int = Field(1, ge=1)
    max_cat_to_onehot: int = Field(8, ge=1)
    #: Tree walker for predictions during training (calibration, evaluation): LightGBM's, the booster
    #: compiled to native code (same values, faster), or auto (native for large prediction sets).
    predictor: Literal["auto", "lightgbm", "native"] = "auto"


class PromotionThresholds(_Strict):
    """The registry gate: a new version becomes champion only if all of these hold."""

    auc_tolerance: float = Field(0.005, ge=0)
    brier_tolerance: float = Field(0.0, ge=0)
    max_ece: float = Field(0.05, gt=0)
    #: CLV: Spearman of predicted vs realised spend may drop by at most this much.
    spearman_tolerance: float = Field(0.01, ge=0)


class BTYDFeatures(_Strict):
    """BG/NBD outputs offered to the classifiers as features (one fit per cutoff on its snapshot)."""

    enabled: bool = True
    horizons_days: list[int] = Field(default_factory=lambda: [30, 90])
    clv_months: int = Field(12, ge=1)
    monthly_discount_rate: float = Field(0.01, ge=0, lt=1)
    penalizers: list[float] = Field(default_factory=lambda: [0.0, 1e-3, 1e-2, 1e-1])


class CLVSettings(_Strict):
    """The BTYD CLV model: fitted on the snapshot at ``cutoff``, checked on the spend that followed."""

    cutoff: dt.date
    horizon_days: int = Field(365, ge=1)
    months: int = Field(12, ge=1)
    monthly_discount_rate: float = Field(0.01, ge=0, lt=1)


class TrainingConfig(_Strict):
    """Everything that determines a training run; saved (resolved) as an artifact of every run."""

    model: ModelKind = ModelKind.churn
    horizon_days: int = Field(90, ge=1, description="churn label horizon H (repurchase is always 7 d)")
    active_days: int = Field(365, ge=1, description="churn population: active in the last L days")
    cutoffs: CutoffPlan
    #: Optional plan for repurchase_7d (its 7-day windows allow training closer to the evaluation cutoff).
    repurchase_cutoffs: CutoffPlan | None = None
    clv: CLVSettings
    lightgbm: LightGBMParams = Field(default_factory=LightGBMParams)
    calibration: Literal["isotonic", "sigmoid"] = "isotonic"
    #: Weight of a training cutoff = recency_half_life ** -(months before the last training cutoff / hl).
    recency_half_life_months: float | None = Field(6.0, gt=0)
    btyd: BTYDFeatures = Field(default_factory=BTYDFeatures)
    seed: int = 7
    promotion: PromotionThresholds = Field(default_factory=PromotionThresholds)
    tracking_uri: str = Field("sqlite:///mlruns.db", description="overridden by MLFLOW_TRACKING_URI")
    experiment_prefix: str = "siyu"
    top_k_reasons: int = Field(3, ge=1)
    #: The logistic baseline is fitted on at most this many training rows (a seeded sample): its few
    #: dozen coefficients settle long before, and on a million customers the whole fold costs a minute.
    baseline_max_rows: int = Field(250_000, ge=1_000)

    @field_validator("model", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return ModelKind.parse(v) if isinstance(v, str) else v

    def effective_horizon_days(self) -> int:
        """Label horizon of this config's model (7 days for repurchase_7d)."""
        return 7 if self.model is ModelKind.repurchase_7d else self.horizon_days

    def plan(self) -> CutoffPlan:
        """The cutoff plan of this config's model."""
        if self.model is ModelKind.repurchase_7d and self.repurchase_cutoffs is not None:
            return self.repurchase_cutoffs
        return self.cutoffs

    @model_validator(mode="after")
    def _horizons_fit(self) -> TrainingConfig:
        self.cutoffs.check_horizon(self.horizon_days)
        (self.repurchase_cutoffs or self.cutoffs).check_horizon(7)
        return self

    def for_model(self, model: ModelKind | str) -> TrainingConfig:
        """A copy of this config for another model kind (used by ``siyu train all``)."""
        kind = ModelKind.parse(model) if isinstance(model, str) else model
        return self.model_copy(update={"model": kind})

    def resolved(self) -> dict[str, Any]:
        """JSON-ready dict with the cutoff rule expanded into explicit dates."""
        data = json.loads(self.model_dump_json())
        data["cutoffs"]["train_resolved"] = [d.isoformat() for d in self.cutoffs.train_cutoffs()]
        if self.repurchase_cutoffs is not None:
            data["repurchase_cutoffs"]["train_resolved"] = [
                d.isoformat() for d in self.repurchase_cutoffs.train_cutoffs()]
        return data

    def to_yaml(self) -> str:
        """The resolved config as YAML text."""
        return yaml.safe_dump(self.resolved(), sort_keys=False)


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainingConfig:
    """Load a config from YAML (the packaged default when ``path`` is None) and apply overrides.

    Raises a ``pydantic.ValidationError`` listing every bad field at once.
    """
    if path is None:
        text = resources.files("training.configs").joinpath(DEFAULT_CONFIG_NAME).read_text()
    else:
        text = Path(path).read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config {path or DEFAULT_CONFIG_NAME}: expected a mapping at top level")
    data.update(overrides)
    return TrainingConfig.model_validate(data)

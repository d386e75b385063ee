"""The registered models as the scoring side needs them: loaded by alias, verified, ready for a snapshot.

Every model goes through :func:`training.tracking.load_model`, which reads the MLflow registry (the only
mlflow importer stays :mod:`training.tracking`) and refuses artifacts whose SHA-256 differs from the one
recorded when the version was registered.

API (all names importable from ``training.registry``)::

    champs = load_champions()             # alias "champion"; store = MLFLOW_TRACKING_URI or sqlite:///mlruns.db
    champs.versions()                     # {"churn": "3", "repurchase_7d": "2", "clv": "1"}
    champs.churn.stamp                    # ModelStamp(name, version, alias, checksum, run_id)

    # Classifiers (churn, repurchase_7d) score a feature snapshot at one cutoff. ``prepare`` adds the
    # btyd_* features exactly as training did: one BG/NBD fitted on the rows of each cutoff — so pass the
    # WHOLE snapshot of the cutoff (every customer), then score any subset of the prepared frame.
    X = champs.churn.prepare(snapshot)    # snapshot columns + btyd_* features
    p = champs.churn.predict_proba(X)     # calibrated P(churn), 1-D, aligned with X's rows
    champs.churn.features                 # feature names in model order
    champs.churn.booster                  # lightgbm.Booster (the early-stopped trees)
    champs.churn.calibrator               # ProbabilityCalibrator (raw booster probability → calibrated)
    champs.churn.estimator                # LGBMCalibratedClassifier (also: contributions() for SHAP)
    champs.churn.btyd                     # BTYDFeatures the model was trained with (horizons, CLV months …)

    # CLV: the BG/NBD + Gamma-Gamma bundle (parameters as JSON in the registry).
    champs.clv.predict_frame(snapshot)    # p_alive, exp_purchases_{h}d, clv, expected_spend per row
    champs.clv.bundle.bg.params_          # {"r", "alpha", "a", "b"}; bundle.gg.params_ {"p", "q", "v"}

    one = load_champion("repurchase_7d", alias="challenger")   # a single model by kind and alias

Snapshots are :func:`features.snapshot.compute_snapshot` frames (``customer_id``, ``cutoff`` and the
feature columns, consumed by name). The churn probability is meaningful for the churn population only
(customers with a purchase in the label's activity window); selecting that population is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from training import btyd_baseline as bb
from training.classifiers import LGBMCalibratedClassifier, ProbabilityCalibrator
from training.config import REGISTERED_NAMES, BTYDFeatures, ModelKind

CLASSIFIER_KINDS: tuple[ModelKind, ...] = (ModelKind.churn, ModelKind.repurchase_7d)


@dataclass(frozen=True)
class ModelStamp:
    """Which registered version a prediction comes from: name, version, alias, artifact SHA-256, run."""

    name: str
    version: str
    alias: str | None
    checksum: str
    run_id: str | None


@dataclass
class ClassifierChampion:
    """A registered churn or repurchase_7d classifier with the BTYD feature settings it was trained with."""

    kind: ModelKind
    stamp: ModelStamp
    estimator: LGBMCalibratedClassifier
    btyd: BTYDFeatures

    @property
    def features(self) -> list[str]:
        """Feature columns the model reads, in model order."""
        return [str(c) for c in self.estimator.feature_names_in_]

    @property
    def booster(self) -> lgb.Booster:
        """The LightGBM booster (only the trees kept by early stopping)."""
        return self.estimator.booster_

    @property
    def calibrator(self) -> ProbabilityCalibrator:
        """Maps the booster's raw probability to the calibrated one."""
        return self.estimator.calibrator_

    def btyd_columns(self) -> list[str]:
        """The ``btyd_*`` model features computed at scoring time (not snapshot columns)."""
        if not self.btyd.enabled:
            return []
        made = {"btyd_p_alive", "btyd_clv", *(f"btyd_exp_purchases_{h}d" for h in self.btyd.horizons_days)}
        return [c for c in self.features if c in made]

    def prepare(self, snapshot: pd.DataFrame) -> pd.DataFrame:
        """``snapshot`` plus the BTYD features, one BG/NBD + Gamma-Gamma fit per ``cutoff`` on its rows.

        Pass every customer of the cutoff: the fit is a population fit, as in training. A fit that fails
        leaves the features NaN (the booster handles missing values), as in training.
        """
        if not self.btyd_columns():
            return snapshot
        if "cutoff" not in snapshot.columns:
            raise ValueError("snapshot lacks the 'cutoff' column the BTYD features are fitted by")
        keep = [c for c in snapshot.columns if c not in self.btyd_columns()]
        out, _fits = bb.add_btyd_features(
            snapshot[keep],
            list(self.btyd.horizons_days),
            self.btyd.clv_months,
            self.btyd.monthly_discount_rate,
            list(self.btyd.penalizers),
        )
        return out

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive class per row of a prepared frame."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            hint = " (call prepare(snapshot) first)" if set(missing) & set(self.btyd_columns()) else ""
            raise ValueError(f"{self.stamp.name} v{self.stamp.version}: frame lacks features {missing}{hint}")
        return self.estimator.predict_proba(frame[self.features])[:, 1]


@dataclass
class CLVChampion:
    """The registered BG/NBD + Gamma-Gamma CLV bundle."""

    stamp: ModelStamp
    bundle: bb.BTYDBundle

    def predict_frame(self, snapshot: pd.DataFrame) -> pd.DataFrame:
        """P(alive), expected purchases per horizon, discounted CLV and expected spend per snapshot row.

        Reads the snapshot's BTYD summary columns (``btyd_x``, ``btyd_t_x_days``, ``btyd_T_days``,
        ``btyd_monetary``); rows without a purchase get NaN. The result has a fresh 0..n-1 index.
        """
        return self.bundle.predict_frame(snapshot)


@dataclass
class Champions:
    """The three models behind one alias."""

    churn: ClassifierChampion
    repurchase_7d: ClassifierChampion
    clv: CLVChampion

    def versions(self) -> dict[str, str]:
        """Registered version per model kind."""
        return {k: s.version for k, s in self.stamps().items()}

    def stamps(self) -> dict[str, ModelStamp]:
        """Stamp (name, version, alias, checksum, run) per model kind."""
        return {"churn": self.churn.stamp, "repurchase_7d": self.repurchase_7d.stamp, "clv": self.clv.stamp}


def load_champion(
    kind: ModelKind | str, alias: str = "champion", uri: str | None = None
) -> ClassifierChampion | CLVChampion:
    """Load the version of ``kind`` (churn, repurchase[_7d], clv) behind ``alias``, checksum verified."""
    kind = ModelKind.parse(kind) if isinstance(kind, str) else kind
    return _load_clv(alias, uri) if kind is ModelKind.clv else _load_classifier(kind, alias, uri)


def load_champions(alias: str = "champion", uri: str | None = None) -> Champions:
    """Load siyu-churn, siyu-repurchase-7d and siyu-clv behind ``alias`` (see the module docstring)."""
    return Champions(
        _load_classifier(ModelKind.churn, alias, uri),
        _load_classifier(ModelKind.repurchase_7d, alias, uri),
        _load_clv(alias, uri),
    )


def _load(kind: ModelKind, alias: str, uri: str | None) -> tuple[ModelStamp, Any]:
    from training import tracking

    loaded = tracking.load_model(f"models:/{REGISTERED_NAMES[kind]}@{alias}", uri=uri)
    return ModelStamp(loaded.name, loaded.version, alias, loaded.checksum, loaded.run_id), loaded.unwrap()


def _load_classifier(kind: ModelKind, alias: str, uri: str | None) -> ClassifierChampion:
    from training import tracking

    stamp, model = _load(kind, alias, uri)
    if not isinstance(model, LGBMCalibratedClassifier):
        raise TypeError(
            f"{stamp.name} v{stamp.version} is not a LightGBM classifier ({type(model).__name__})"
        )
    if not stamp.run_id:
        raise ValueError(f"{stamp.name} v{stamp.version} has no run: its BTYD feature settings are unknown")
    # The BTYD features are recomputed at scoring time with the settings the model was trained with.
    config = tracking.load_run_dict(stamp.run_id, "config.json", uri=uri)
    return ClassifierChampion(kind, stamp, model, BTYDFeatures.model_validate(config["btyd"]))


def _load_clv(alias: str, uri: str | None) -> CLVChampion:
    stamp, model = _load(ModelKind.clv, alias, uri)
    if not isinstance(model, bb.BTYDBundle):
        raise TypeError(f"{stamp.name} v{stamp.version} is not a BTYD bundle ({type(model).__name__})")
    return CLVChampion(stamp, model)

"""One function from feature-snapshot rows to scores, shared by the nightly batch job and the HTTP service.

* :func:`training.registry.load_champions` (re-exported here) loads the registered ``siyu-churn``,
  ``siyu-repurchase-7d`` and ``siyu-clv`` versions behind an alias (``champion`` by default), artifact
  checksums verified, with the BTYD feature settings each classifier was trained with.
* :class:`Scorer` binds those models to one cutoff. The classifiers were trained on snapshot columns
  plus ``btyd_*`` features from a BG/NBD fitted on each training cutoff's snapshot
  (:func:`training.btyd_baseline.add_btyd_features`); the scorer refits exactly that on the scoring
  cutoff's snapshot, so training and scoring share one feature path that differs only in the cutoff.
* :meth:`Scorer.score` is the one scoring function: churn and 7-day repurchase probabilities (calibrated),
  the top SHAP reasons behind the churn risk (exact TreeSHAP, :mod:`training.treeshap`: LightGBM's
  ``pred_contrib`` values to rounding, several times faster), P(alive), expected purchases
  over 30/90 days and 12-month CLV with an interval from the CLV champion, stamped with the cutoff and
  every model version. Each output row depends only on its input row, so scoring a subset (HTTP) gives
  bit-identical values to scoring the whole snapshot (batch), whatever the batching or partitioning.
* A scorer serialises to plain JSON (LightGBM model text, calibrator and BTYD parameters) so that Spark
  executors can rebuild it without pickled models.
* Where the registry's ``ClassifierChampion.prepare`` refits the BTYD features on every call, the scorer
  fits them once per cutoff (the same :mod:`training.btyd_baseline` functions) so that any subset of the
  snapshot — an HTTP request — is scored with the fit of the whole snapshot.

The CLV interval is a delta-method interval on the log scale from the parameter covariance of both
BTYD fits (the same uncertainty :func:`training.clv.clv_interval` simulates, with 5 CLV evaluations
instead of hundreds of draws, which keeps it affordable per HTTP request and for a million customers).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import norm

from features.labels import CHURN_ACTIVE_DAYS
from training import btyd_baseline as bb
from training import clv
from training.classifiers import LGBMCalibratedClassifier, numeric
from training.config import BTYDFeatures, ModelKind
from training.explain import reason_codes
from training.registry import (
    CLASSIFIER_KINDS,
    Champions,
    ClassifierChampion,
    CLVChampion,
    ModelStamp,
    load_champions,
)
from training.treeshap import TreeShap

#: Snapshot columns the scorer reads besides the classifiers' features.
STATE_COLUMNS: tuple[str, ...] = ("customer_id", "lifecycle_stage", "value_tier", "recency_days")
CLASSIFIERS: tuple[ModelKind, ...] = CLASSIFIER_KINDS
__all__ = ["EncodedRows", "Scorer", "ScoringConfig", "load_champions", "score_columns"]
_LOG_STEP = 1e-5  # forward-difference step in log-parameter space for the CLV interval


@dataclass(frozen=True)
class ScoringConfig:
    """How scores are computed from the models (not a model setting: changing it changes every score)."""

    top_k_reasons: int = 3
    clv_months: int = 12
    interval_level: float = 0.9
    purchase_horizons_days: tuple[int, ...] = (30, 90)
    #: LightGBM threads per call (0 = OpenMP's default): 1 for the HTTP service, whose requests are tiny.
    lgbm_threads: int = 0
    #: The churn model's population: a purchase in the last this many days (as its label); NaN outside.
    churn_active_days: int = CHURN_ACTIVE_DAYS
    #: Tree predictor: "lightgbm" (LightGBM's own) or "native" (the boosters compiled by
    #: :mod:`training.trees`, bit-identical and several times faster; LightGBM where it cannot compile).
    trees: Literal["lightgbm", "native"] = "lightgbm"

    def __post_init__(self) -> None:
        if not 0 < self.interval_level < 1:
            raise ValueError(f"interval_level must lie in (0, 1), got {self.interval_level}")
        if self.top_k_reasons < 1 or self.clv_months < 1 or not self.purchase_horizons_days:
            raise ValueError("top_k_reasons and clv_months must be positive and horizons non-empty")
        if self.trees not in ("lightgbm", "native"):
            raise ValueError(f"trees must be lightgbm or native, not {self.trees!r}")


def score_columns(config: ScoringConfig | None = None) -> list[str]:
    """Columns of :meth:`Scorer.score`, in order."""
    cfg = config or ScoringConfig()
    reasons = [
        c for i in range(1, cfg.top_k_reasons + 1) for c in (f"shap_reason_{i}", f"shap_reason_{i}_value")
    ]
    return [
        "customer_id",
        "cutoff",
        "p_churn",
        "p_repurchase_7d",
        "p_alive",
        *[f"expected_purchases_{h}d" for h in cfg.purchase_horizons_days],
        f"clv_{cfg.clv_months}m",
        f"clv_{cfg.clv_months}m_low",
        f"clv_{cfg.clv_months}m_high",
        "expected_order_value",
        "lifecycle_stage",
        "value_tier",
        "recency_days",
        *reasons,
        "churn_model_version",
        "repurchase_7d_model_version",
        "clv_model_version",
    ]


# ------------------------------------------------------------------------------------------ models


def classifier(models: Champions, kind: ModelKind) -> ClassifierChampion:
    """The churn or repurchase_7d champion."""
    return models.churn if kind is ModelKind.churn else models.repurchase_7d


def champions_to_payload(models: Champions) -> dict[str, Any]:
    """The three models as plain JSON: stamps, LightGBM model text with its calibrator and category
    encoding, BTYD feature settings, and the CLV bundle's parameters (no pickle)."""
    out: dict[str, Any] = {}
    for kind in CLASSIFIERS:
        c = classifier(models, kind)
        out[kind.value] = {
            "stamp": asdict(c.stamp),
            "model_text": c.estimator.model_text(),
            "meta": c.estimator.meta_dict(),
            "btyd": c.btyd.model_dump(mode="json"),
        }
    out["clv"] = {"stamp": asdict(models.clv.stamp), "bundle": models.clv.bundle.to_dict()}
    return out


def champions_from_payload(d: dict[str, Any]) -> Champions:
    """Rebuild :class:`training.registry.Champions` from :func:`champions_to_payload`."""
    classifiers = {
        kind: ClassifierChampion(
            kind,
            ModelStamp(**d[kind.value]["stamp"]),
            LGBMCalibratedClassifier.from_text(d[kind.value]["model_text"], d[kind.value]["meta"]),
            BTYDFeatures.model_validate(d[kind.value]["btyd"]),
        )
        for kind in CLASSIFIERS
    }
    clv_champ = CLVChampion(ModelStamp(**d["clv"]["stamp"]), bb.BTYDBundle.from_dict(d["clv"]["bundle"]))
    return Champions(classifiers[ModelKind.churn], classifiers[ModelKind.repurchase_7d], clv_champ)


# ------------------------------------------------------------------------------------ BTYD helpers


def _btyd_key(settings: BTYDFeatures) -> str:
    return json.dumps(settings.model_dump(mode="json"), sort_keys=True)


def _fit_to_dict(fit: bb.BTYDFit) -> dict[str, Any]:
    return {
        "cutoff": fit.cutoff.isoformat(),
        "n_rows": fit.n_rows,
        "notes": list(fit.notes),
        "bg": fit.bg.to_dict() if fit.bg is not None else None,
        "gg": fit.gg.to_dict() if fit.gg is not None else None,
    }


def _fit_from_dict(d: dict[str, Any]) -> bb.BTYDFit:
    return bb.BTYDFit(
        pd.Timestamp(d["cutoff"]),
        clv.BetaGeoModel.from_dict(d["bg"]) if d["bg"] is not None else None,
        clv.GammaGammaModel.from_dict(d["gg"]) if d["gg"] is not None else None,
        int(d["n_rows"]),
        list(d["notes"]),
    )


def _with_log_param(model: Any, name: str, step: float) -> Any:
    d = model.to_dict()
    d["params"] = {**d["params"], name: d["params"][name] * float(np.exp(step))}
    return type(model).from_dict(d)


class _CLVMath:
    """Discounted CLV of the CLV champion, computed row by row, with a delta-method interval.

    The value is :func:`training.clv.customer_lifetime_value`'s: E[spend] · Σ_k (E[Y(kP)] − E[Y((k−1)P)]) /
    (1 + d)^k with the BG/NBD closed forms of :mod:`training.clv` (``path`` on distinct (x, T) pairs times
    ``scale`` per row). The monthly sum is accumulated element-wise here because a matrix product sums in
    an order that depends on the other rows in the call, and a customer's score must not depend on who
    else is scored with it. The interval nudges each log-parameter of both models once (forward
    differences) and combines the gradient of log CLV with the fits' log-parameter covariances.
    """

    def __init__(self, bundle: bb.BTYDBundle, months: int, level: float):
        bg, gg = bundle.bg, bundle.gg
        self.bg, self.gg, self.months = bg, gg, months
        self.math = bg._math()
        self.p = bg.param_vector_
        eye = np.eye(len(self.p))
        # Row 0: the fitted parameters; row i: parameter i nudged by _LOG_STEP on the log scale.
        self.param_sets = np.vstack(
            [self.p, *(self.p * np.exp(_LOG_STEP * eye[i]) for i in range(len(self.p)))]
        )
        self.gg_steps = [_with_log_param(gg, k, _LOG_STEP) for k in gg.param_names]
        # Month ends in days (snapshot BTYD summaries are in days), as a column to broadcast over pairs.
        self.steps = (clv.periods_per_month(1.0) * np.arange(months + 1, dtype=float))[:, None]
        self.discount = (1.0 + bundle.monthly_discount_rate) ** -np.arange(1, months + 1, dtype=float)
        self.z = float(norm.ppf(0.5 + level / 2))
        #: CLV of a customer with no purchase yet: population rate (E[X(t)]) × population mean spend.
        self.prior_clv = self._prior_clv()

    def purchases(self, params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Discounted expected purchases over ``months``, per parameter set (rows of ``params``) and row.

        All parameter sets are evaluated in one broadcast call: ``path`` over (set, month, (x, T) pair),
        ``scale`` over (set, row); every operation is element-wise.
        """
        key, inv = np.unique(x + 1j * T, return_inverse=True)
        P = params.T  # (n_params, n_sets) so that the closed forms unpack one array per parameter
        path = self.math.path(
            P[:, :, None, None], self.steps[None], key.real[None, None], key.imag[None, None]
        )
        total = np.zeros((params.shape[0], key.size))
        for k in range(1, self.months + 1):
            total = total + (path[:, k] - path[:, k - 1]) * self.discount[k - 1]
        return total[:, inv.ravel()] * self.math.scale(P[:, :, None], x[None], t_x[None], T[None])

    def _prior_clv(self) -> float:
        reach = self.bg.expected_purchases_population(self.steps[:, 0])
        return float(np.sum(np.diff(reach) * self.discount) * self.gg.population_mean_spend())

    def clv(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, ...]:
        """CLV with the low/high ends of its interval."""
        spend = self.gg.expected_spend(x, m)
        purchases = self.purchases(self.param_sets, x, t_x, T)
        base = purchases[0]
        value = spend * base
        with np.errstate(divide="ignore", invalid="ignore"):
            g_bg = [(np.log(nudged) - np.log(base)) / _LOG_STEP for nudged in purchases[1:]]
            g_gg = [(np.log(g.expected_spend(x, m)) - np.log(spend)) / _LOG_STEP for g in self.gg_steps]
        var = _quadratic_form(g_bg, self.bg.log_covariance_) + _quadratic_form(g_gg, self.gg.log_covariance_)
        half = self.z * np.sqrt(np.clip(var, 0.0, None))
        ok = np.isfinite(half) & (value > 0)
        return value, np.where(ok, value * np.exp(-half), value), np.where(ok, value * np.exp(half), value)


def _text(values: Any) -> np.ndarray:
    """Values as Python strings in an object array (ids)."""
    if isinstance(values, pd.Series):
        return values.astype(str).to_numpy(dtype=object)
    return np.array([str(v) for v in values], dtype=object)


def _quadratic_form(g: list[np.ndarray], cov: np.ndarray) -> np.ndarray:
    """gᵀ Σ g per row, element-wise (no reductions whose order could depend on the batch)."""
    out = np.zeros_like(g[0])
    for i, gi in enumerate(g):
        for j, gj in enumerate(g):
            out = out + gi * cov[i, j] * gj
    return out


# ------------------------------------------------------------------------------------------ scorer


@dataclass
class EncodedRows:
    """Snapshot rows turned into what the models read: per-row arrays, so any subset is a cheap slice.

    ``X`` holds one float matrix per distinct classifier input (LightGBM's encoding: categories as
    codes, missing as NaN); ``btyd`` the (x, t_x, T, mean spend) summary in days.
    """

    customer_id: np.ndarray
    X: dict[str, np.ndarray]
    btyd: np.ndarray
    lifecycle_stage: np.ndarray
    value_tier: np.ndarray
    recency_days: np.ndarray

    def __len__(self) -> int:
        return len(self.customer_id)

    def take(self, idx: np.ndarray | list[int]) -> EncodedRows:
        """The rows at positions ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        return EncodedRows(
            self.customer_id[idx],
            {k: v[idx] for k, v in self.X.items()},
            self.btyd[idx],
            self.lifecycle_stage[idx],
            self.value_tier[idx],
            self.recency_days[idx],
        )


class Scorer:
    """Champion models bound to one cutoff's BTYD feature fits; :meth:`score` maps snapshot rows to scores.

    ``score(rows) == score_encoded(encode(rows))``: the HTTP service encodes its snapshot once at start
    and scores slices of it, the batch job encodes and scores chunk by chunk — the same two steps.
    """

    def __init__(
        self,
        models: Champions,
        feature_fits: dict[str, bb.BTYDFit | None],
        cutoff: dt.date,
        config: ScoringConfig | None = None,
    ):
        self.models = models
        self.feature_fits = feature_fits
        self.cutoff = cutoff
        self.config = config or ScoringConfig()
        self._clv = _CLVMath(models.clv.bundle, self.config.clv_months, self.config.interval_level)
        self._columns = score_columns(self.config)
        self._input_key = {kind: self._feature_key(classifier(models, kind)) for kind in CLASSIFIERS}
        bg = models.clv.bundle.bg
        self._prior_purchases = {
            h: float(bg.expected_purchases_population(float(h))) for h in self.config.purchase_horizons_days
        }
        self._native: dict[ModelKind, Any] = {}
        self._treeshap: TreeShap | None = None

    def _explainer(self) -> TreeShap:
        """TreeSHAP of the churn booster (its leaf tables are built once per scorer)."""
        if self._treeshap is None:
            self._treeshap = TreeShap(self.models.churn.estimator.model_text())
        return self._treeshap

    def prepare(self, explain: bool = True) -> dict[str, bool]:
        """Do the once-per-model work up front, so that no request or chunk pays for it; idempotent.

        Builds (or loads from the cache) the native boosters when ``trees="native"`` and, with
        ``explain``, the churn model's TreeSHAP tables (and its compiled kernel). Returns, per
        classifier, whether it predicts natively (False: LightGBM, e.g. no C compiler).
        """
        if explain:
            self._explainer().contributions(np.zeros((1, len(self.models.churn.estimator.feature_names_in_))))
        if self.config.trees == "native":
            from training.trees import native_booster

            for kind in CLASSIFIERS:
                if kind not in self._native:
                    est = classifier(self.models, kind).estimator
                    self._native[kind] = native_booster(est.model_text(), self.config.lgbm_threads)
        return {kind.value: self._native.get(kind) is not None for kind in CLASSIFIERS}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        models: Champions,
        snapshot: pd.DataFrame,
        cutoff: dt.date,
        config: ScoringConfig | None = None,
    ) -> Scorer:
        """Fit the classifiers' BTYD features on the whole snapshot at ``cutoff`` (as in training)."""
        fits: dict[str, bb.BTYDFit | None] = {}
        for kind in CLASSIFIERS:
            c = classifier(models, kind)
            key = _btyd_key(c.btyd)
            if key not in fits:
                fits[key] = (
                    bb.fit_btyd(snapshot, pd.Timestamp(cutoff), c.btyd.penalizers)
                    if c.btyd.enabled and c.btyd_columns()
                    else None
                )
        return cls(models, fits, cutoff, config)

    def required_columns(self) -> list[str]:
        """Snapshot columns :meth:`score` needs."""
        cols = list(STATE_COLUMNS) + list(bb.BTYD_INPUTS)
        for kind in CLASSIFIERS:
            c = classifier(self.models, kind)
            generated = set(c.btyd_columns())
            cols += [f for f in c.estimator.feature_names_in_ if f not in generated]
        return list(dict.fromkeys(cols))

    def versions(self) -> dict[str, str]:
        """Model versions stamped on every score."""
        return self.models.versions()

    def columns(self) -> list[str]:
        """Columns of :meth:`score`."""
        return list(self._columns)

    def to_payload(self) -> str:
        """The whole scorer as one JSON string (no pickle), e.g. to ship to Spark executors."""
        return json.dumps(
            {
                "models": champions_to_payload(self.models),
                "cutoff": self.cutoff.isoformat(),
                "config": asdict(self.config),
                "feature_fits": {
                    k: _fit_to_dict(v) if v is not None else None for k, v in self.feature_fits.items()
                },
            }
        )

    @classmethod
    def from_payload(cls, payload: str) -> Scorer:
        """Rebuild from :meth:`to_payload`."""
        d = json.loads(payload)
        cfg = d["config"]
        config = ScoringConfig(**{**cfg, "purchase_horizons_days": tuple(cfg["purchase_horizons_days"])})
        fits = {k: _fit_from_dict(v) if v is not None else None for k, v in d["feature_fits"].items()}
        return cls(champions_from_payload(d["models"]), fits, dt.date.fromisoformat(d["cutoff"]), config)

    # -- encoding -----------------------------------------------------------------------------
    @staticmethod
    def _feature_key(c: ClassifierChampion) -> str:
        est = c.estimator
        return json.dumps([list(est.feature_names_in_), est.categories_, _btyd_key(c.btyd)], sort_keys=True)

    def encode(self, rows: pd.DataFrame) -> EncodedRows:
        """Encode snapshot rows for the models (raises ValueError naming any missing column)."""
        missing = [c for c in self.required_columns() if c not in rows.columns]
        if missing:
            raise ValueError(f"rows lack {len(missing)} snapshot columns: {missing}")
        return self._encode_columns({c: rows[c] for c in self.required_columns()})

    def encode_records(self, records: list[dict[str, Any]]) -> EncodedRows:
        """Encode rows given as dicts of typed values (validated inline rows), without a DataFrame.

        Equal to ``encode(pd.DataFrame(records))`` (tested) at a fraction of the cost for a few rows: an
        HTTP request's rows go straight into the arrays the models read.
        """
        missing = sorted({c for c in self.required_columns() for r in records if c not in r})
        if missing:
            raise ValueError(f"rows lack {len(missing)} snapshot columns: {missing}")
        text = self._text_columns()
        return self._encode_columns({
            c: np.array([r[c] for r in records], dtype=object if c in text else np.float64)
            for c in self.required_columns()
        })

    def _text_columns(self) -> set[str]:
        """Required columns that hold text: ids, states and the classifiers' categorical features."""
        cats = {f for kind in CLASSIFIERS for f in classifier(self.models, kind).estimator.categories_}
        return {"customer_id", "lifecycle_stage", "value_tier", *cats}

    def _encode_columns(self, columns: dict[str, Any]) -> EncodedRows:
        """Encode named column arrays (Series or numpy) of equal length; see :meth:`encode`."""
        btyd = np.column_stack([numeric(columns[c]) for c in bb.BTYD_INPUTS])
        X: dict[str, np.ndarray] = {}
        generated: dict[str, dict[str, np.ndarray]] = {}
        for kind in CLASSIFIERS:
            c, key = classifier(self.models, kind), self._input_key[kind]
            if key in X:
                continue
            inputs = columns
            if c.btyd_columns():
                settings = _btyd_key(c.btyd)
                if settings not in generated:
                    generated[settings] = self._btyd_features(c, btyd)
                inputs = {**columns, **generated[settings]}
            # The classifier's own encoding (category codes from training), so values match predict_proba.
            X[key] = c.estimator.encode_columns(inputs)
        btyd[:, 3] = np.nan_to_num(btyd[:, 3], nan=0.0)
        return EncodedRows(
            _text(columns["customer_id"]),
            X,
            btyd,
            np.asarray(columns["lifecycle_stage"], dtype=object),
            np.asarray(columns["value_tier"], dtype=object),
            numeric(columns["recency_days"]),
        )

    def feature_frame(self, rows: pd.DataFrame, kind: ModelKind = ModelKind.churn) -> pd.DataFrame:
        """Snapshot ``rows`` with the classifier's ``btyd_*`` features at this cutoff: its input frame."""
        c = classifier(self.models, kind)
        if not c.btyd_columns():
            return rows
        btyd = np.column_stack([numeric(rows[col]) for col in bb.BTYD_INPUTS])
        extra = pd.DataFrame(self._btyd_features(c, btyd), index=rows.index)
        return pd.concat([rows.drop(columns=[x for x in extra.columns if x in rows.columns]), extra], axis=1)

    def _btyd_features(self, c: ClassifierChampion, btyd: np.ndarray) -> dict[str, np.ndarray]:
        """The classifier's ``btyd_*`` features from the cutoff's fit (NaN without a fit, as in training)."""
        fit = self.feature_fits.get(_btyd_key(c.btyd)) or bb.BTYDFit(pd.Timestamp(self.cutoff), None, None, 0)
        return bb.btyd_feature_arrays(
            fit, btyd, c.btyd.horizons_days, c.btyd.clv_months, c.btyd.monthly_discount_rate
        )

    # -- scoring ------------------------------------------------------------------------------
    def score(self, rows: pd.DataFrame, explain: bool = True) -> pd.DataFrame:
        """Scores for snapshot ``rows``: one output row per input row, in order (module docstring)."""
        return pd.DataFrame(self.score_encoded(self.encode(rows), explain), columns=self._columns)

    def score_encoded(self, enc: EncodedRows, explain: bool = True) -> dict[str, np.ndarray]:
        """Score encoded rows; columns as :func:`score_columns`, each a numpy array.

        With ``explain=False`` the SHAP reason columns are left empty: TreeSHAP costs far more than the
        predictions, so the nightly job explains only the customers it acts on (:meth:`reasons`).
        """
        n = len(enc)
        out: dict[str, np.ndarray] = {
            "customer_id": enc.customer_id,
            "cutoff": np.full(n, self.cutoff, dtype=object),
        }
        population = self.churn_population(enc)
        out["p_churn"] = self._predict(ModelKind.churn, enc, rows=population)
        out["p_repurchase_7d"] = self._predict(ModelKind.repurchase_7d, enc)
        out.update(self._clv_outputs(enc.btyd))
        out["lifecycle_stage"], out["value_tier"] = enc.lifecycle_stage, enc.value_tier
        out["recency_days"] = enc.recency_days
        if explain:
            self.add_reasons(enc, out, population)
        else:
            out.update(self._no_reasons(n))
        for kind, version in self.versions().items():
            out[f"{kind}_model_version"] = np.full(n, version, dtype=object)
        return out

    def add_reasons(
        self, enc: EncodedRows, out: dict[str, np.ndarray], population: np.ndarray | None = None
    ) -> None:
        """Fill the reason columns of ``out`` (scores of ``enc``) for the rows in the churn population."""
        population = self.churn_population(enc) if population is None else population
        n = len(enc)
        for c, v in self._no_reasons(n).items():
            out[c] = v
        if population.any():
            idx = np.flatnonzero(population)
            for c, v in self.reasons(enc.take(idx) if idx.size < n else enc).items():
                out[c][idx] = v

    def churn_population(self, enc: EncodedRows) -> np.ndarray:
        """Rows the churn model speaks for: a purchase within ``churn_active_days`` before the cutoff."""
        with np.errstate(invalid="ignore"):
            return np.isfinite(enc.recency_days) & (enc.recency_days <= self.config.churn_active_days)

    def _predict(self, kind: ModelKind, enc: EncodedRows, rows: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities of ``rows`` (a boolean mask; all rows if None), NaN elsewhere.

        The trees are the bulk of a nightly job's time, so rows a model does not speak for are skipped.
        """
        est = classifier(self.models, kind).estimator
        X = enc.X[self._input_key[kind]]
        out = np.full(len(enc), np.nan)
        mask = np.ones(len(enc), dtype=bool) if rows is None else rows
        if mask.any():
            Xm = X if rows is None else X[mask]
            native = self._native_booster(kind)
            raw = (
                native.predict(Xm)
                if native is not None
                else est.booster_.predict(Xm, num_iteration=est.best_iteration_, **self._threads())
            )
            out[mask] = est.calibrator_.predict(raw)
        return out

    def _native_booster(self, kind: ModelKind) -> Any:
        """The compiled booster of ``kind`` when ``trees="native"`` and it could be built, else None."""
        if self.config.trees != "native":
            return None
        if kind not in self._native:
            self.prepare(explain=False)
        return self._native[kind]

    def _threads(self) -> dict[str, int]:
        return {"num_threads": self.config.lgbm_threads} if self.config.lgbm_threads else {}

    def reasons(self, enc: EncodedRows) -> dict[str, np.ndarray]:
        """Top-k SHAP reasons pushing each churn risk up (``shap_reason_i``, ``shap_reason_i_value``)."""
        est = self.models.churn.estimator
        n, k = len(enc), self.config.top_k_reasons
        if n == 0:
            return self._no_reasons(0)
        contrib = self._explainer().contributions(enc.X[self._input_key[ModelKind.churn]])
        frame = pd.DataFrame(contrib, columns=list(est.feature_names_in_))
        codes = reason_codes(frame, k=k, direction="up")
        out: dict[str, np.ndarray] = {}
        for i in range(1, k + 1):
            out[f"shap_reason_{i}"] = codes[f"reason_{i}"].to_numpy(dtype=object)
            out[f"shap_reason_{i}_value"] = codes[f"contribution_{i}"].to_numpy(dtype=float)
        return out

    def _no_reasons(self, n: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i in range(1, self.config.top_k_reasons + 1):
            out[f"shap_reason_{i}"] = np.full(n, None, dtype=object)
            out[f"shap_reason_{i}_value"] = np.full(n, np.nan)
        return out

    def _clv_outputs(self, btyd: np.ndarray) -> dict[str, np.ndarray]:
        cfg, bg, gg, n = self.config, self.models.clv.bundle.bg, self.models.clv.bundle.gg, len(btyd)
        x, t_x, T, m = btyd.T
        buyers = np.isfinite(T) & (T > 0) & np.isfinite(x) & np.isfinite(t_x)
        # No purchase on record yet: BG/NBD's prior for a new customer (alive, the population's rate) and
        # the population's mean spend; such a CLV has no customer-level interval.
        out: dict[str, np.ndarray] = {"p_alive": np.ones(n)}
        for h, prior in self._prior_purchases.items():
            out[f"expected_purchases_{h}d"] = np.full(n, prior)
        value, low, high = np.full(n, self._clv.prior_clv), np.full(n, np.nan), np.full(n, np.nan)
        order_value = np.full(n, gg.population_mean_spend())
        if buyers.any():
            xb, tb, Tb, mb = x[buyers], t_x[buyers], T[buyers], m[buyers]
            out["p_alive"][buyers] = bg.p_alive(xb, tb, Tb)
            for h in cfg.purchase_horizons_days:
                out[f"expected_purchases_{h}d"][buyers] = bg.expected_purchases(float(h), xb, tb, Tb)
            value[buyers], low[buyers], high[buyers] = self._clv.clv(xb, tb, Tb, mb)
            order_value[buyers] = gg.expected_spend(xb, mb)
        name = f"clv_{cfg.clv_months}m"
        out[name], out[f"{name}_low"], out[f"{name}_high"] = value, low, high
        out["expected_order_value"] = order_value
        return out

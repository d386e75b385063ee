"""Uplift models learned from past randomised campaigns, their evaluation, and per-channel estimates.

* :class:`TLearner` — two outcome models, one per arm; uplift = μ₁(x) − μ₀(x).
* :class:`XLearner` (Künzel et al., 2019) — stage 1 as the T-learner; stage 2 regresses the imputed
  effects ``D₁ = Y₁ − μ₀(X₁)`` and ``D₀ = μ₁(X₀) − Y₀`` on x; uplift = g·τ₀(x) + (1 − g)·τ₁(x).
  ``weighting="propensity"`` takes g = e (the treated share, Künzel's choice); ``"arm_size"`` takes
  g = 1 − e, weighting each half by the size of the arm its stage-2 regression is fitted on — better
  when outcome noise, not the stage-1 fit, dominates (binary conversions). An external ``baseline``
  μ₀ (e.g. :class:`BaselineOutcomeModel` fitted on every untreated customer) may replace the
  control-arm model.
* :class:`ChannelUpliftModel` — one responsiveness r(x) pooled over every channel's campaigns, scaled
  per channel; channel scales partially pooled by empirical Bayes (:func:`random_effects_shrinkage`).

All wrap LightGBM, follow the scikit-learn estimator contract (configuration in ``__init__``, no work
there, ``fit`` returns self, fitted state ends in ``_``) and are deterministic for a given
``random_state`` (single-threaded, ``deterministic=True``). Metrics — Qini curve, Qini AUC, uplift
AUC (AUUC) and uplift@k — come from ``sklift.metrics``.

:func:`channel_uplift_table` turns the campaign log into the per-channel uplift estimates (mean
uplift in conversion and net revenue with confidence intervals and sample sizes) that the tiering
policy can use in place of its priors; it is a plain pydantic model saved as JSON.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import BaseEstimator

from experiments.readout import ReadoutConfig, diff_in_means
from experiments.targeting_features import CALENDAR_COLUMNS

Outcome = Literal["binary", "continuous"]


# ----------------------------------------------------------------------------- feature frame


def _as_frame(X: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-d, got shape {arr.shape}")
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def _model_columns(X: pd.DataFrame) -> list[str]:
    """Numeric, boolean and categorical columns (ids, timestamps and free text are left out)."""
    keep = []
    for c in X.columns:
        s = X[c]
        categorical = isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(s)
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_datetime64_any_dtype(s)
        text = pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)
        # Free text and ids (many distinct values) are not features.
        if categorical or numeric or (text and c != "customer_id" and s.nunique(dropna=True) <= 50):
            keep.append(c)
    return keep


def _encode(X: pd.DataFrame, columns: list[str], categories: dict[str, list[str]]) -> pd.DataFrame:
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(f"X lacks the columns the model was fitted on: {missing}")
    out = X[columns].copy()
    for c in columns:
        if c in categories:
            out[c] = pd.Categorical(
                out[c].astype("object").where(out[c].notna(), None), categories=categories[c]
            )
        elif pd.api.types.is_bool_dtype(out[c]):
            out[c] = out[c].astype(float)
    return out


def _categories(X: pd.DataFrame, columns: list[str]) -> dict[str, list[str]]:
    cats = {}
    for c in columns:
        s = X[c]
        if (
            isinstance(s.dtype, pd.CategoricalDtype)
            or pd.api.types.is_object_dtype(s)
            or pd.api.types.is_string_dtype(s)
        ):
            cats[c] = sorted(str(v) for v in s.dropna().unique())
    return cats


def encode_features(
    train: pd.DataFrame, columns: Sequence[str], *others: pd.DataFrame
) -> tuple[pd.DataFrame, ...]:
    """``train[columns]`` and each of ``others`` encoded alike for LightGBM (text → shared categories)."""
    cols = list(columns)
    cats = _categories(train, cols)
    return tuple(_encode(X, cols, cats) for X in (train, *others))


def _check_fit_inputs(X: Any, y: Any, treatment: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    Xf = _as_frame(X).reset_index(drop=True)
    y = np.asarray(y, dtype=float)
    w = np.asarray(treatment)
    problems = []
    if len(y) != len(Xf) or len(w) != len(Xf):
        problems.append(f"X, y and treatment have different lengths ({len(Xf)}, {len(y)}, {len(w)})")
    else:
        if not np.isfinite(y).all():
            problems.append(f"y has {int((~np.isfinite(y)).sum())} non-finite values")
        bad_w = ~np.isin(w, [0, 1, True, False])
        if bad_w.any():
            problems.append(f"treatment must be 0/1; bad rows {np.flatnonzero(bad_w)[:20].tolist()}")
        else:
            w = w.astype(int)
            for arm in (0, 1):
                if (w == arm).sum() < 20:
                    problems.append(f"arm {arm} has only {(w == arm).sum()} units (need ≥ 20)")
    if problems:
        raise ValueError("; ".join(problems))
    return Xf, y, w


class _LGBMUplift(BaseEstimator):
    """Shared configuration and helpers of the LightGBM meta-learners."""

    def __init__(
        self,
        outcome: Outcome = "binary",
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 50,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        random_state: int = 0,
    ) -> None:
        self.outcome = outcome
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.random_state = random_state

    def _params(self, seed_offset: int) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            "subsample_freq": 1 if self.subsample < 1 else 0,
            "colsample_bytree": self.colsample_bytree,
            "reg_lambda": self.reg_lambda,
            "random_state": self.random_state + seed_offset,
            "n_jobs": 1,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }

    def _outcome_model(self, seed_offset: int) -> lgb.LGBMModel:
        if self.outcome == "binary":
            return lgb.LGBMClassifier(objective="binary", **self._params(seed_offset))
        if self.outcome == "continuous":
            return lgb.LGBMRegressor(objective="regression", **self._params(seed_offset))
        raise ValueError(f"outcome must be 'binary' or 'continuous', got {self.outcome!r}")

    def _effect_model(self, seed_offset: int) -> lgb.LGBMRegressor:
        return lgb.LGBMRegressor(objective="regression", **self._params(seed_offset))

    @staticmethod
    def _mean(model: lgb.LGBMModel, X: pd.DataFrame) -> np.ndarray:
        if isinstance(model, lgb.LGBMClassifier):
            return model.predict_proba(X)[:, 1]
        return model.predict(X)

    def _prepare_fit(self, X: Any, y: Any, treatment: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        Xf, y, w = _check_fit_inputs(X, y, treatment)
        if self.outcome == "binary" and not np.isin(y, [0.0, 1.0]).all():
            raise ValueError("outcome='binary' needs y in {0, 1}")
        self.feature_names_ = _model_columns(Xf)
        if not self.feature_names_:
            raise ValueError(
                "X has no usable feature columns (numeric, boolean or low-cardinality categorical)"
            )
        self.categories_ = _categories(Xf, self.feature_names_)
        self.n_features_in_ = len(self.feature_names_)
        self.treatment_share_ = float(w.mean())
        return _encode(Xf, self.feature_names_, self.categories_), y, w

    def _prepare_predict(self, X: Any) -> pd.DataFrame:
        if not hasattr(self, "feature_names_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(X, y, treatment) first")
        return _encode(_as_frame(X).reset_index(drop=True), self.feature_names_, self.categories_)


class TLearner(_LGBMUplift):
    """Two-model uplift learner: separate LightGBM outcome models for treated and control units."""

    def fit(self, X: Any, y: Any, treatment: Any) -> TLearner:
        Xe, y, w = self._prepare_fit(X, y, treatment)
        self.model_treatment_ = self._outcome_model(1).fit(Xe[w == 1], y[w == 1])
        self.model_control_ = self._outcome_model(2).fit(Xe[w == 0], y[w == 0])
        return self

    def predict_outcomes(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(μ₀(x), μ₁(x)): expected outcome without and with treatment."""
        Xe = self._prepare_predict(X)
        return self._mean(self.model_control_, Xe), self._mean(self.model_treatment_, Xe)

    def predict(self, X: Any) -> np.ndarray:
        """Estimated uplift μ₁(x) − μ₀(x) per row."""
        mu0, mu1 = self.predict_outcomes(X)
        return mu1 - mu0


class XLearner(_LGBMUplift):
    """X-learner (Künzel et al., 2019) with LightGBM in both stages.

    ``weighting`` chooses g in g·τ₀ + (1 − g)·τ₁: ``"propensity"`` → g = e, ``"arm_size"`` → g = 1 − e,
    with e the treated share of the training units (randomised, hence constant).
    """

    def __init__(
        self,
        outcome: Outcome = "binary",
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 50,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        weighting: Literal["propensity", "arm_size"] = "propensity",
        random_state: int = 0,
    ) -> None:
        super().__init__(
            outcome, n_estimators, learning_rate, num_leaves, min_child_samples, subsample,
            colsample_bytree, reg_lambda, random_state,
        )  # fmt: skip
        self.weighting = weighting

    def fit(self, X: Any, y: Any, treatment: Any, baseline: Any = None) -> XLearner:
        """Fit both stages; ``baseline`` (μ₀ per row, optional) replaces the control-arm model in D₁."""
        if self.weighting not in ("propensity", "arm_size"):
            raise ValueError(f"weighting must be 'propensity' or 'arm_size', got {self.weighting!r}")
        Xe, y, w = self._prepare_fit(X, y, treatment)
        t, c = w == 1, w == 0
        self.model_treatment_ = self._outcome_model(1).fit(Xe[t], y[t])
        self.model_control_ = self._outcome_model(2).fit(Xe[c], y[c])
        mu0 = _baseline_array(baseline, len(y))
        d1 = y[t] - (mu0[t] if mu0 is not None else self._mean(self.model_control_, Xe[t]))
        d0 = self._mean(self.model_treatment_, Xe[c]) - y[c]
        self.effect_treated_ = self._effect_model(3).fit(Xe[t], d1)
        self.effect_control_ = self._effect_model(4).fit(Xe[c], d0)
        e = self.treatment_share_
        self.g_ = e if self.weighting == "propensity" else 1.0 - e
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Estimated uplift g·τ₀(x) + (1 − g)·τ₁(x) per row."""
        Xe = self._prepare_predict(X)
        return self.g_ * self.effect_control_.predict(Xe) + (1 - self.g_) * self.effect_treated_.predict(Xe)


def _baseline_array(baseline: Any, n: int) -> np.ndarray | None:
    if baseline is None:
        return None
    mu0 = np.asarray(baseline, dtype=float)
    if mu0.shape != (n,) or not np.isfinite(mu0).all():
        raise ValueError(f"baseline must be {n} finite values, got shape {mu0.shape}")
    return mu0


# ----------------------------------------------------------------------------- evaluation


class UpliftMetrics(BaseModel):
    """Ranking quality of an uplift score on a randomised sample (sklift definitions)."""

    model_config = ConfigDict(frozen=True)

    n: int
    n_treatment: int
    qini_auc: float
    uplift_auc: float
    uplift_at_10: float
    uplift_at_30: float


def uplift_metrics(y: Any, uplift: Any, treatment: Any) -> UpliftMetrics:
    """Qini AUC, uplift AUC (AUUC) and uplift@k (k = 10 %, 30 %, ``overall`` strategy) via sklift."""
    from sklift.metrics import qini_auc_score, uplift_at_k, uplift_auc_score

    y, u, w = np.asarray(y, float), np.asarray(uplift, float), np.asarray(treatment).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklift uses a deprecated sklearn helper
        return UpliftMetrics(
            n=len(y),
            n_treatment=int(w.sum()),
            qini_auc=float(qini_auc_score(y, u, w)),
            uplift_auc=float(uplift_auc_score(y, u, w)),
            uplift_at_10=float(uplift_at_k(y, u, w, strategy="overall", k=0.1)),
            uplift_at_30=float(uplift_at_k(y, u, w, strategy="overall", k=0.3)),
        )


def qini_curve_frame(y: Any, uplift: Any, treatment: Any) -> pd.DataFrame:
    """Qini curve points (number targeted, incremental conversions) from ``sklift.metrics.qini_curve``."""
    from sklift.metrics import qini_curve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        x, q = qini_curve(np.asarray(y, float), np.asarray(uplift, float), np.asarray(treatment).astype(int))
    return pd.DataFrame({"n_targeted": x, "incremental": q})


def plot_qini(curves: dict[str, pd.DataFrame], title: str = "Qini curve"):  # noqa: ANN201 - Figure
    """Qini curves of several scores on one sample, with the random-targeting diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, c in curves.items():
        ax.plot(c["n_targeted"], c["incremental"], label=name)
    any_c = next(iter(curves.values()))
    ax.plot([0, any_c["n_targeted"].iat[-1]], [0, any_c["incremental"].iat[-1]], "k--", lw=1, label="random")
    ax.set_xlabel("customers targeted (ranked by score)")
    ax.set_ylabel("incremental conversions")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- per-channel table


class ChannelUplift(BaseModel):
    """Measured effect of one channel, pooled over its randomised campaigns (treatment vs control)."""

    model_config = ConfigDict(frozen=True)

    channel: str
    campaigns: list[str]
    n_treatment: int
    n_control: int
    conversion_control: float
    uplift_conversion: float
    uplift_conversion_ci: tuple[float, float]
    uplift_revenue: float = Field(description="Incremental net revenue per contacted customer.")
    uplift_revenue_ci: tuple[float, float]
    cost_per_contact: float
    window_days: float


class ChannelUpliftTable(BaseModel):
    """Channel → measured uplift; the tiering policy may use these in place of its priors."""

    model_config = ConfigDict(frozen=True)

    alpha: float
    channels: dict[str, ChannelUplift]

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> ChannelUpliftTable:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def frame(self) -> pd.DataFrame:
        """One row per channel; interval bounds as ``*_ci_low`` / ``*_ci_high`` columns."""
        rows = []
        for c in self.channels.values():
            d = c.model_dump()
            for key in ("uplift_conversion_ci", "uplift_revenue_ci"):
                lo, hi = d.pop(key)
                d[f"{key}_low"], d[f"{key}_high"] = lo, hi
            d["campaigns"] = ",".join(d["campaigns"])
            rows.append(d)
        return pd.DataFrame(rows)


def channel_uplift_table(
    outcomes: pd.DataFrame, config: ReadoutConfig | None = None, windows: dict[str, float] | None = None
) -> ChannelUpliftTable:
    """Pool :func:`experiments.readout.campaign_outcomes` rows by channel and estimate each channel's
    mean uplift (treatment − control) in conversion and net revenue with Welch intervals.

    Campaigns are pooled by stacking their units; with equal treatment shares across a channel's
    campaigns this is the unbiased average effect over those audiences.
    """
    cfg = config or ReadoutConfig()
    out: dict[str, ChannelUplift] = {}
    ctrl_arm = cfg.control_arm
    campaign_channel = outcomes[outcomes["arm"] != ctrl_arm].groupby("campaign_id")["channel"].first()
    df = outcomes.assign(channel=outcomes["campaign_id"].map(campaign_channel))
    for channel, g in df.groupby("channel", sort=True):
        t, c = g[g["arm"] == "treatment"], g[g["arm"] == ctrl_arm]
        if len(t) < 2 or len(c) < 2:
            continue
        conv = diff_in_means(t["converted"].to_numpy(), c["converted"].to_numpy(), cfg.alpha)
        rev = diff_in_means(t["revenue"].to_numpy(), c["revenue"].to_numpy(), cfg.alpha)
        out[str(channel)] = ChannelUplift(
            channel=str(channel),
            campaigns=sorted(g["campaign_id"].astype(str).unique().tolist()),
            n_treatment=len(t),
            n_control=len(c),
            conversion_control=conv.mean_control,
            uplift_conversion=conv.abs_lift,
            uplift_conversion_ci=(conv.abs_ci_low, conv.abs_ci_high),
            uplift_revenue=rev.abs_lift,
            uplift_revenue_ci=(rev.abs_ci_low, rev.abs_ci_high),
            cost_per_contact=float(t["cost"].mean()),
            window_days=float((windows or {}).get(str(channel), cfg.window_days)),
        )
    return ChannelUpliftTable(alpha=cfg.alpha, channels=out)


def training_frame(
    outcomes: pd.DataFrame, features_by_campaign: dict[str, pd.DataFrame], control_arm: str = "control"
) -> pd.DataFrame:
    """Stack campaigns' treatment/control units with their point-in-time features.

    ``features_by_campaign[campaign_id]`` is the feature snapshot at that campaign's start (a frame
    with ``customer_id``); units without features are dropped. Adds ``treatment`` (0/1).
    """
    frames = []
    for cid, g in outcomes[outcomes["arm"].isin(["treatment", control_arm])].groupby(
        "campaign_id", sort=True
    ):
        feats = features_by_campaign.get(str(cid))
        if feats is None:
            continue
        m = g.merge(feats, on="customer_id", how="inner", suffixes=("", "_feat"))
        m["treatment"] = (m["arm"] == "treatment").astype(int)
        frames.append(m)
    if not frames:
        raise ValueError("no campaign has both units and a feature snapshot")
    return pd.concat(frames, ignore_index=True)


def feature_columns(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Model feature columns of a training frame (outcome, arm and bookkeeping columns removed).

    Calendar columns and the campaign's window length are removed too: constant within a campaign, they
    would let a pooled model tell campaigns (and so channels) apart instead of customers.
    """
    drop = {
        "campaign_id", "customer_id", "arm", "channel", "touch_ts", "cost", "converted", "revenue",
        "treatment", "cutoff", "snapshot_cutoff", "pre_spend", "window_days", *CALENDAR_COLUMNS, *exclude,
    }  # fmt: skip
    return [c for c in _model_columns(frame) if c not in drop]


def random_effects_shrinkage(
    estimates: Sequence[float], std_errors: Sequence[float]
) -> tuple[np.ndarray, float, float]:
    """Empirical-Bayes partial pooling of k noisy estimates (DerSimonian & Laird, 1986).

    The between-estimate variance τ² is the method-of-moments estimate from Cochran's Q; each estimate
    is shrunk toward the random-effects mean μ by B_i = s_i² / (s_i² + τ²). Returns (posterior means,
    μ, τ²). With τ² = 0 every estimate becomes μ, the inverse-variance weighted mean.
    """
    est, se = np.asarray(estimates, dtype=float), np.asarray(std_errors, dtype=float)
    if est.shape != se.shape or est.ndim != 1 or len(est) < 2:
        raise ValueError(f"need ≥ 2 estimates with one standard error each, got {est.shape} and {se.shape}")
    if not (np.isfinite(est).all() and np.isfinite(se).all() and (se > 0).all()):
        raise ValueError("estimates must be finite and standard errors finite and positive")
    v = se**2
    w = 1.0 / v
    fixed = float(np.sum(w * est) / w.sum())
    q = float(np.sum(w * (est - fixed) ** 2))
    tau2 = max(0.0, (q - (len(est) - 1)) / (w.sum() - np.sum(w**2) / w.sum()))
    w_re = 1.0 / (v + tau2)
    mu = float(np.sum(w_re * est) / w_re.sum())
    shrink = v / (v + tau2)
    return (1.0 - shrink) * est + shrink * mu, mu, tau2


class BaselineOutcomeModel(BaseEstimator):
    """P(outcome without contact | x): a LightGBM classifier on untreated rows.

    Every customer *not* treated in a past campaign — control and holdout arms, and everyone outside
    the campaign's audience — shows the organic outcome over the campaign window, so the baseline μ₀
    of the uplift learners can be fitted on many more rows than the control arms hold. Give it the
    window length and calendar columns as features: the organic rate depends on both.
    """

    def __init__(
        self,
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 400,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> BaselineOutcomeModel:
        Xf = _as_frame(X).reset_index(drop=True)
        y = np.asarray(y, dtype=float)
        if len(y) != len(Xf) or not np.isin(y, [0.0, 1.0]).all():
            raise ValueError(f"y must be {len(Xf)} values in {{0, 1}}")
        self.feature_names_ = _model_columns(Xf)
        self.categories_ = _categories(Xf, self.feature_names_)
        self.model_ = lgb.LGBMClassifier(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
            random_state=self.random_state, n_jobs=1, deterministic=True, force_row_wise=True, verbose=-1,
        ).fit(_encode(Xf, self.feature_names_, self.categories_), y)  # fmt: skip
        return self

    def predict(self, X: Any) -> np.ndarray:
        """P(outcome = 1 | x) without contact."""
        if not hasattr(self, "model_"):
            raise RuntimeError("BaselineOutcomeModel is not fitted; call fit(X, y) first")
        Xe = _encode(_as_frame(X).reset_index(drop=True), self.feature_names_, self.categories_)
        return self.model_.predict_proba(Xe)[:, 1]


class ChannelUpliftModel(_LGBMUplift):
    """Uplift per (customer, channel) = channel scale k_c × pooled responsiveness r(x).

    Channels share one notion of *who responds* (alive, lapsing, reachable customers) but differ in
    *how much*; past campaigns per channel are too small to learn both separately. So:

    1. each channel's randomised difference in means ū_c sets provisional scales s_c = max(ū_c, 0);
    2. an X-learner pooled over every channel's units learns r(x) from the channel-normalised imputed
       effects ``(Y₁ − μ₀(x)) / s_c`` and ``(μ₁(x) − Y₀) / s_c`` weighted by s_c² — the least-squares
       fit of ``τ_c(x) = s_c · r(x)``, so channels whose effect is near zero add no noise. μ₀ is the
       ``baseline`` when given (see :class:`BaselineOutcomeModel`), else a control-arm model; halves
       are combined by ``weighting`` as in :class:`XLearner`;
    3. each channel's scale is re-estimated on r's units, k_c = (mean of Y − μ₀ treated − control) /
       mean r over c's units, and with ≥ 3 channels partially pooled across channels
       (``channel_pooling="empirical_bayes"``, :func:`random_effects_shrinkage`): a channel measured on
       few or noisy campaigns borrows from the others instead of trusting its own noise.

    ``predict(X, channel) = k_c · max(r(x), 0)``. Fitted: ``channel_mean_`` (ū_c), ``channel_n_``
    (treated, control units), ``channel_raw_scale_`` and ``channel_scale_`` (k_c before and after
    pooling), ``channel_scale_se_``.
    """

    def __init__(
        self,
        outcome: Outcome = "binary",
        n_estimators: int = 100,
        learning_rate: float = 0.03,
        num_leaves: int = 7,
        min_child_samples: int = 400,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        weighting: Literal["propensity", "arm_size"] = "arm_size",
        channel_pooling: Literal["empirical_bayes", "none"] = "empirical_bayes",
        random_state: int = 0,
    ) -> None:
        super().__init__(
            outcome, n_estimators, learning_rate, num_leaves, min_child_samples, subsample,
            colsample_bytree, reg_lambda, random_state,
        )  # fmt: skip
        self.weighting = weighting
        self.channel_pooling = channel_pooling

    def fit(self, X: Any, y: Any, treatment: Any, channel: Any, baseline: Any = None) -> ChannelUpliftModel:
        """Fit on stacked campaign units; ``baseline`` is μ₀ per unit (optional, ideally cross-fitted)."""
        if self.weighting not in ("propensity", "arm_size"):
            raise ValueError(f"weighting must be 'propensity' or 'arm_size', got {self.weighting!r}")
        if self.channel_pooling not in ("empirical_bayes", "none"):
            raise ValueError(
                f"channel_pooling must be 'empirical_bayes' or 'none', got {self.channel_pooling!r}"
            )
        Xe, y, w = self._prepare_fit(X, y, treatment)
        ch = np.asarray(channel, dtype=object).astype(str)
        if len(ch) != len(y):
            raise ValueError(f"channel has {len(ch)} rows, X has {len(y)}")
        mu0 = _baseline_array(baseline, len(y))
        self._fit_channel_means(y, w, ch)
        s = np.array([max(self.channel_mean_.get(c, 0.0), 0.0) for c in ch])
        if not (s > 0).any():
            s = np.where(np.isin(ch, list(self.channel_mean_)), 1.0, 0.0)  # no positive channel: unscaled
        t, c = w == 1, w == 0
        self.model_treatment_ = self._outcome_model(1).fit(Xe[t], y[t])
        if mu0 is None:
            self.model_control_ = self._outcome_model(2).fit(Xe[c], y[c])
            mu0 = self._mean(self.model_control_, Xe)
        t1, c0 = t & (s > 0), c & (s > 0)
        d1 = (y[t1] - mu0[t1]) / s[t1]
        d0 = (self._mean(self.model_treatment_, Xe[c0]) - y[c0]) / s[c0]
        self.effect_treated_ = self._effect_model(3).fit(Xe[t1], d1, sample_weight=s[t1] ** 2)
        self.effect_control_ = self._effect_model(4).fit(Xe[c0], d0, sample_weight=s[c0] ** 2)
        e = float(w[s > 0].mean())
        self.g_ = e if self.weighting == "propensity" else 1.0 - e
        self._fit_channel_scales(np.maximum(self._responsiveness(Xe), 0.0), y - mu0, w, ch)
        return self

    def _fit_channel_means(self, y: np.ndarray, w: np.ndarray, ch: np.ndarray) -> None:
        self.channel_mean_: dict[str, float] = {}
        self.channel_n_: dict[str, tuple[int, int]] = {}
        for c in sorted(set(ch)):
            m = ch == c
            t, k = y[m & (w == 1)], y[m & (w == 0)]
            if len(t) < 2 or len(k) < 2:
                continue
            self.channel_mean_[c] = float(t.mean() - k.mean())
            self.channel_n_[c] = (len(t), len(k))

    def _fit_channel_scales(self, r: np.ndarray, resid: np.ndarray, w: np.ndarray, ch: np.ndarray) -> None:
        est, se = {}, {}
        for c in self.channel_mean_:
            m = ch == c
            a, b = resid[m & (w == 1)], resid[m & (w == 0)]
            scale = max(float(r[m].mean()), 1e-9)
            est[c] = float(a.mean() - b.mean()) / scale
            se[c] = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))) / scale
        names = list(est)
        self.channel_raw_scale_ = est
        self.channel_scale_se_ = se
        self.channel_scale_ = dict(est)
        usable = [c for c in names if se[c] > 0]
        if self.channel_pooling == "empirical_bayes" and len(usable) >= 3:
            post, _, _ = random_effects_shrinkage([est[c] for c in usable], [se[c] for c in usable])
            self.channel_scale_.update(dict(zip(usable, post.tolist(), strict=True)))

    def _responsiveness(self, Xe: pd.DataFrame) -> np.ndarray:
        return self.g_ * self.effect_control_.predict(Xe) + (1 - self.g_) * self.effect_treated_.predict(Xe)

    def responsiveness(self, X: Any) -> np.ndarray:
        """r(x): how strongly each row responds to contact, on the scale shared by all channels."""
        if not hasattr(self, "effect_treated_"):
            raise RuntimeError("ChannelUpliftModel is not fitted; call fit(X, y, treatment, channel) first")
        return self._responsiveness(self._prepare_predict(X))

    @property
    def channels_(self) -> list[str]:
        return sorted(self.channel_mean_)

    def predict(self, X: Any, channel: str) -> np.ndarray:
        """Estimated uplift of contacting each row on ``channel``."""
        if not hasattr(self, "effect_treated_"):
            raise RuntimeError("ChannelUpliftModel is not fitted; call fit(X, y, treatment, channel) first")
        if channel not in self.channel_mean_:
            raise ValueError(f"no past campaign on channel {channel!r}; known: {self.channels_}")
        return self.channel_scale_[channel] * np.maximum(self.responsiveness(X), 0.0)

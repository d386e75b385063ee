"""Training runs end to end: training set → BTYD features → fit → evaluate vs baselines → track → gate.

``fit_classifier`` / ``fit_clv`` are pure (frames in, fitted models and metrics out) so tests and
notebooks can call them without MLflow; ``run_classifier`` / ``run_clv`` add tracking, registration and
the promotion gate. The CLI (``siyu train``) is a thin layer over the ``run_*`` functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training import btyd_baseline as bb
from training.classifiers import (
    LGBMCalibratedClassifier,
    RFMRuleClassifier,
    lgbm_from_config,
    logistic_baseline,
    recency_weights,
    to_logistic_input,
)
from training.config import LABEL_COLUMNS, REGISTERED_NAMES, ModelKind, TrainingConfig
from training.evaluate import (
    classifier_metrics,
    clv_decile_plot,
    clv_decile_table,
    clv_metrics,
    lift_table,
    reliability_plot,
)
from training.explain import SUMMARY_ROWS, importance, reason_codes, sample_rows, shap_values, summary_plot

if TYPE_CHECKING:
    from features.training_set import SnapshotCache

KEYS = ("customer_id", "cutoff")
Echo = Callable[[str], None]


def _noop(_: str) -> None:
    return None


# ------------------------------------------------------------------------------------ training set


def load_training_frame(data_dir: str | Path, cutoffs: list[dt.date], cfg: TrainingConfig,
                        progress: bool = True, cache: SnapshotCache | None = None) -> pd.DataFrame:
    """Stacked snapshots × labels for ``cutoffs`` from the feature pipeline (keys customer_id, cutoff)."""
    from features.training_set import build_training_set

    df = build_training_set(data_dir, cutoffs, churn_horizon_days=cfg.horizon_days, progress=progress,
                            cache=cache)
    missing = [c for c in KEYS if c not in df.columns]
    if missing:
        raise ValueError(f"training set lacks key columns {missing}")
    # The frame is ours (just built): convert in place and sort into one new frame, not three.
    df["cutoff"] = _as_cutoff(df["cutoff"])
    return df.sort_values(list(KEYS), kind="stable", ignore_index=True)


def load_classifier_frame(data_dir: str | Path, cfg: TrainingConfig, progress: bool = True,
                          cache: SnapshotCache | None = None) -> tuple[pd.DataFrame, list[bb.BTYDFit]]:
    """The training frame of ``cfg.model`` (churn or repurchase_7d) with its BTYD features, built cutoff
    by cutoff so that only the labelled rows of all cutoffs are ever held together.

    Equals :func:`load_training_frame` + :func:`training.btyd_baseline.add_btyd_features` (when enabled)
    restricted to the rows that have the model's label, the only rows any fold uses: each cutoff's
    BTYD fit still sees all of that cutoff's customers. At a million customers this is the difference
    between holding every cutoff's snapshot twice and holding the labelled rows once.
    """
    from features.training_set import iter_training_set

    label = LABEL_COLUMNS[cfg.model]
    rank = {pd.Timestamp(c): i for i, cs in enumerate(cfg.plan().folds().values()) for c in cs}
    parts: dict[pd.Timestamp, pd.DataFrame] = {}
    fits = []
    cutoffs = cfg.plan().all_cutoffs()
    for snap in iter_training_set(Path(data_dir), cutoffs, cfg.horizon_days, progress, cache=cache):
        if label not in snap.columns:
            raise ValueError(f"training set has no {label} column")
        snap["cutoff"] = _as_cutoff(snap["cutoff"])
        if not snap["customer_id"].is_monotonic_increasing:  # engines return it sorted: no copy then
            snap = snap.sort_values("customer_id", kind="stable", ignore_index=True)
        cutoff = snap["cutoff"].iloc[0]
        rows = snap[snap[label].notna()]
        if cfg.btyd.enabled:
            # Fitted on every customer of the cutoff; the features (row by row) for the labelled rows.
            fit = bb.fit_btyd(snap, cutoff, cfg.btyd.penalizers)
            feats = bb.btyd_feature_frame(fit, rows, cfg.btyd.horizons_days, cfg.btyd.clv_months,
                                          cfg.btyd.monthly_discount_rate)
            for c in feats.columns:
                rows[c] = feats[c].to_numpy()
            fits.append(fit)
        parts[cutoff] = rows
        del snap, rows
    # Fold by fold, then cutoff by cutoff, each by customer: a fold is one block of rows (taken as a view
    # by fit_classifier), and the frame is one concatenation of the cutoffs, never sorted as a whole.
    order = sorted(parts, key=lambda c: (rank[c], c))
    df = pd.concat([parts.pop(c) for c in order], ignore_index=True)
    return df, fits


def _as_cutoff(s: pd.Series) -> pd.Series:
    """Cutoffs as naive dates at midnight (the business-day label of the cutoff)."""
    s = pd.to_datetime(s)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
    return s.dt.normalize()


def model_features(df: pd.DataFrame) -> list[str]:
    """Feature columns: the pipeline's features plus the BTYD features added here."""
    from features.training_set import feature_columns

    base = [c for c in feature_columns(df) if not c.startswith("label_")]
    extra = [c for c in df.columns if c.startswith("btyd_") and c not in base and c not in bb.BTYD_INPUTS
             and df[c].dtype != object]
    return [*base, *extra]


def frame_fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 of a frame's content (row order and columns included)."""
    h = hashlib.sha256(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------- classifiers


@dataclass
class ClassifierOutcome:
    """A fitted classifier with its evaluation against every baseline on the evaluation cutoff."""

    kind: ModelKind
    model: LGBMCalibratedClassifier
    features: list[str]
    metrics: dict[str, dict[str, float]]  # predictor name -> metrics
    eval_frame: pd.DataFrame  # keys, label and every predictor's probability
    fold_sizes: dict[str, int]
    eval_X: pd.DataFrame  # evaluation rows' features (for explanations)
    btyd_fits: list[bb.BTYDFit] = field(default_factory=list)

    @property
    def siyu(self) -> dict[str, float]:
        return self.metrics["siyu_lgbm"]


def _fold(df: pd.DataFrame, label: str, cutoffs: list[dt.date]) -> pd.DataFrame:
    """The labelled rows of ``cutoffs``; a view when they are one block of rows (a frame ordered by
    fold, as :func:`load_classifier_frame` builds it), so a million-customer fold is not copied."""
    want = pd.to_datetime(pd.Series(cutoffs))
    mask = (df["cutoff"].isin(want) & df[label].notna()).to_numpy()
    idx = np.flatnonzero(mask)
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:
        return df.iloc[idx[0]: idx[-1] + 1]
    return df[mask]


def _prob_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return classifier_metrics(y, np.clip(p, 0.0, 1.0)).as_dict()


def fit_classifier(
    df: pd.DataFrame,
    cfg: TrainingConfig,
    fits: list[bb.BTYDFit] | None = None,
    truth_scores: dict[str, np.ndarray] | None = None,
    echo: Echo = _noop,
    features: list[str] | None = None,
) -> ClassifierOutcome:
    """Fit the LightGBM classifier of ``cfg.model`` and evaluate it and the baselines on the later cutoff.

    ``truth_scores`` (synthetic worlds only) maps a name to a probability per evaluation row — e.g. the
    BTYD predictor with the generator's true parameters, or the latent-truth oracle — to be evaluated
    beside everything else.
    """
    kind = cfg.model
    if kind is ModelKind.clv:
        raise ValueError("fit_classifier trains churn or repurchase_7d; use fit_clv for clv")
    label, plan, horizon = LABEL_COLUMNS[kind], cfg.plan(), cfg.effective_horizon_days()
    if label not in df.columns:
        raise ValueError(f"training set has no {label} column")
    features = features if features is not None else model_features(df)
    folds = {
        "train": _fold(df, label, plan.train_cutoffs()),
        "early_stopping": _fold(df, label, plan.early_stopping),
        "calibration": _fold(df, label, plan.calibration),
        "evaluation": _fold(df, label, [plan.evaluation]),
    }
    empty = [k for k, v in folds.items() if v.empty]
    if empty:
        raise ValueError(f"{kind.value}: no labelled rows in folds {empty}; check the cutoffs vs the data")
    tr, es, ca, ev = (folds[k] for k in ("train", "early_stopping", "calibration", "evaluation"))
    echo(f"  {kind.value}: train {len(tr):,} rows / {tr['cutoff'].nunique()} cutoffs, "
         f"early-stop {len(es):,}, calibrate {len(ca):,}, evaluate {len(ev):,} (cutoff {plan.evaluation})")
    model = lgbm_from_config(cfg.lightgbm, cfg.calibration, cfg.seed)
    # The model reads its features by name, so later folds go in whole (no copy of their columns).
    model.fit(tr[features], tr[label].to_numpy(), sample_weight=recency_weights(tr["cutoff"],
              cfg.recency_half_life_months), eval_set=(es, es[label].to_numpy()),
              calib_set=(ca, ca[label].to_numpy()))
    y = ev[label].to_numpy().astype(int)
    raw = model.predict_raw(ev)  # the trees once; calibrated and not, as predict_proba does
    probs: dict[str, np.ndarray] = {"siyu_lgbm": model.calibrator_.predict(raw),
                                    "siyu_lgbm_uncalibrated": raw}
    # Baselines, all fitted on the training fold only.
    rfm = RFMRuleClassifier(*_rfm_columns(df)).fit(tr, tr[label].to_numpy())
    probs["rfm_rule"] = rfm.predict_proba(ev)[:, 1]
    fold = sample_rows(tr, cfg.baseline_max_rows, cfg.seed)
    logit = logistic_baseline(fold[features], seed=cfg.seed).fit(to_logistic_input(fold[features]),
                                                                 fold[label].to_numpy())
    probs["logistic"] = logit.predict_proba(to_logistic_input(ev[features]))[:, 1]
    eval_fit = _fit_for(fits, plan.evaluation) if fits else bb.fit_btyd(ev, plan.evaluation,
                                                                        cfg.btyd.penalizers)
    if eval_fit.bg is not None:
        probs.update(_btyd_predictors(eval_fit.bg, ev, horizon, kind, prefix="btyd"))
    for name, p in (truth_scores or {}).items():
        probs[name] = np.asarray(p, dtype=float)
    metrics = {name: _prob_metrics(y, p) for name, p in probs.items()}
    eval_frame = ev[list(KEYS)].reset_index(drop=True).assign(label=y)
    for name, p in probs.items():
        eval_frame[f"p_{name}"] = p
    return ClassifierOutcome(kind, model, features, metrics, eval_frame,
                             {k: len(v) for k, v in folds.items()}, ev[features].reset_index(drop=True),
                             list(fits or []))


def _rfm_columns(df: pd.DataFrame) -> tuple[str, str, str]:
    """Recency, frequency, monetary columns of the feature snapshot (features.snapshot names them)."""
    cols = ("recency_days", "n_orders", "total_net")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"the training set lacks the RFM columns {missing}")
    return cols


def _fit_for(fits: list[bb.BTYDFit], cutoff: dt.date) -> bb.BTYDFit:
    ts = pd.Timestamp(cutoff)
    for f in fits:
        if pd.Timestamp(f.cutoff) == ts:
            return f
    raise KeyError(f"no BTYD fit for cutoff {cutoff}")


def _btyd_predictors(bg: Any, rows: pd.DataFrame, horizon_days: int, kind: ModelKind,
                     prefix: str) -> dict[str, np.ndarray]:
    """BTYD baselines as probabilities: P(≥1 purchase in H) ≈ 1 − exp(−E[X(H)]) and P(alive)."""
    e = bb.expected_purchases(bg, rows, horizon_days)
    p_buy = 1.0 - np.exp(-e)
    alive = bb.p_alive(bg, rows)
    if kind is ModelKind.churn:
        return {f"{prefix}_expected_purchases": 1.0 - p_buy, f"{prefix}_p_alive": 1.0 - alive}
    return {f"{prefix}_expected_purchases": p_buy, f"{prefix}_p_alive": alive}


def true_param_scores(truth_params: dict[str, float], ev_rows: pd.DataFrame, horizon_days: int,
                      kind: ModelKind) -> dict[str, np.ndarray]:
    """The BTYD predictor with the generator's true (r, α, a, b): expected purchases and P(alive)."""
    bg = bb.true_param_model(*(float(truth_params[k]) for k in ("r", "alpha", "a", "b")))
    return _btyd_predictors(bg, ev_rows, horizon_days, kind, prefix="btyd_true_params")


# --------------------------------------------------------------------------------------------- CLV


@dataclass
class CLVOutcome:
    """The fitted BTYD CLV bundle and its check against realised future spend."""

    bundle: bb.BTYDBundle
    fit: bb.BTYDFit
    metrics: dict[str, float]
    deciles: pd.DataFrame
    eval_frame: pd.DataFrame


def fit_clv(rows: pd.DataFrame, cfg: TrainingConfig, echo: Echo = _noop) -> CLVOutcome:
    """Fit BG/NBD + Gamma-Gamma on the CLV cutoff's snapshot and compare with the spend that followed."""
    label = LABEL_COLUMNS[ModelKind.clv]
    s = cfg.clv
    rows = rows[rows["cutoff"] == pd.Timestamp(s.cutoff)]
    if rows.empty:
        raise ValueError(f"clv: no snapshot rows at cutoff {s.cutoff}")
    fit = bb.fit_btyd(rows, s.cutoff, cfg.btyd.penalizers)
    if fit.bg is None or fit.gg is None:
        raise RuntimeError(f"clv: BTYD fit failed at {s.cutoff}: {'; '.join(fit.notes)}")
    bundle = bb.BTYDBundle(fit.bg, fit.gg, s.months, s.monthly_discount_rate,
                           tuple(cfg.btyd.horizons_days))
    ev = rows[rows[label].notna()]
    # Undiscounted expected spend over the label horizon is what the realised spend measures.
    horizon_months = max(1, round(s.horizon_days / 30.4375))
    check = bb.BTYDBundle(fit.bg, fit.gg, horizon_months, 0.0, ()).predict_frame(ev)
    predicted = check["clv"].fillna(0.0).to_numpy()
    realised = ev[label].to_numpy(dtype=float)
    metrics = clv_metrics(predicted, realised).as_dict()
    echo(f"  clv: fitted on {fit.n_rows:,} buyers at {s.cutoff}; Spearman {metrics['spearman']:.3f}, "
         f"aggregate error {metrics['aggregate_error']:+.1%}")
    eval_frame = ev[list(KEYS)].reset_index(drop=True).assign(predicted=predicted, realised=realised)
    return CLVOutcome(bundle, fit, metrics, clv_decile_table(predicted, realised), eval_frame)


# -------------------------------------------------------------------------------------- tracking


@dataclass
class RunSummary:
    """What one ``siyu train`` model run produced."""

    kind: ModelKind
    run_id: str
    version: str
    alias: str
    reason: str
    metrics: dict[str, dict[str, float]]
    eval_frame: pd.DataFrame


def _thresholds(cfg: TrainingConfig) -> Any:
    from training import tracking

    return tracking.GateThresholds(**cfg.promotion.model_dump())


def run_classifier(outcome: ClassifierOutcome, cfg: TrainingConfig, data_fingerprint: str,
                   manifest: dict[str, Any], echo: Echo = _noop) -> RunSummary:
    """Log a fitted classifier run (config, data stamp, metrics, figures, model), register and gate it."""
    from training import tracking

    kind = outcome.kind
    name = REGISTERED_NAMES[kind]
    tags = {"model": kind.value, "data_fingerprint": data_fingerprint, "seed": cfg.seed,
            "evaluation_cutoff": cfg.plan().evaluation.isoformat()}
    uri = tracking.tracking_uri(cfg.tracking_uri)
    with tracking.start_run(f"{cfg.experiment_prefix}-{kind.value}", run_name=f"{kind.value}-{cfg.seed}",
                            tags=tags, uri=uri) as run, tempfile.TemporaryDirectory() as tmp:
        run.log_config(cfg)
        run.log_data_fingerprint(data_fingerprint, manifest)
        run.log_params({"n_features": len(outcome.features), "best_iteration": outcome.model.best_iteration_,
                        **{f"rows_{k}": v for k, v in outcome.fold_sizes.items()}})
        for pred, m in outcome.metrics.items():
            run.log_metrics({f"{pred}.{k}": v for k, v in m.items()})
        run.log_metrics({f"eval_{k}": v for k, v in outcome.siyu.items()})
        t = Path(tmp)
        ef = outcome.eval_frame
        probs = {n: ef[f"p_{n}"].to_numpy() for n in ("siyu_lgbm", "logistic", "rfm_rule")}
        run.log_figure(reliability_plot(ef["label"], probs, t / f"reliability_{kind.value}.png",
                                        title=f"{kind.value}: reliability at {cfg.plan().evaluation}"))
        ev_X = sample_rows(outcome.eval_X, SUMMARY_ROWS, cfg.seed)  # a summary needs a sample
        contrib = shap_values(outcome.model, ev_X)
        run.log_figure(summary_plot(contrib, ev_X, t / f"shap_{kind.value}.png", title=f"{kind.value}: SHAP"))
        run.log_frame(importance(contrib).rename("mean_abs_shap").rename_axis("feature").reset_index(),
                      "tables/shap_importance.csv")
        top = reason_codes(contrib, k=cfg.top_k_reasons)["reason_1"].value_counts().rename_axis("feature")
        run.log_frame(top.rename("customers").reset_index(), "tables/top_reason_counts.csv")
        run.log_frame(lift_table(ef["label"], ef["p_siyu_lgbm"]), "tables/lift_gains.csv")
        run.log_frame(pd.DataFrame(outcome.metrics).T.reset_index(names="predictor"), "tables/metrics.csv")
        if outcome.btyd_fits:
            run.log_frame(pd.DataFrame([f.report() for f in outcome.btyd_fits]), "tables/btyd_fits.csv")
            pens = [f.bg.penalizer_used_ for f in outcome.btyd_fits if f.bg is not None]
            run.log_metrics({"btyd_fits_failed": sum(f.bg is None for f in outcome.btyd_fits),
                             "btyd_max_penalizer": max(pens) if pens else float("nan")})
        pred_path = t / "eval_predictions.parquet"
        ef.to_parquet(pred_path, index=False)
        run.log_file(pred_path, "predictions")
        logged = run.log_classifier(outcome.model)
        decision = tracking.register_and_gate(
            name, logged, outcome.siyu, _thresholds(cfg), run_id=run.run_id, uri=uri,
            tags={"data_fingerprint": data_fingerprint,
                  "evaluation_cutoff": cfg.plan().evaluation.isoformat()})
    echo(f"  {kind.value}: {name} v{decision.version} → {decision.alias} ({decision.reason})")
    return RunSummary(kind, run.run_id, decision.version, decision.alias, decision.reason, outcome.metrics,
                      outcome.eval_frame)


def run_clv(outcome: CLVOutcome, cfg: TrainingConfig, data_fingerprint: str, manifest: dict[str, Any],
            echo: Echo = _noop) -> RunSummary:
    """Log the CLV run (parameters, decile check, plot, JSON model), register and gate it."""
    from training import tracking

    tags = {"model": "clv", "data_fingerprint": data_fingerprint, "clv_cutoff": cfg.clv.cutoff.isoformat()}
    uri = tracking.tracking_uri(cfg.tracking_uri)
    with tracking.start_run(f"{cfg.experiment_prefix}-clv", run_name=f"clv-{cfg.seed}", tags=tags,
                            uri=uri) as run, tempfile.TemporaryDirectory() as tmp:
        run.log_config(cfg.for_model(ModelKind.clv))
        run.log_data_fingerprint(data_fingerprint, manifest)
        run.log_params({f"bg_{k}": v for k, v in outcome.fit.bg.params_.items()})
        run.log_params({f"gg_{k}": v for k, v in outcome.fit.gg.params_.items()})
        run.log_metrics({**{f"eval_{k}": v for k, v in outcome.metrics.items()},
                         "bg_penalizer_used": outcome.fit.bg.penalizer_used_,
                         "gg_penalizer_used": outcome.fit.gg.penalizer_used_})
        if outcome.fit.notes:
            run.set_tags({"btyd_notes": " | ".join(outcome.fit.notes)[:5000]})
        t = Path(tmp)
        run.log_frame(outcome.deciles, "tables/clv_deciles.csv")
        ef = outcome.eval_frame
        run.log_figure(clv_decile_plot(ef["predicted"], ef["realised"], t / "clv_deciles.png",
                                       title=f"CLV deciles at {cfg.clv.cutoff}"))
        pred_path = t / "eval_predictions.parquet"
        ef.to_parquet(pred_path, index=False)
        run.log_file(pred_path, "predictions")
        logged = run.log_btyd(outcome.bundle.to_dict())
        decision = tracking.register_and_gate(REGISTERED_NAMES[ModelKind.clv], logged, outcome.metrics,
                                              _thresholds(cfg), run_id=run.run_id, uri=uri,
                                              tags={"data_fingerprint": data_fingerprint})
    echo(f"  clv: siyu-clv v{decision.version} → {decision.alias} ({decision.reason})")
    return RunSummary(ModelKind.clv, run.run_id, decision.version, decision.alias, decision.reason,
                      {"btyd_clv": outcome.metrics}, outcome.eval_frame)

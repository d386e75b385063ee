"""Model evaluation: ranking and calibration metrics for classifiers, decile checks for CLV.

All functions are pure (arrays in, numbers/frames/figures out); logging them is tracking's job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

ECE_BINS = 15


def _check_binary(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    problems = []
    if y.shape != p.shape:
        problems.append(f"y_true has {y.size} values but y_prob has {p.size}")
    else:
        if np.isnan(y).any():
            problems.append(f"{int(np.isnan(y).sum())} missing labels")
        if not np.isin(y[~np.isnan(y)], (0.0, 1.0)).all():
            problems.append("labels must be 0/1")
        if np.isnan(p).any():
            problems.append(f"{int(np.isnan(p).sum())} missing probabilities")
        if ((p < 0) | (p > 1)).any():
            problems.append(f"{int(((p < 0) | (p > 1)).sum())} probabilities outside [0, 1]")
    if problems:
        raise ValueError("cannot evaluate: " + "; ".join(problems))
    return y, p


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins: sum over bins of (bin share) * |mean(y) - mean(p)|."""
    y, p = _check_binary(y_true, y_prob)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    return float(np.abs(sum_y - sum_p).sum() / len(y))


def lift_table(y_true: np.ndarray, score: np.ndarray, n_groups: int = 10) -> pd.DataFrame:
    """Lift and cumulative gains by score decile (decile 1 = highest scores).

    Ties are broken by position after a stable sort so that the deciles have equal sizes.
    """
    s = np.asarray(score, dtype=float).ravel()
    y, _ = _check_binary(y_true, np.zeros_like(s))
    if np.isnan(s).any():
        raise ValueError(f"score has {int(np.isnan(s).sum())} missing values")
    order = np.argsort(-s, kind="stable")
    groups = np.empty(len(y), dtype=int)
    groups[order] = np.arange(len(y)) * n_groups // len(y) + 1
    df = pd.DataFrame({"decile": groups, "y": y})
    tab = df.groupby("decile")["y"].agg(n="size", positives="sum").reset_index()
    base = y.mean() if len(y) else np.nan
    tab["rate"] = tab["positives"] / tab["n"]
    tab["lift"] = tab["rate"] / base if base > 0 else np.nan
    total = tab["positives"].sum()
    tab["cum_gain"] = tab["positives"].cumsum() / total if total > 0 else np.nan
    tab["cum_lift"] = (tab["positives"].cumsum() / tab["n"].cumsum()) / base if base > 0 else np.nan
    return tab


@dataclass(frozen=True)
class ClassifierMetrics:
    """Headline metrics of a probabilistic binary classifier on one evaluation set."""

    n: int
    base_rate: float
    auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float
    lift_top10: float
    gain_top10: float
    gain_top20: float
    gain_top30: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat metric dict, keys optionally prefixed (e.g. ``"eval_"``)."""
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


def classifier_metrics(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = ECE_BINS) -> ClassifierMetrics:
    """AUC, PR-AUC, log loss, Brier, ECE and top-decile lift/gains of ``y_prob`` against ``y_true``."""
    y, p = _check_binary(y_true, y_prob)
    if len(np.unique(y)) < 2:
        raise ValueError("cannot evaluate: the evaluation set has a single class")
    tab = lift_table(y, p)
    return ClassifierMetrics(
        n=len(y),
        base_rate=float(y.mean()),
        auc=float(roc_auc_score(y, p)),
        pr_auc=float(average_precision_score(y, p)),
        log_loss=float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        brier=float(brier_score_loss(y, p)),
        ece=expected_calibration_error(y, p, n_bins),
        lift_top10=float(tab["lift"].iloc[0]),
        gain_top10=float(tab["cum_gain"].iloc[0]),
        gain_top20=float(tab["cum_gain"].iloc[1]),
        gain_top30=float(tab["cum_gain"].iloc[2]),
    )


def ranking_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """AUC of an arbitrary score (not necessarily a probability), e.g. a baseline rule."""
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(score, dtype=float)
    if np.isnan(s).any():
        raise ValueError(f"score has {int(np.isnan(s).sum())} missing values")
    return float(roc_auc_score(y, s))


def reliability_curve(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Per-bin mean prediction, observed rate and count (empty bins dropped)."""
    y, p = _check_binary(y_true, y_prob)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    df = pd.DataFrame({"bin": bins, "y": y, "p": p})
    out = df.groupby("bin").agg(mean_pred=("p", "mean"), observed=("y", "mean"), n=("y", "size"))
    return out.reset_index()


def reliability_plot(
    y_true: np.ndarray,
    probs: dict[str, np.ndarray],
    path: str | Path,
    title: str = "Reliability",
    n_bins: int = ECE_BINS,
) -> Path:
    """Reliability diagram (one line per model) plus a histogram of predictions, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axh) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for name, p in probs.items():
        curve = reliability_curve(y_true, p, n_bins)
        ece = expected_calibration_error(y_true, p, n_bins)
        ax.plot(curve["mean_pred"], curve["observed"], "o-", ms=4, label=f"{name} (ECE {ece:.3f})")
        axh.hist(np.asarray(p, dtype=float), bins=n_bins, range=(0, 1), histtype="step", label=name)
    ax.set_ylabel("observed rate")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    axh.set_xlabel("predicted probability")
    axh.set_ylabel("customers")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- CLV


@dataclass(frozen=True)
class CLVMetrics:
    """Agreement of predicted with realised future spend."""

    n: int
    spearman: float
    predicted_total: float
    realised_total: float
    aggregate_error: float  # (predicted − realised) / realised, over all customers
    top_decile_share: float  # share of realised spend captured by the top predicted decile
    mae: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat metric dict, keys optionally prefixed."""
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


def clv_decile_table(predicted: np.ndarray, realised: np.ndarray, n_groups: int = 10) -> pd.DataFrame:
    """Mean predicted vs realised future spend by predicted decile (decile 1 = highest predicted)."""
    pred = np.asarray(predicted, dtype=float)
    real = np.asarray(realised, dtype=float)
    if pred.shape != real.shape:
        raise ValueError(f"predicted has {pred.size} values but realised has {real.size}")
    bad = np.isnan(pred) | np.isnan(real)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} rows with missing predicted or realised spend")
    order = np.argsort(-pred, kind="stable")
    groups = np.empty(len(pred), dtype=int)
    groups[order] = np.arange(len(pred)) * n_groups // len(pred) + 1
    df = pd.DataFrame({"decile": groups, "predicted": pred, "realised": real})
    tab = df.groupby("decile").agg(
        n=("predicted", "size"),
        predicted_mean=("predicted", "mean"),
        realised_mean=("realised", "mean"),
        predicted_sum=("predicted", "sum"),
        realised_sum=("realised", "sum"),
    )
    tab["realised_share"] = tab["realised_sum"] / max(real.sum(), 1e-12)
    return tab.reset_index()


def clv_metrics(predicted: np.ndarray, realised: np.ndarray) -> CLVMetrics:
    """Spearman, aggregate relative error, top-decile capture and MAE of CLV predictions."""
    tab = clv_decile_table(predicted, realised)
    pred = np.asarray(predicted, dtype=float)
    real = np.asarray(realised, dtype=float)
    rho = spearmanr(pred, real).statistic if len(pred) > 1 else np.nan
    total_r = float(real.sum())
    return CLVMetrics(
        n=len(pred),
        spearman=float(rho),
        predicted_total=float(pred.sum()),
        realised_total=total_r,
        aggregate_error=float((pred.sum() - total_r) / total_r) if total_r > 0 else float("nan"),
        top_decile_share=float(tab["realised_share"].iloc[0]),
        mae=float(np.abs(pred - real).mean()),
    )


def clv_decile_plot(
    predicted: np.ndarray, realised: np.ndarray, path: str | Path, title: str = "CLV"
) -> Path:
    """Bar chart of mean predicted vs realised spend per predicted decile, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tab = clv_decile_table(predicted, realised)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = tab["decile"].to_numpy()
    ax.bar(x - 0.2, tab["predicted_mean"], width=0.4, label="predicted")
    ax.bar(x + 0.2, tab["realised_mean"], width=0.4, label="realised")
    ax.set_xlabel("predicted decile (1 = highest)")
    ax.set_ylabel("mean future spend")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

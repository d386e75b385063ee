"""`siyu train ...`: fit, evaluate, track and register the churn, repurchase and CLV models."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

train_app = typer.Typer(
    help="Train churn / repurchase_7d (LightGBM) and BG/NBD + Gamma-Gamma CLV models, "
    "tracked and registered in MLflow.",
    no_args_is_help=True,
)

DataOpt = Annotated[Path, typer.Option(
    "--data", help="siyu data directory (contract tables; truth/ if synthetic).",
    exists=True, file_okay=False)]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Training config YAML "
                                                "(default: the packaged training/configs/default.yaml).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Override the config's seed.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Also write each model's evaluation predictions "
                                             "and metrics here (parquet + JSON).")]


def _load(config: Path | None, seed: int | None) -> Any:
    from training.config import load_config

    return load_config(config, **({"seed": seed} if seed is not None else {}))


def _train(models: list[str], data: Path, config: Path | None, seed: int | None, out: Path | None) -> None:
    from tqdm.auto import tqdm

    from features.io import data_fingerprint
    from features.training_set import SnapshotCache
    from training.config import ModelKind

    cfg = _load(config, seed)
    kinds = [ModelKind.parse(m) for m in models]
    echo = typer.echo
    echo(f"siyu train {'/'.join(k.value for k in kinds)} on {data} (seed {cfg.seed})")
    fingerprint = data_fingerprint(data)
    truth = _truth(data)
    plans = {kind: _cutoffs(cfg.for_model(kind)) for kind in kinds}
    summaries = []
    with tempfile.TemporaryDirectory(prefix="siyu-train-") as tmp:
        # A cutoff two models share is built once; its labelled snapshot waits on disk for the second.
        cache = SnapshotCache(Path(tmp), _shared(plans.values()))
        for kind in tqdm(kinds, desc="models", disable=len(kinds) == 1):
            summary = _train_one(cfg.for_model(kind), plans[kind], data, fingerprint, truth, cache)
            summaries.append(summary)
            if out is not None:
                _write_outcome(summary, out)
    echo("summary:")
    for s in summaries:
        echo(f"  {s.kind.value:14s} v{s.version} {s.alias:10s} run {s.run_id}  {s.reason}")


def _cutoffs(mcfg: Any) -> list[Any]:
    from training.config import ModelKind

    return [mcfg.clv.cutoff] if mcfg.model is ModelKind.clv else mcfg.plan().all_cutoffs()


def _shared(plans: Any) -> frozenset[Any]:
    """Cutoffs more than one model needs."""
    counts = Counter(c for cutoffs in plans for c in set(cutoffs))
    return frozenset(c for c, n in counts.items() if n > 1)


def _train_one(mcfg: Any, cutoffs: list[Any], data: Path, fingerprint: str, truth: Any, cache: Any) -> Any:
    """Build one model's training frame, fit, evaluate, log, register and gate it."""
    from training import pipeline as pl
    from training.config import LABEL_COLUMNS, ModelKind

    kind, echo = mcfg.model, typer.echo
    echo(f"[{kind.value}] building the training set for {len(cutoffs)} cutoffs "
         f"({cutoffs[0]} … {cutoffs[-1]})")
    if kind is ModelKind.clv:
        df = pl.load_training_frame(data, cutoffs, mcfg, cache=cache)
        outcome = pl.fit_clv(df, mcfg, echo=echo)
        return pl.run_clv(outcome, mcfg, fingerprint, _manifest(cutoffs, df, fingerprint), echo=echo)
    # Labelled rows only, with their BTYD features (fitted per cutoff on every customer).
    df, fits = pl.load_classifier_frame(data, mcfg, cache=cache)
    manifest = _manifest(cutoffs, df, fingerprint)
    truth_scores = _truth_scores(truth, df, mcfg, LABEL_COLUMNS[kind]) if truth else None
    echo(f"[{kind.value}] fitting LightGBM + baselines")
    outcome = pl.fit_classifier(df, mcfg, fits, truth_scores, echo=echo)
    del df  # the outcome keeps what logging needs
    _print_table(outcome.metrics, echo)
    return pl.run_classifier(outcome, mcfg, fingerprint, manifest, echo=echo)


def _write_outcome(summary: Any, out: Path) -> None:
    """A model's evaluation predictions and metrics beside each other in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    kind = summary.kind.value
    summary.eval_frame.to_parquet(out / f"{kind}_eval_predictions.parquet", index=False)
    (out / f"{kind}_metrics.json").write_text(json.dumps(
        {"version": summary.version, "alias": summary.alias, "reason": summary.reason,
         "run_id": summary.run_id, "metrics": summary.metrics}, indent=1, sort_keys=True))


def _manifest(cutoffs: list[Any], df: Any, fingerprint: str) -> dict[str, Any]:
    from training import pipeline as pl

    return {"cutoffs": [c.isoformat() for c in cutoffs], "rows": len(df),
            "training_set_sha256": pl.frame_fingerprint(df), "data_fingerprint": fingerprint}


def _truth(data: Path) -> Any:
    if not (data / "truth" / "config.json").exists():
        return None
    from features.synthetic.truth import load_truth

    return load_truth(data)


def _truth_scores(truth: Any, df: Any, cfg: Any, label: str) -> dict[str, Any]:
    """Synthetic worlds only: the true-parameter BTYD predictor and the latent-truth oracle."""
    import pandas as pd

    from features.synthetic.truth import oracle_p_purchase
    from training import pipeline as pl
    from training.config import ModelKind

    plan, horizon = cfg.plan(), cfg.effective_horizon_days()
    ev = df[(df["cutoff"] == pd.Timestamp(plan.evaluation)) & df[label].notna()]
    scores = pl.true_param_scores(truth.config.model_dump(), ev, horizon, cfg.model)
    oracle = oracle_p_purchase(truth, plan.evaluation, horizon).reindex(ev["customer_id"]).to_numpy()
    if pd.isna(oracle).any():
        raise ValueError(f"oracle has no latent state for {int(pd.isna(oracle).sum())} evaluation customers")
    scores["oracle_latent_truth"] = 1.0 - oracle if cfg.model is ModelKind.churn else oracle
    return scores


def _print_table(metrics: dict[str, dict[str, float]], echo: Any) -> None:
    echo(f"  {'predictor':34s} {'AUC':>7s} {'PR-AUC':>7s} {'Brier':>7s} {'ECE':>7s}")
    for name, m in sorted(metrics.items(), key=lambda kv: -kv[1]["auc"]):
        echo(f"  {name:34s} {m['auc']:7.4f} {m['pr_auc']:7.4f} {m['brier']:7.4f} {m['ece']:7.4f}")


@train_app.command("churn")
def churn(data: DataOpt, config: ConfigOpt = None, seed: SeedOpt = None, out: OutOpt = None) -> None:
    """Train the churn classifier (no purchase in the next H days among recently active customers)."""
    _train(["churn"], data, config, seed, out)


@train_app.command("repurchase")
def repurchase(data: DataOpt, config: ConfigOpt = None, seed: SeedOpt = None, out: OutOpt = None) -> None:
    """Train the 7-day repurchase classifier (≥1 purchase in the next 7 days)."""
    _train(["repurchase_7d"], data, config, seed, out)


@train_app.command("clv")
def clv(data: DataOpt, config: ConfigOpt = None, seed: SeedOpt = None, out: OutOpt = None) -> None:
    """Fit the BG/NBD + Gamma-Gamma CLV model and check it against the spend that followed."""
    _train(["clv"], data, config, seed, out)


@train_app.command("all")
def train_all(data: DataOpt, config: ConfigOpt = None, seed: SeedOpt = None, out: OutOpt = None) -> None:
    """Train churn, repurchase_7d and CLV in turn; each run is tracked, registered and gated."""
    _train(["churn", "repurchase_7d", "clv"], data, config, seed, out)


@train_app.command("promote")
def promote(
    model: Annotated[str, typer.Argument(help="churn, repurchase or clv")],
    version: Annotated[str, typer.Option("--version", help="Registered version to make champion.")],
) -> None:
    """Operator override: make a registered version the champion (tagged as a manual promotion)."""
    from training import tracking
    from training.config import REGISTERED_NAMES, ModelKind

    name = REGISTERED_NAMES[ModelKind.parse(model)]
    tracking.promote(name, version)
    typer.echo(f"{name} v{version} is now champion")

"""Nightly batch scoring: feature snapshot at a cutoff → champion models → tiers and actions → parquet.

``siyu score --data DIR --cutoff YYYY-MM-DD --out FILE [--engine duckdb|spark]``

1. the snapshot ``DIR/snapshots/CUTOFF.parquet`` is reused when present, else built by
   :func:`features.snapshot.build_snapshot` (on the same engine) and written there;
2. the champion models are loaded by alias (checksums verified) and bound to the cutoff
   (:class:`serving.scoring.Scorer`, which refits the classifiers' BTYD features on that snapshot);
3. every customer is scored — the boosters compiled to native code (:mod:`training.trees`, cached per
   model version) for large snapshots — in chunks on DuckDB's side of the house (pandas), or in Spark
   ``mapInPandas`` tasks that rebuild the scorer from its JSON payload (LightGBM model text and BTYD
   parameters, no pickled models);
4. :func:`serving.tiering.plan_actions` decides one action per customer against the contact history
   before the cutoff and the persistent global holdout;
5. the SHAP reasons behind the churn risk are computed for the customers who are contacted (TreeSHAP
   costs about three times the scores; nobody reads the reasons of a customer left alone);
6. every row is stamped with the cutoff and the three model versions and the table is written
   atomically (temp file + rename). The same inputs give the same bytes, so a re-run is harmless.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from serving.scoring import Scorer, ScoringConfig, load_champions
from training.registry import Champions

Engine = Literal["duckdb", "spark"]
Explain = Literal["actioned", "all", "none"]
TreesChoice = Literal["auto", "native", "lightgbm"]
#: Columns plan_actions adds, in output order (``channel`` is the action when it contacts, else empty).
DECISION_COLUMNS: tuple[str, ...] = ("tier", "action", "channel", "expected_value", "cost", "reason")
STAMP_COLUMNS: tuple[str, ...] = ("churn_model_version", "repurchase_7d_model_version", "clv_model_version")
#: Snapshot columns passed to the policy besides the scores (a channel may require them).
POLICY_EXTRAS: tuple[str, ...] = ("wecom_added",)


@dataclass(frozen=True)
class BatchConfig:
    """One nightly scoring job."""

    data_dir: Path
    cutoff: dt.date
    out: Path
    engine: Engine = "duckdb"
    alias: str = "champion"
    policy_path: Path | None = None
    explain: Explain = "actioned"
    chunk_rows: int = 100_000
    #: Tree predictor: native (compiled, cached per model version), lightgbm, or auto — native from
    #: ``native_min_rows`` customers on, where the one-off compilation of a new model pays for itself.
    trees: TreesChoice = "auto"
    native_min_rows: int = 50_000

    def __post_init__(self) -> None:
        if self.engine not in ("duckdb", "spark"):
            raise ValueError(f"engine must be duckdb or spark, not {self.engine!r}")
        if self.explain not in ("actioned", "all", "none"):
            raise ValueError(f"explain must be actioned, all or none, not {self.explain!r}")
        if self.chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        if self.trees not in ("auto", "native", "lightgbm"):
            raise ValueError(f"trees must be auto, native or lightgbm, not {self.trees!r}")

    def scoring_trees(self, rows: int) -> Literal["lightgbm", "native"]:
        """The tree predictor for a snapshot of ``rows`` customers."""
        if self.trees == "auto":
            return "native" if rows >= self.native_min_rows else "lightgbm"
        return self.trees


@dataclass(frozen=True)
class BatchResult:
    """What a scoring job wrote."""

    path: Path
    rows: int
    versions: dict[str, str]
    actions: dict[str, int]
    snapshot_reused: bool
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- inputs


def snapshot_at(
    data_dir: str | Path, cutoff: dt.date, engine: Engine = "duckdb"
) -> tuple[pd.DataFrame, bool]:
    """The feature snapshot at ``cutoff``: ``DIR/snapshots/CUTOFF.parquet`` if present, else built and saved.

    Returns the snapshot and whether it was reused.
    """
    snap, reused, _ = _snapshot(data_dir, cutoff, engine, writer=None)
    return snap, reused


def _snapshot(
    data_dir: str | Path, cutoff: dt.date, engine: Engine, writer: Executor | None
) -> tuple[pd.DataFrame, bool, Future[Path] | None]:
    """:func:`snapshot_at`; with a ``writer``, a built snapshot is saved on it (the returned future) while
    the caller goes on with the frame, which it must not modify."""
    from features.io import snapshot_dir
    from features.snapshot import build_snapshot, write_snapshot

    path = snapshot_dir(data_dir) / f"{cutoff.isoformat()}.parquet"
    if path.exists():
        return pd.read_parquet(path), True, None
    snap = build_snapshot(data_dir, cutoff, engine=engine)
    if writer is None:
        write_snapshot(snap, data_dir, cutoff)
        return snap, False, None
    return snap, False, writer.submit(write_snapshot, snap, data_dir, cutoff)


def in_customer_order(snapshot: pd.DataFrame) -> pd.DataFrame:
    """The snapshot ordered by ``customer_id`` with a fresh index; unchanged (no copy) when it already is.

    Snapshots are written in customer order by the engines, so the sort — a copy of every column of a
    million rows — is needed only for frames from elsewhere.
    """
    ordered = snapshot["customer_id"].is_monotonic_increasing
    if ordered and snapshot.index.equals(pd.RangeIndex(len(snapshot))):
        return snapshot
    if not ordered:
        snapshot = snapshot.sort_values("customer_id", kind="stable")
    return snapshot.reset_index(drop=True)


def touches_before(data_dir: str | Path, cutoff: dt.date) -> pd.DataFrame:
    """The contact history known at the cutoff (touches with ``ts`` before it); empty if none on file."""
    from features.as_of import before, cutoff_ts
    from features.io import read_table

    columns = ["customer_id", "ts", "channel", "arm"]
    try:
        touches = read_table(data_dir, "touches", columns=columns)
    except FileNotFoundError:
        return empty_history()
    return before(touches, cutoff_ts(cutoff)).reset_index(drop=True)


def empty_history() -> pd.DataFrame:
    """A touches table with no rows (no one contacted yet)."""
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "channel": pd.Series(dtype=object),
            "arm": pd.Series(dtype=object),
        }
    )


# --------------------------------------------------------------------------------------- scoring


def score_chunks(
    scorer: Scorer, snapshot: pd.DataFrame, chunk_rows: int, explain: bool = False, progress: bool = True
) -> pd.DataFrame:
    """Score the snapshot chunk by chunk in this process (bounded memory, progress bar)."""
    starts = range(0, len(snapshot), chunk_rows)
    parts = [
        scorer.score_encoded(scorer.encode(snapshot.iloc[s : s + chunk_rows]), explain=explain)
        for s in tqdm(starts, desc="scoring", unit="chunk", disable=not progress)
    ]
    if not parts:
        return pd.DataFrame(columns=scorer.columns())
    # One frame from whole columns: concatenating per-chunk frames checks every object cell for NA.
    return pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in scorer.columns()})


def _spark_schema(scorer: Scorer) -> str:
    text = {
        "customer_id",
        "lifecycle_stage",
        "value_tier",
        *(c for c in scorer.columns() if c.startswith("shap_reason_") and not c.endswith("_value")),
        *STAMP_COLUMNS,
    }
    types = {c: "string" if c in text else "date" if c == "cutoff" else "double" for c in scorer.columns()}
    return ", ".join(f"`{c}` {t}" for c, t in types.items())


def score_spark(scorer: Scorer, snapshot: pd.DataFrame, spark: Any, explain: bool = False) -> pd.DataFrame:
    """Score the snapshot on Spark: ``mapInPandas`` tasks rebuild the scorer from its JSON payload.

    The payload (LightGBM model text, calibrators, BTYD parameters, cutoff) is broadcast once; each task
    scores its Arrow batches with the same :meth:`Scorer.score` as the in-process path, so the values are
    identical. Returns the scores in the snapshot's row order.
    """
    sc = spark.sparkContext
    if sc.master.startswith("local"):
        # Local executors are this machine: run the Python workers on this interpreter (it has siyu).
        sc.pythonExec = sys.executable
    payload = sc.broadcast(scorer.to_payload())
    columns = scorer.columns()

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from serving.scoring import Scorer as _Scorer

        local = _Scorer.from_payload(payload.value)
        for pdf in batches:
            out = local.score(pdf, explain=explain)
            out["cutoff"] = pd.to_datetime(out["cutoff"]).dt.date
            yield out[columns]

    frame = snapshot[scorer.required_columns()].reset_index(drop=True)
    sdf = spark.createDataFrame(frame)
    try:
        result = sdf.mapInPandas(score_batches, _spark_schema(scorer)).toPandas()
    finally:
        payload.unpersist()
    order = pd.Index(frame["customer_id"].astype(str))
    result = result.set_index("customer_id").loc[order].reset_index()
    return _as_score_dtypes(result[columns])


def _as_score_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Spark hands back None for missing strings and ``datetime.date`` cutoffs; match the pandas path."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


# -------------------------------------------------------------------------------------- decisions


def policy_inputs(scores: pd.DataFrame, snapshot: pd.DataFrame) -> pd.DataFrame:
    """The frame plan_actions reads: the scores plus the snapshot columns channels may require."""
    columns = [c for c in POLICY_EXTRAS if c in snapshot.columns]
    ids = scores["customer_id"].to_numpy()
    if len(ids) == len(snapshot) and np.array_equal(ids, snapshot["customer_id"].to_numpy()):
        # Scores come in the snapshot's row order: take the columns by position (a join on a million
        # text keys costs seconds).
        frame = scores.copy(deep=False)
        for c in columns:
            frame[c] = snapshot[c].astype(bool).to_numpy()
        return frame
    extras = snapshot.set_index("customer_id")[columns]
    return scores.join(extras.astype(bool), on="customer_id")


def decide(
    scores: pd.DataFrame, snapshot: pd.DataFrame, history: pd.DataFrame, policy: Any, as_of: dt.date
) -> pd.DataFrame:
    """Tier, action, channel, expected value, cost and reason per scored customer (scores' order)."""
    from serving.tiering import NO_ACTION, plan_actions

    plan = plan_actions(policy_inputs(scores, snapshot), history, policy, as_of)
    plan["channel"] = plan["action"].where(plan["action"] != NO_ACTION, None)
    return plan[["customer_id", *DECISION_COLUMNS]]


def assemble(scores: pd.DataFrame, plan: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Scores and decisions side by side, the version stamps last."""
    if not scores["customer_id"].reset_index(drop=True).equals(plan["customer_id"].reset_index(drop=True)):
        raise AssertionError("plan_actions returned rows in another order than the scores")
    body = [c for c in columns if c not in STAMP_COLUMNS]
    out = pd.concat(
        [
            scores[body].reset_index(drop=True),
            plan[list(DECISION_COLUMNS)].reset_index(drop=True),
            scores[list(STAMP_COLUMNS)].reset_index(drop=True),
        ],
        axis=1,
    )
    return out


def explain_rows(
    scorer: Scorer, snapshot: pd.DataFrame, scored: pd.DataFrame, which: Explain, spark: Any = None
) -> pd.DataFrame:
    """Fill the SHAP reason columns of ``scored`` for the chosen customers (those contacted by default)."""
    if which == "none":
        return scored
    mask = scored["p_churn"].notna().to_numpy()  # churn reasons exist only in the churn population
    if which == "actioned":
        mask &= scored["channel"].notna().to_numpy()
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return scored
    rows = snapshot.iloc[idx]
    if spark is not None:
        found = score_spark(scorer, rows, spark, explain=True)
        reasons = {c: found[c].to_numpy() for c in found.columns}
    else:
        reasons = scorer.reasons(scorer.encode(rows))  # the SHAP columns only; the scores are known
    out = scored.copy(deep=False)  # the reason columns are replaced whole below, the rest is shared
    for c in [c for c in scorer.columns() if c.startswith("shap_reason_")]:
        col = out[c].to_numpy(dtype=object if out[c].dtype == object else float, copy=True)
        col[idx] = reasons[c]
        out[c] = col
    return out


# ------------------------------------------------------------------------------------------- job


def run_batch(
    cfg: BatchConfig,
    models: Champions | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    spark: Any = None,
) -> BatchResult:
    """Run one scoring job end to end (module docstring) and return what it wrote."""
    from features.io import atomic_write_parquet

    timer = _StepTimer(tqdm(total=7, desc=f"siyu score {cfg.cutoff}", unit="step", disable=not progress))
    # Side work on threads: the registry is read (artifact checksums verified) while the engine builds
    # the snapshot, and a snapshot built tonight is saved while the job scores. Neither holds the GIL for
    # long (a DuckDB query, parquet encoding); the job waits for both.
    with ThreadPoolExecutor(2, thread_name_prefix="siyu-score") as pool:
        loading = pool.submit(load_champions, cfg.alias) if models is None else None
        with timer("snapshot"):
            snapshot, reused, saving = _snapshot(cfg.data_dir, cfg.cutoff, cfg.engine, pool)
            snapshot = in_customer_order(snapshot)
        with timer("models"):
            models = loading.result() if loading is not None else models
            scorer = Scorer.fit(
                models, snapshot, cfg.cutoff, ScoringConfig(trees=cfg.scoring_trees(len(snapshot)))
            )
        table = _score_and_decide(cfg, scorer, snapshot, spark, progress, timer)
        with timer("write"):
            path = atomic_write_parquet(table, cfg.out)
            if saving is not None:
                saving.result()  # the snapshot is on disk (or its error raised) before the job reports
    timer.bar.close()
    actions = {str(k): int(v) for k, v in table["action"].value_counts().sort_index().items()}
    echo(
        f"scored {len(table):,} customers at {cfg.cutoff} with {_versions_text(models)} "
        f"({'reused' if reused else 'built'} snapshot) → {path}"
    )
    echo("actions: " + ", ".join(f"{k} {v:,}" for k, v in actions.items()))
    echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timer.seconds.items()))
    return BatchResult(path, len(table), models.versions(), actions, reused, dict(timer.seconds))


def _score_and_decide(
    cfg: BatchConfig, scorer: Scorer, snapshot: pd.DataFrame, spark: Any, progress: bool, timer: _StepTimer
) -> pd.DataFrame:
    """Scores, decisions and the reasons of the contacted: the output table (steps prepare to reasons)."""
    from serving.tiering import load_policy

    with timer("prepare"):
        scorer.prepare(explain=cfg.explain != "none")  # compiled boosters: cached per model version
    if cfg.engine == "spark" and spark is None:
        from features.engine import EngineConfig, local_spark_session

        spark = local_spark_session(
            EngineConfig(name="spark", spark_conf={"spark.pyspark.python": sys.executable})
        )
    use_spark = spark if cfg.engine == "spark" else None
    with timer("scores"):
        scores = (
            score_spark(scorer, snapshot, use_spark)
            if use_spark is not None
            else score_chunks(scorer, snapshot, cfg.chunk_rows, progress=progress)
        )
    with timer("tiers"):
        policy = load_policy(cfg.policy_path)
        plan = decide(scores, snapshot, touches_before(cfg.data_dir, cfg.cutoff), policy, cfg.cutoff)
        table = assemble(scores, plan, scorer.columns())
    with timer("reasons"):
        table = explain_rows(scorer, snapshot, table, cfg.explain, use_spark)
    return table


class _StepTimer:
    """Times the job's steps and advances the progress bar after each."""

    def __init__(self, bar: Any):
        self.bar = bar
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.bar.update(1)


def _versions_text(models: Champions) -> str:
    return ", ".join(f"{r.name} v{r.version}" for r in models.stamps().values())

"""Benchmark: the nightly scoring job end to end on N synthetic customers (default 1M).

Set-up (not timed): champion models trained by ``siyu train all`` on a 20,000-customer synthetic world,
and an N-customer synthetic world (a different seed) whose snapshot does not exist yet. Then, each in a
fresh child process so that wall time and peak RSS are its own:

1. **siyu**: :func:`serving.batch.run_batch` — feature snapshot at the cutoff (built, DuckDB), champion
   models loaded by alias, BTYD features refit, churn / repurchase / CLV with intervals, tiers and actions
   for every customer, SHAP reasons for the contacted ones, one parquet written atomically;
2. **baseline**: the same three registered models scored the generic way on the snapshot just built —
   ``mlflow.pyfunc.load_model(...).predict`` with the BTYD features from training's own path, one parquet
   (no tiers, no reasons, no CLV interval).

``ratio`` is baseline model-scoring time over siyu's (models + scores + write steps). Prints a table, then
as the last line one JSON object with the figures.

    .venv/bin/python -m benchmarks.batch_score                      # 1M customers
    .venv/bin/python -m benchmarks.batch_score --customers 20000    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.serving_setup import CUTOFF, Trained, store_env, train, write_world


def _peak_rss_gib() -> float:
    """This process's peak resident set since it started (``VmHWM``; ``ru_maxrss`` would carry over the
    high-water mark of the parent it was forked from)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def child_siyu(data: Path, out: Path) -> dict[str, object]:
    """Run the scoring job (inside a fresh process)."""
    from serving.batch import BatchConfig, run_batch

    t0 = time.perf_counter()
    res = run_batch(BatchConfig(data, CUTOFF, out), progress=False, echo=lambda _: None)
    return {
        "wall_s": time.perf_counter() - t0,
        "steps_s": res.seconds,
        "rows": res.rows,
        "actions": res.actions,
        "peak_rss_gib": _peak_rss_gib(),
    }


def child_baseline(data: Path, out: Path) -> dict[str, object]:
    """Score the snapshot with the registered pyfunc models, the generic MLflow way (in a fresh process)."""
    import pandas as pd

    from features.io import atomic_write_parquet, snapshot_dir
    from training import btyd_baseline as bb
    from training import tracking

    snapshot = pd.read_parquet(snapshot_dir(data) / f"{CUTOFF.isoformat()}.parquet")
    t0 = time.perf_counter()
    churn = tracking.load_model("models:/siyu-churn@champion")
    rep = tracking.load_model("models:/siyu-repurchase-7d@champion")
    clv = tracking.load_model("models:/siyu-clv@champion")
    config = tracking.load_run_dict(churn.run_id, "config.json")["btyd"]
    frame = snapshot.assign(cutoff=pd.Timestamp(CUTOFF))
    X, _ = bb.add_btyd_features(
        frame,
        config["horizons_days"],
        config["clv_months"],
        config["monthly_discount_rate"],
        config["penalizers"],
    )
    out_frame = pd.DataFrame(
        {
            "customer_id": snapshot["customer_id"],
            "p_churn": churn.predict(X),
            "p_repurchase_7d": rep.predict(X),
        }
    )
    out_frame = pd.concat([out_frame, clv.predict(snapshot).reset_index(drop=True)], axis=1)
    atomic_write_parquet(out_frame, out)
    return {"wall_s": time.perf_counter() - t0, "rows": len(out_frame), "peak_rss_gib": _peak_rss_gib()}


def _run_child(
    kind: str, data: Path, out: Path, store_uri: str, cache: Path
) -> tuple[dict[str, object], float]:
    env = {**os.environ, **store_env(store_uri), "SIYU_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.batch_score",
            "--child",
            kind,
            "--data",
            str(data),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1]), seconds


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark; print a table and, last, one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=1_000_000, help="customers scored (default 1M)")
    p.add_argument("--train-customers", type=int, default=20_000, help="customers of the training world")
    p.add_argument("--quick", action="store_true", help="quick training config (smoke tests)")
    p.add_argument("--store", default=None, help="MLflow store URI with champion models (skips training)")
    p.add_argument("--train-data", type=Path, default=None, help="the data those models were trained on")
    p.add_argument("--work", type=Path, default=None, help="folder to keep worlds and models in (reused)")
    p.add_argument("--child", choices=["siyu", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        fn = child_siyu if args.child == "siyu" else child_baseline
        print(json.dumps(fn(args.data, args.out)))
        return {}

    with tempfile.TemporaryDirectory(prefix="siyu-bench-batch-") as tmp:
        work = args.work or Path(tmp)
        print(
            f"set-up: training models on {args.train_customers:,} customers "
            f"({'quick' if args.quick else 'default'} config) …",
            flush=True,
        )
        trained = (
            Trained(args.store, args.train_data)
            if args.store and args.train_data
            else train(
                work / f"models_{args.train_customers}_{'quick' if args.quick else 'default'}",
                args.train_customers,
                seed=5,
                quick=args.quick,
            )
        )
        print(f"set-up: synthetic world of {args.customers:,} customers …", flush=True)
        data = write_world(work / f"world_{args.customers}", args.customers, seed=7)
        snap = data / "snapshots" / f"{CUTOFF.isoformat()}.parquet"
        cache = work / "siyu-cache"
        shutil.rmtree(cache, ignore_errors=True)
        # First night of new model versions: the boosters are compiled (cold cache). Every later night
        # loads them from the cache; that run is the one reported, both build the features themselves.
        snap.unlink(missing_ok=True)
        cold, _ = _run_child("siyu", data, work / "scores.parquet", trained.store_uri, cache)
        snap.unlink(missing_ok=True)
        siyu, siyu_process_s = _run_child("siyu", data, work / "scores.parquet", trained.store_uri, cache)
        base, base_process_s = _run_child(
            "baseline", data, work / "baseline.parquet", trained.store_uri, cache
        )

    steps = siyu["steps_s"]
    assert isinstance(steps, dict)
    cold_steps = cold["steps_s"]
    assert isinstance(cold_steps, dict)
    siyu_scoring = steps["models"] + steps["prepare"] + steps["scores"] + steps["write"]
    nightly_core = sum(v for k, v in steps.items() if k != "reasons")
    result: dict[str, object] = {
        "benchmark": "batch_score",
        "customers": int(siyu["rows"]),  # type: ignore[call-overload]
        "cutoff": CUTOFF.isoformat(),
        "wall_s": round(float(siyu["wall_s"]), 2),  # type: ignore[arg-type]
        "process_s": round(siyu_process_s, 2),
        "steps_s": {k: round(v, 2) for k, v in steps.items()},
        "wall_without_reasons_s": round(nightly_core, 2),
        "first_night_prepare_s": round(float(cold_steps["prepare"]), 2),
        "first_night_wall_s": round(float(cold["wall_s"]), 2),  # type: ignore[arg-type]
        "peak_rss_gib": round(float(siyu["peak_rss_gib"]), 2),  # type: ignore[arg-type]
        "contacted": int(sum(v for k, v in siyu["actions"].items() if k != "none")),  # type: ignore[union-attr]
        "baseline": "mlflow.pyfunc predict of the same 3 models + training's BTYD features, no tiers/reasons",
        "baseline_scoring_s": round(float(base["wall_s"]), 2),  # type: ignore[arg-type]
        "baseline_peak_rss_gib": round(float(base["peak_rss_gib"]), 2),  # type: ignore[arg-type]
        "siyu_scoring_s": round(siyu_scoring, 2),
        "ratio": round(float(base["wall_s"]) / siyu_scoring, 3),  # type: ignore[arg-type]
        "goal_wall_s": 60.0,
        "cores": os.cpu_count(),
        # Other work on the machine during the run (1-minute load average at the end): the figures are
        # only comparable between runs on an otherwise idle machine.
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(f"{'step':12s} {'seconds':>9s}")
    for k, v in steps.items():
        print(f"{k:12s} {v:9.2f}")
    print(
        f"siyu job: {result['wall_s']} s in-process ({result['process_s']} s with interpreter start), "
        f"peak RSS {result['peak_rss_gib']} GiB; baseline scoring {result['baseline_scoring_s']} s "
        f"vs siyu scoring {result['siyu_scoring_s']} s (ratio {result['ratio']}); "
        f"baseline process {base_process_s:.1f} s"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

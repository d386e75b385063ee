"""Benchmark: the scoring service under bounded load on loopback, against ``mlflow models serve``.

Set-up (not timed): champion models trained by ``siyu train all`` on a synthetic world, whose snapshot at
the cutoff is the one served. Then, one server at a time (client and server share this machine's cores):

1. ``siyu serve`` (BentoML, ``--workers`` processes): single-customer ``POST /score`` at concurrency 1
   (p50/p99 latency), ``--requests`` requests at concurrency ``--concurrency`` (requests/s, 5xx count), and
   batches of 100 customers (customers/s) with the default body (ids; the service reads the scores it
   computed for its snapshot at start); the same three with whole feature rows in the body
   (``{"rows": [...]}``, scored live by the models), reported as ``inline_*``; then fewer requests by id
   with ``"explain": true`` (SHAP reasons computed per request), reported as ``explain_*``;
2. **baseline** ``mlflow models serve -m models:/siyu-churn@champion --env-manager local`` (as many uvicorn
   workers): one-row ``/invocations`` requests with the churn model's features at the same concurrency,
   and at concurrency 1. Its answers are checked against siyu's ``p_churn`` for the same customers.

``ratio`` = siyu requests/s by id over mlflow requests/s at the same concurrency; ``ratio_inline`` the same
for inline rows, which siyu scores live like mlflow does (siyu's request scores all three models and
validates the row against the snapshot contract; mlflow's only churn). Prints a table, then as the last
line one JSON object.

    .venv/bin/python -m benchmarks.serve                         # 10,000 requests at concurrency 32
    .venv/bin/python -m benchmarks.serve --requests 300 --quick  # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from benchmarks.serving_setup import CUTOFF, Trained, store_env, train

TOKEN = "bench-token"


@dataclass
class Load:
    """Outcome of one load phase."""

    requests: int
    seconds: float
    latencies_ms: np.ndarray
    status: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def errors_5xx(self) -> int:
        return sum(n for s, n in self.status.items() if s >= 500)

    @property
    def non_200(self) -> int:
        return sum(n for s, n in self.status.items() if s != 200)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one HTTP/1.1 request on a keep-alive connection and read the whole answer; its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        while (size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) > 0:
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status


async def _load(url: str, bodies: list[bytes], concurrency: int, headers: dict[str, str]) -> Load:
    """POST every body once, ``concurrency`` at a time, each worker on its own keep-alive connection.

    A minimal HTTP/1.1 client on asyncio streams: a general-purpose client costs more CPU per request than
    the server under test, and client and server share this machine's cores.
    """
    u = httpx.URL(url)
    head = "".join(f"{k}: {v}\r\n" for k, v in {"host": f"{u.host}:{u.port}", **headers}.items())
    requests = [
        f"POST {u.raw_path.decode()} HTTP/1.1\r\n{head}content-length: {len(b)}\r\n\r\n".encode() + b
        for b in bodies
    ]
    lat = np.empty(len(bodies))
    status: dict[int, int] = {}
    nxt = 0

    async def worker() -> None:
        nonlocal nxt
        reader, writer = await asyncio.open_connection(u.host, u.port)
        try:
            while nxt < len(requests):
                i, nxt = nxt, nxt + 1
                t = time.perf_counter()
                try:
                    code = await _exchange(reader, writer, requests[i])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    code = 599
                    writer.close()
                    reader, writer = await asyncio.open_connection(u.host, u.port)
                lat[i] = (time.perf_counter() - t) * 1000
                status[code] = status.get(code, 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Load(len(bodies), time.perf_counter() - t0, lat, status)


def load(url: str, bodies: list[bytes], concurrency: int, token: str | None = None) -> Load:
    """Run one load phase (see :func:`_load`)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return asyncio.run(_load(url, bodies, concurrency, headers))


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait(url: str, proc: subprocess.Popen, timeout: float = 300, streak: int = 20) -> None:
    """Until ``streak`` answers in a row are 200 (with several workers each must have loaded)."""
    deadline, ok = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            ok = ok + 1 if httpx.get(url, timeout=2).status_code == 200 else 0
        except httpx.TransportError:
            ok = 0
        if ok >= streak:
            return
        time.sleep(0.1 if ok else 0.5)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _bodies(ids: list[str], n: int, size: int, explain: bool, rng: random.Random) -> list[bytes]:
    out = []
    for _ in range(n):
        body: dict[str, object] = {"customer_ids": rng.sample(ids, size)}
        if explain:
            body["explain"] = True
        out.append(json.dumps(body).encode())
    return out


def _inline_bodies(snapshot: object, n: int, size: int, rng: random.Random) -> list[bytes]:
    """Requests carrying whole feature rows (``{"rows": [...]}``): the service scores them live."""
    import pandas as pd

    frame = snapshot.drop(columns=["cutoff"])  # type: ignore[attr-defined]
    frame = frame.astype(object).where(pd.notna(frame), None)
    records = frame.to_dict("records")
    return [
        json.dumps({"rows": rng.sample(records, size)}, default=_json_scalar).encode() for _ in range(n)
    ]


def _json_scalar(v: object) -> object:
    return v.item() if hasattr(v, "item") else str(v)


def _mlflow_rows(store_uri: str, data: Path, ids: list[str]) -> tuple[list[str], dict[str, list[object]]]:
    """The churn model's feature rows (training's encoding path) for ``ids``, JSON-ready."""
    import pandas as pd

    from serving.batch import snapshot_at
    from serving.scoring import Scorer, load_champions

    models = load_champions(uri=store_uri)
    snapshot, _ = snapshot_at(data, CUTOFF)
    scorer = Scorer.fit(models, snapshot, CUTOFF)
    features = list(models.churn.estimator.feature_names_in_)
    rows = snapshot[snapshot["customer_id"].isin(ids)]
    X = scorer.feature_frame(rows.reset_index(drop=True))[features]
    X = X.astype(object).where(pd.notna(X), None)
    return features, {
        cid: list(r) for cid, r in zip(rows["customer_id"], X.itertuples(index=False), strict=True)
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark; print a table and, last, one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=20_000, help="customers of the world trained and served")
    p.add_argument("--requests", type=int, default=10_000, help="requests of the concurrent phase")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--single", type=int, default=2_000, help="requests at concurrency 1 (latency)")
    p.add_argument("--batches", type=int, default=300, help="requests of 100 customers")
    p.add_argument("--mlflow-requests", type=int, default=3_000, help="requests to mlflow models serve")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (both servers)")
    p.add_argument("--quick", action="store_true", help="quick training config (smoke tests)")
    p.add_argument("--store", default=None, help="MLflow store URI with champion models (skips training)")
    p.add_argument("--train-data", type=Path, default=None, help="the data those models were trained on")
    p.add_argument("--work", type=Path, default=None, help="folder to keep the world and models in (reused)")
    args = p.parse_args(argv)
    rng = random.Random(0)

    with tempfile.TemporaryDirectory(prefix="siyu-bench-serve-") as tmp:
        work = args.work or Path(tmp)
        print(f"set-up: training models on {args.customers:,} customers …", flush=True)
        trained = (
            Trained(args.store, args.train_data)
            if args.store and args.train_data
            else train(
                work / f"models_{args.customers}_{'quick' if args.quick else 'default'}",
                args.customers,
                seed=5,
                quick=args.quick,
            )
        )
        from serving.batch import snapshot_at

        snapshot, _ = snapshot_at(trained.train_data, CUTOFF)
        ids = snapshot["customer_id"].tolist()
        # mlflow models serve starts `uvicorn` by name: the interpreter's bin folder goes first on PATH.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**os.environ, **store_env(trained.store_uri), "SIYU_API_TOKEN": TOKEN, "PATH": path}
        env.pop("SIYU_AUTH_DISABLED", None)

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        siyu = _start(
            [
                sys.executable,
                "-m",
                "siyu.cli",
                "serve",
                "--data",
                str(trained.train_data),
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            env,
            work / "siyu.log",
        )
        phases: dict[str, Load] = {}
        try:
            _wait(f"{base}/readyz", siyu)
            url = f"{base}/score"
            load(url, _bodies(ids, 200, 1, False, rng), 4, TOKEN)  # warm-up
            # The default request (scores, no SHAP reasons), then the same with "explain": true on fewer
            # requests: TreeSHAP costs about three times the scores of a customer.
            few = max(10, args.requests // 10)
            phases["single_c1"] = load(url, _bodies(ids, args.single, 1, False, rng), 1, TOKEN)
            phases["single_cN"] = load(
                url, _bodies(ids, args.requests, 1, False, rng), args.concurrency, TOKEN
            )
            phases["batch100"] = load(url, _bodies(ids, args.batches, 100, False, rng), 4, TOKEN)
            # Inline feature rows are scored live (by id, the start-up scores of the snapshot are read):
            # the like-for-like comparison with mlflow, which scores the feature row it is sent.
            phases["inline_c1"] = load(url, _inline_bodies(snapshot, args.single, 1, rng), 1, TOKEN)
            phases["inline_cN"] = load(
                url, _inline_bodies(snapshot, args.requests, 1, rng), args.concurrency, TOKEN
            )
            phases["inline_batch100"] = load(
                url, _inline_bodies(snapshot, max(4, args.batches // 3), 100, rng), 4, TOKEN
            )
            phases["single_c1_explain"] = load(url, _bodies(ids, args.single // 4, 1, True, rng), 1, TOKEN)
            phases["single_cN_explain"] = load(url, _bodies(ids, few, 1, True, rng), args.concurrency, TOKEN)
            phases["batch100_explain"] = load(
                url, _bodies(ids, max(4, args.batches // 20), 100, True, rng), 4, TOKEN
            )
            sample = rng.sample(ids, 50)
            siyu_p = {
                i["customer_id"]: i["p_churn"]
                for i in httpx.post(
                    url,
                    json={"customer_ids": sample},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=30,
                ).json()["results"]
            }
        finally:
            _stop(siyu)

        mlflow_note, mlflow_agrees = "", None
        columns, rows = _mlflow_rows(
            trained.store_uri, trained.train_data, ids[: max(args.mlflow_requests, 50)]
        )
        mport = _free_port()
        mlflow = _start(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                "models:/siyu-churn@champion",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(mport),
                "-w",
                str(args.workers),
            ],
            env,
            work / "mlflow.log",
        )
        try:
            _wait(f"http://127.0.0.1:{mport}/ping", mlflow)
            murl = f"http://127.0.0.1:{mport}/invocations"
            keys = list(rows)
            mbodies = [
                json.dumps(
                    {"dataframe_split": {"columns": columns, "data": [rows[rng.choice(keys)]]}}
                ).encode()
                for _ in range(args.mlflow_requests)
            ]
            load(murl, mbodies[:100], 4)  # warm-up
            phases["mlflow_c1"] = load(murl, mbodies[: max(100, args.mlflow_requests // 5)], 1)
            phases["mlflow_cN"] = load(murl, mbodies, args.concurrency)
            check = [c for c in sample if c in rows and siyu_p.get(c) is not None]
            got = httpx.post(
                murl,
                json={"dataframe_split": {"columns": columns, "data": [rows[c] for c in check]}},
                timeout=30,
            ).json()["predictions"]
            mlflow_agrees = bool(np.allclose(got, [siyu_p[c] for c in check], rtol=0, atol=1e-12))
        except RuntimeError as err:
            mlflow_note = f"mlflow models serve could not run offline with --env-manager local: {err}"
        finally:
            _stop(mlflow)

    s1, sn, b = phases["single_c1"], phases["single_cN"], phases["batch100"]
    result: dict[str, object] = {
        "benchmark": "serve",
        "customers_served": len(ids),
        "concurrency": args.concurrency,
        "requests": sn.requests,
        "errors_5xx": sum(ph.errors_5xx for ph in phases.values()),
        "non_200": sum(ph.non_200 for ph in phases.values()),
        "rps": round(sn.rps, 1),
        "p50_ms": round(s1.pct(50), 3),
        "p99_ms": round(s1.pct(99), 3),
        "p99_ms_at_concurrency": round(sn.pct(99), 3),
        "batch100_customers_per_s": round(100 * b.rps, 1),
        "inline_rps": round(phases["inline_cN"].rps, 1),
        "inline_p50_ms": round(phases["inline_c1"].pct(50), 3),
        "inline_p99_ms": round(phases["inline_c1"].pct(99), 3),
        "inline_batch100_customers_per_s": round(100 * phases["inline_batch100"].rps, 1),
        "explain_rps": round(phases["single_cN_explain"].rps, 1),
        "explain_p50_ms": round(phases["single_c1_explain"].pct(50), 3),
        "explain_p99_ms": round(phases["single_c1_explain"].pct(99), 3),
        "explain_batch100_customers_per_s": round(100 * phases["batch100_explain"].rps, 1),
        "workers": args.workers,
        "baseline": "mlflow models serve (siyu-churn champion, --env-manager local, same worker count)",
        "goal": "p99 <= 5 ms; >= 4x mlflow's requests/s; >= 50,000 customers/s in batches of 100",
        "cores": os.cpu_count(),
        # Other work on the machine during the run (1-minute load average at the end): the figures are
        # only comparable between runs on an otherwise idle machine.
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if "mlflow_cN" in phases:
        m = phases["mlflow_cN"]
        result.update(
            {
                "mlflow_rps": round(m.rps, 1),
                "mlflow_p50_ms": round(phases["mlflow_c1"].pct(50), 3),
                "mlflow_p99_ms": round(phases["mlflow_c1"].pct(99), 3),
                "mlflow_errors": m.non_200,
                "mlflow_agrees_with_siyu": mlflow_agrees,
                "ratio": round(sn.rps / m.rps, 2),
                "ratio_inline": round(phases["inline_cN"].rps / m.rps, 2),
            }
        )
    else:
        result.update({"mlflow_rps": None, "ratio": None, "note": mlflow_note})
    print(f"{'phase':24s} {'requests':>8s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'non-200':>8s}")
    for name, ph in phases.items():
        print(
            f"{name:24s} {ph.requests:8d} {ph.rps:9.1f} {ph.pct(50):8.2f} {ph.pct(99):8.2f} {ph.non_200:8d}"
        )
    print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

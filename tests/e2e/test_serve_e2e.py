"""End to end: train → `siyu score` → a real `siyu serve` (BentoML) on loopback → the batch job's values.

Trains small models into a temporary sqlite MLflow store with `siyu train`, scores the snapshot with the
nightly job, starts the real server as a subprocess on a free loopback port, waits for /readyz, and checks
that HTTP scores equal the batch file's values exactly, that /tier, /metrics and auth work on the real
server, and that malformed JSON gets 400 (not BentoML's 500). The server is stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.serving.served_world import train_world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOKEN = "e2e-token-9f8e7d"
FIELDS = (
    "p_churn",
    "p_repurchase_7d",
    "p_alive",
    "expected_purchases_30d",
    "expected_purchases_90d",
    "clv_12m",
    "clv_12m_low",
    "clv_12m_high",
    "expected_order_value",
    "lifecycle_stage",
    "value_tier",
    "recency_days",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _siyu() -> list[str]:
    return [sys.executable, "-m", "siyu.cli"]


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 150.0) -> list[int]:
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            code = httpx.get(f"{base}/readyz", timeout=2).status_code
            seen.append(code)
            if code == 200:
                return seen
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"server not ready after {timeout:.0f} s (readyz answers {seen[-5:]})")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_real_server_returns_the_batch_job_values(tmp_path: Path):
    world = train_world(tmp_path, customers=1500, seed=23)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": world.store_uri,
        "MLFLOW_REGISTRY_URI": world.store_uri,
        "SIYU_API_TOKEN": TOKEN,
    }
    env.pop("SIYU_AUTH_DISABLED", None)
    out = tmp_path / "scores.parquet"
    score = subprocess.run(
        [
            *_siyu(),
            "score",
            "--data",
            str(world.data),
            "--cutoff",
            world.cutoff.isoformat(),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert score.returncode == 0, score.stderr[-3000:]
    batch = pd.read_parquet(out)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [*_siyu(), "serve", "--data", str(world.data), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_ready(base, proc)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        picks = batch.iloc[:: max(1, len(batch) // 60)]
        r = httpx.post(
            f"{base}/score",
            json={"customer_ids": [*picks["customer_id"], "no-such-customer"], "explain": True},
            headers=auth,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["cutoff"] == world.cutoff.isoformat()
        assert body["model_versions"] == {
            "churn": batch["churn_model_version"].iloc[0],
            "repurchase_7d": batch["repurchase_7d_model_version"].iloc[0],
            "clv": batch["clv_model_version"].iloc[0],
        }
        items = body["results"]
        assert items[-1] == {**items[-1], "customer_id": "no-such-customer", "status": "not_found"}
        mismatches = []
        for item, (_, row) in zip(items[:-1], picks.iterrows(), strict=True):
            assert item["customer_id"] == row["customer_id"] and item["status"] == "ok"
            for f in FIELDS:
                want = None if pd.isna(row[f]) else row[f]
                if item[f] != want:
                    mismatches.append((row["customer_id"], f, item[f], want))
            if row["shap_reason_1"] is not None:
                got = [(x["feature"], x["shap"]) for x in item["reasons"]]
                want = [
                    (row[f"shap_reason_{i}"], row[f"shap_reason_{i}_value"])
                    for i in (1, 2, 3)
                    if row[f"shap_reason_{i}"] is not None
                ]
                if got != want:
                    mismatches.append((row["customer_id"], "reasons", got, want))
        assert not mismatches, mismatches[:10]
        assert sum(row["shap_reason_1"] is not None for _, row in picks.iterrows()) > 0

        contacted = batch.loc[batch["channel"].notna(), "customer_id"].iloc[:10].tolist()
        r = httpx.post(f"{base}/tier", json={"customer_ids": contacted}, headers=auth, timeout=30)
        assert r.status_code == 200 and len(r.json()["results"]) == len(contacted)

        bad = httpx.post(
            f"{base}/score",
            content='{"customer_ids": [',
            headers={**auth, "content-type": "application/json"},
            timeout=10,
        )
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "<body>"
        assert httpx.post(f"{base}/score", json={"customer_ids": ["a"]}, timeout=10).status_code == 401
        assert httpx.get(f"{base}/livez", timeout=10).status_code == 200
        metrics = httpx.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200 and 'endpoint="/score"' in metrics.text
    finally:
        _stop(proc)
        log.close()
    assert proc.returncode is not None
    server_log = (tmp_path / "server.log").read_text()
    assert "no-such-customer" not in server_log and picks["customer_id"].iloc[0] not in server_log
    assert json.dumps(TOKEN) not in server_log and TOKEN not in server_log

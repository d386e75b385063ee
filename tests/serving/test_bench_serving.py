"""Smoke tests for benchmarks/batch_score.py and benchmarks/serve.py at a tiny size, so they cannot rot."""

from __future__ import annotations

import json

import pytest

from benchmarks import batch_score, serve
from tests.serving.served_world import ServedWorld

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving")]


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_batch_score_benchmark_runs_end_to_end(served_world: ServedWorld, tmp_path, capsys):
    batch_score.main(
        [
            "--customers",
            "1200",
            "--store",
            served_world.store_uri,
            "--train-data",
            str(served_world.data),
            "--work",
            str(tmp_path),
        ]
    )
    res = _last_json(capsys.readouterr().out)
    assert res["benchmark"] == "batch_score" and 1000 < res["customers"] <= 1200
    assert set(res["steps_s"]) == {"snapshot", "models", "prepare", "scores", "tiers", "reasons", "write"}
    assert res["wall_without_reasons_s"] == pytest.approx(
        sum(v for k, v in res["steps_s"].items() if k != "reasons"), abs=0.02
    )
    assert res["first_night_wall_s"] > 0 and res["first_night_prepare_s"] >= 0
    assert res["wall_s"] > 0 and res["peak_rss_gib"] > 0 and res["baseline_scoring_s"] > 0
    assert res["ratio"] == pytest.approx(res["baseline_scoring_s"] / res["siyu_scoring_s"], rel=0.01)
    assert 0 < res["contacted"] < res["customers"]


@pytest.mark.e2e
def test_serve_benchmark_runs_against_both_servers(served_world: ServedWorld, tmp_path, capsys):
    serve.main(
        [
            "--requests",
            "200",
            "--concurrency",
            "8",
            "--single",
            "50",
            "--batches",
            "10",
            "--mlflow-requests",
            "100",
            "--store",
            served_world.store_uri,
            "--train-data",
            str(served_world.data),
            "--work",
            str(tmp_path),
        ]
    )
    res = _last_json(capsys.readouterr().out)
    assert res["benchmark"] == "serve" and res["requests"] == 200 and res["concurrency"] == 8
    assert res["errors_5xx"] == 0 and res["non_200"] == 0
    assert 0 < res["p50_ms"] <= res["p99_ms"] and res["rps"] > 0 and res["batch100_customers_per_s"] > 0
    assert 0 < res["explain_p50_ms"] <= res["explain_p99_ms"] and res["explain_rps"] > 0
    assert res["mlflow_rps"] is not None, res.get("note")
    assert res["mlflow_rps"] > 0 and res["mlflow_errors"] == 0
    assert res["mlflow_agrees_with_siyu"] is True
    assert res["ratio"] == pytest.approx(res["rps"] / res["mlflow_rps"], rel=0.02)
    # Inline rows are scored live; every one of them answered 200 (non_200 above covers all phases).
    assert 0 < res["inline_p50_ms"] <= res["inline_p99_ms"] and res["inline_batch100_customers_per_s"] > 0
    assert res["ratio_inline"] == pytest.approx(res["inline_rps"] / res["mlflow_rps"], rel=0.02)

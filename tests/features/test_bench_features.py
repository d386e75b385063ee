"""Smoke test for benchmarks/features.py at a tiny size, so the benchmark cannot rot."""

from __future__ import annotations

import json

import pytest

from benchmarks.features import main


@pytest.mark.slow
def test_benchmark_runs_and_last_line_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--customers", "2000", "--orders-per-customer", "8"])
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads(lines[-1])
    assert res["benchmark"] == "features" and res["customers"] == 2000
    assert res["orders"] == 16_000 and res["events"] == 10_000 and res["touches"] == 4_000
    for key in (
        "siyu_s",
        "pandas_s",
        "speedup",
        "rfm_siyu_s",
        "rfm_speedup",
        "peak_rss_gib",
        "pandas_peak_rss_gib",
    ):
        assert res[key] > 0, key
    assert 0 < res["snapshot_rows"] <= 2000
    # The pandas baseline computes the same RFM features as siyu (checked inside the benchmark).
    assert res["rfm_max_rel_diff"] < 1e-9

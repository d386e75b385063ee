"""Tiny run of benchmarks/experiments_coverage.py so the script cannot rot."""

from __future__ import annotations

import json

from benchmarks import experiments_coverage


def test_coverage_benchmark_smoke(capsys) -> None:
    result = experiments_coverage.main(["--experiments", "3", "--customers", "600", "--seed", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(result))
    assert set(result["coverage"]) >= {"conversion_abs", "revenue_cuped_abs", "revenue_rel"}
    assert all(0.0 <= v <= 1.0 for v in result["coverage"].values())

"""Smoke test for benchmarks/btyd.py at a tiny size, so the benchmark cannot rot."""

from __future__ import annotations

import json

import pytest

from benchmarks.btyd import TRUE_BGNBD, TRUE_GG, main, simulate
from training.clv import BetaGeoModel, GammaGammaModel


def test_benchmark_runs_and_last_line_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--customers", "3000", "--lifetimes-clv-customers", "1000"])
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads(lines[-1])
    assert res["benchmark"] == "btyd" and res["customers"] == 3000
    for key in (
        "fit_siyu_s",
        "fit_lifetimes_s",
        "fit_speedup",
        "clv_siyu_s",
        "clv_lifetimes_s",
        "clv_speedup",
        "peak_rss_gib",
    ):
        assert res[key] > 0, key
    assert res["clv_lifetimes_customers_timed"] == 1000 and res["clv_lifetimes_extrapolated"] is True
    assert res["clv_max_rel_diff"] < 1e-6
    assert res["baseline"].startswith("lifetimes ") and res["cores"] >= 1 and res["load_avg_1m"] >= 0
    assert res["fit_param_max_rel_diff"] < 1e-4
    assert any("scaled linearly" in line for line in lines[:-1])


def test_simulator_recovers_its_true_parameters() -> None:
    df = simulate(20_000, seed=1)
    assert (df["recency"] <= df["T"]).all() and ((df["frequency"] == 0) == (df["recency"] == 0)).all()
    bg = BetaGeoModel().fit(df["frequency"], df["recency"], df["T"])
    gg = GammaGammaModel().fit(df["frequency"], df["monetary"])
    for k, v in TRUE_BGNBD.items():
        assert bg.params_[k] == pytest.approx(v, rel=0.2), k
    for k, v in TRUE_GG.items():
        assert gg.params_[k] == pytest.approx(v, rel=0.2), k

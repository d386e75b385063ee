"""Smoke test for benchmarks/scale.py at a tiny size, so the scale run cannot rot."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmarks.scale import main


@pytest.mark.slow
@pytest.mark.e2e
def test_every_stage_runs_in_its_own_process_and_the_last_line_is_json(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(
        [
            "--customers",
            "1500",
            "--orders-per-customer",
            "12",
            "--events-per-customer",
            "20",
            "--quick",
            "--work",
            str(tmp_path),
        ]
    )
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["benchmark"] == "scale" and res["customers"] == 1500
    assert res["orders"] == 18_000 and res["events"] == 30_000 and res["identities"] == 1500
    stages = ["generate", "validate", "features", "training_set", "train", "score"]
    assert list(res["stages_s"]) == stages
    for name in stages:
        assert res["stages_s"][name] > 0 and 0 < res["stages_peak_rss_gib"][name] < 12, name
    # The nightly job is the score stage, which builds its own snapshot as a night without one does.
    assert res["nightly_s"] == res["stages_s"]["score"] and res["nightly_built_its_snapshot"] is True
    assert res["peak_rss_gib"] == max(res["stages_peak_rss_gib"].values())
    # The stages really ran: a training set over 3 cutoffs and one scored row per snapshot customer.
    ts = pd.read_parquet(tmp_path / "training_set.parquet", columns=["cutoff"])
    assert ts["cutoff"].nunique() == 3
    scores = pd.read_parquet(tmp_path / "scores.parquet", columns=["customer_id", "action"])
    snap = pd.read_parquet(tmp_path / "data" / "snapshots" / "2024-12-01.parquet", columns=["customer_id"])
    assert len(scores) == len(snap) and scores["customer_id"].is_unique
    # ...and the snapshot it built is the features stage's, column for column.
    nightly = pd.read_parquet(tmp_path / "data" / "snapshots" / "2024-12-01.parquet")
    pd.testing.assert_frame_equal(nightly, pd.read_parquet(tmp_path / "features_snapshot.parquet"))
    assert res["contacted"] == int((scores["action"] != "none").sum())
    # Quality at this scale, read back from the store the train stage wrote.
    quality = res["model_quality"]
    assert set(quality) == {"siyu-churn", "siyu-repurchase-7d", "siyu-clv"}
    for name in ("siyu-churn", "siyu-repurchase-7d"):
        assert 0.5 < quality[name]["siyu_lgbm.auc"] <= 1 and 0 < quality[name]["logistic.auc"] <= 1, name
    assert -1 <= quality["siyu-clv"]["eval_spearman"] <= 1

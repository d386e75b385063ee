"""`siyu train` end to end on a small synthetic world: determinism, round-trip, gate, concurrency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from siyu.cli import app
from tests.training.world import fast_config, write_config, write_small_world
from training import tracking

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_small_world(tmp_path_factory.mktemp("world"), 2500, seed=5)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return write_config(fast_config(), tmp_path_factory.mktemp("cfg") / "fast.yaml")


def _train(args: list[str]) -> str:
    res = runner.invoke(app, ["train", *args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


@pytest.mark.slow
def test_train_all_twice_gives_identical_predictions_and_models(world, config_file, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        text = _train(["all", "--data", str(world), "--config", str(config_file), "--out", str(out)])
        assert "summary:" in text and "siyu-churn" in text
    for kind in ("churn", "repurchase_7d", "clv"):
        a = pd.read_parquet(outs[0] / f"{kind}_eval_predictions.parquet")
        b = pd.read_parquet(outs[1] / f"{kind}_eval_predictions.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert len(a) > 100
    # Same content → same artifact checksum on both registered versions.
    for name in ("siyu-churn", "siyu-repurchase-7d", "siyu-clv"):
        v = tracking.model_versions(name)
        assert len(v) == 2 and v["artifact_sha256"].nunique() == 1, name
        assert v["data_fingerprint"].nunique() == 1


@pytest.mark.slow
def test_registered_model_predicts_like_the_in_memory_model(world):
    from training import btyd_baseline as bb
    from training import pipeline as pl

    cfg = fast_config()
    df = pl.load_training_frame(world, cfg.plan().all_cutoffs(), cfg)
    df, fits = bb.add_btyd_features(df, cfg.btyd.horizons_days)
    outcome = pl.fit_classifier(df, cfg, fits)
    summary = pl.run_classifier(outcome, cfg, "fingerprint", {"rows": len(df)})
    loaded = tracking.load_model(f"models:/siyu-churn/{summary.version}")
    in_memory = outcome.model.predict_proba(outcome.eval_X)[:, 1]
    assert np.array_equal(loaded.predict(outcome.eval_X), in_memory)
    # MLflow's own loader, through the registry, with no siyu code in between.
    pyfunc = mlflow.pyfunc.load_model(f"models:/siyu-churn/{summary.version}")
    assert np.array_equal(pyfunc.predict(outcome.eval_X), in_memory)
    arts = {a.path for a in tracking.client().list_artifacts(summary.run_id)}
    assert {"config.yaml", "config.json", "figures", "tables", "predictions"} <= arts


@pytest.mark.slow
def test_deliberately_worse_model_is_not_promoted(world, config_file, tmp_path):
    out = _train(["churn", "--data", str(world), "--config", str(config_file)])
    assert "→ champion" in out
    # A crippled model: one two-leaf tree and no BTYD features.
    worse = fast_config(lightgbm={**fast_config().lightgbm.model_dump(), "n_estimators": 1, "num_leaves": 2},
                        btyd={**fast_config().btyd.model_dump(), "enabled": False})
    worse_file = write_config(worse, tmp_path / "worse.yaml")
    out = _train(["churn", "--data", str(world), "--config", str(worse_file)])
    assert "→ challenger" in out
    versions = tracking.model_versions("siyu-churn")
    assert versions["aliases"].tolist() == ["champion", "challenger"]
    assert "AUC" in versions.loc[1, "promotion_reason"]
    champ = tracking.load_model("models:/siyu-churn@champion")
    assert champ.version == "1"


@pytest.mark.slow
@pytest.mark.e2e
def test_four_siyu_train_processes_share_one_sqlite_store(world, config_file, tmp_path):
    uri = f"sqlite:///{tmp_path}/shared.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    siyu = str(Path(sys.executable).with_name("siyu"))
    jobs = [["churn"], ["repurchase"], ["clv"], ["churn", "--seed", "8"]]
    procs = [subprocess.Popen([siyu, "train", *job, "--data", str(world), "--config", str(config_file)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for job in jobs]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
        assert "database is locked" not in out
    c = tracking.client(uri)
    assert len(c.search_model_versions("name='siyu-churn'")) == 2
    assert len(c.search_model_versions("name='siyu-repurchase-7d'")) == 1
    assert len(c.search_model_versions("name='siyu-clv'")) == 1
    assert (tmp_path / "mlartifacts").is_dir()


@pytest.mark.slow
def test_classifier_frame_is_the_labelled_rows_of_the_stacked_frame(world):
    from training import btyd_baseline as bb
    from training import pipeline as pl
    from training.config import ModelKind

    for kind in (ModelKind.churn, ModelKind.repurchase_7d):
        cfg = fast_config().for_model(kind)
        got, fits = pl.load_classifier_frame(world, cfg, progress=False)
        stacked = pl.load_training_frame(world, cfg.plan().all_cutoffs(), cfg, progress=False)
        want, want_fits = bb.add_btyd_features(stacked, cfg.btyd.horizons_days, cfg.btyd.clv_months,
                                               cfg.btyd.monthly_discount_rate, cfg.btyd.penalizers)
        label = pl.LABEL_COLUMNS[kind]
        want = want[want[label].notna()].reset_index(drop=True)
        # Ordered fold by fold, so that every fold is one block of rows (taken as a view).
        folds = cfg.plan().folds()
        ranks = got["cutoff"].map({pd.Timestamp(c): i for i, cs in enumerate(folds.values()) for c in cs})
        assert ranks.is_monotonic_increasing
        for cutoffs in folds.values():
            rows = pl._fold(got, label, cutoffs)
            assert len(rows) > 0 and np.shares_memory(rows["btyd_x"].to_numpy(), got["btyd_x"].to_numpy())
        assert got.groupby("cutoff", sort=False)["customer_id"].is_monotonic_increasing.all()
        got = got.sort_values(["customer_id", "cutoff"], kind="stable", ignore_index=True)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert [f.report() for f in fits] == [f.report() for f in want_fits]

"""The serving-facing registry API: champions by alias, verified, predicting on a snapshot frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.training.world import fast_config, write_small_world
from training import btyd_baseline as bb
from training import pipeline as pl
from training import tracking
from training.config import ModelKind
from training.registry import ClassifierChampion, CLVChampion, load_champion, load_champions


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train and register all three models on a small world into one store; keep the in-memory models."""
    world = write_small_world(tmp_path_factory.mktemp("world"), 2500, seed=5)
    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlruns.db"
    cfg = fast_config(tracking_uri=uri)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    out = {"uri": uri, "world": world}
    try:
        for kind in (ModelKind.churn, ModelKind.repurchase_7d):
            kcfg = cfg.for_model(kind)
            df = pl.load_training_frame(world, kcfg.plan().all_cutoffs(), kcfg)
            raw = df.copy()
            df, fits = bb.add_btyd_features(df, kcfg.btyd.horizons_days, kcfg.btyd.clv_months,
                                            kcfg.btyd.monthly_discount_rate, kcfg.btyd.penalizers)
            outcome = pl.fit_classifier(df, kcfg, fits)
            summary = pl.run_classifier(outcome, kcfg, "fp", {"rows": len(df)})
            out[kind] = (outcome, summary, raw[raw["cutoff"] == pd.Timestamp(kcfg.plan().evaluation)])
        ccfg = cfg.for_model(ModelKind.clv)
        rows = pl.load_training_frame(world, [ccfg.clv.cutoff], ccfg)
        clv_outcome = pl.fit_clv(rows, ccfg)
        out[ModelKind.clv] = (clv_outcome, pl.run_clv(clv_outcome, ccfg, "fp", {"rows": len(rows)}), rows)
    finally:
        mp.undo()
    return out


@pytest.mark.slow
def test_champions_predict_on_a_snapshot_like_the_trained_models(trained):
    champs = load_champions(uri=trained["uri"])
    assert champs.versions() == {"churn": "1", "repurchase_7d": "1", "clv": "1"}
    for kind in (ModelKind.churn, ModelKind.repurchase_7d):
        outcome, summary, snapshot = trained[kind]
        champ = champs.churn if kind is ModelKind.churn else champs.repurchase_7d
        version = tracking.client(trained["uri"]).get_model_version(champ.stamp.name, summary.version)
        assert champ.stamp.checksum == version.tags["artifact_sha256"]
        assert champ.stamp.run_id == summary.run_id
        assert champ.stamp.alias == "champion" and champ.features == outcome.features
        assert champ.btyd.horizons_days == fast_config().btyd.horizons_days
        assert champ.booster.current_iteration() == outcome.model.best_iteration_
        # The whole snapshot of the evaluation cutoff, without BTYD features: prepare refits them at the
        # cutoff exactly as training did, so the evaluation rows score bit-identically.
        X = champ.prepare(snapshot)
        assert set(champ.btyd_columns()) <= set(X.columns) and len(X) == len(snapshot)
        rows = X.set_index("customer_id").loc[outcome.eval_frame["customer_id"]]
        np.testing.assert_array_equal(champ.predict_proba(rows), outcome.eval_frame["p_siyu_lgbm"].to_numpy())
        raw = champ.booster.predict(champ.estimator._encode(rows[champ.features]))
        np.testing.assert_array_equal(champ.calibrator.predict(raw), champ.predict_proba(rows))
        with pytest.raises(ValueError, match="prepare"):
            champ.predict_proba(snapshot)
    clv_outcome, clv_summary, rows = trained[ModelKind.clv]
    assert champs.clv.stamp.version == clv_summary.version
    assert champs.clv.bundle.bg.params_ == clv_outcome.bundle.bg.params_
    pd.testing.assert_frame_equal(champs.clv.predict_frame(rows), clv_outcome.bundle.predict_frame(rows))


@pytest.mark.slow
def test_load_champion_by_kind_and_alias_and_refuses_tampering(trained):
    one = load_champion("repurchase", uri=trained["uri"])
    assert isinstance(one, ClassifierChampion) and one.kind is ModelKind.repurchase_7d
    assert isinstance(load_champion("clv", uri=trained["uri"]), CLVChampion)
    with pytest.raises(Exception, match="challenger"):
        load_champion("churn", alias="challenger", uri=trained["uri"])
    c = tracking.client(trained["uri"])
    registered = c.get_model_version("siyu-clv", "1").tags["artifact_sha256"]
    c.set_model_version_tag("siyu-clv", "1", "artifact_sha256", "0" * 64)
    try:
        with pytest.raises(ValueError, match="checksum"):
            load_champion("clv", uri=trained["uri"])
    finally:
        c.set_model_version_tag("siyu-clv", "1", "artifact_sha256", registered)

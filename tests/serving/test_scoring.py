"""The shared scoring function: agrees with the registered models and training's math, row by row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.batch import snapshot_at
from serving.scoring import Scorer, ScoringConfig, load_champions
from tests.serving.served_world import ServedWorld
from training import btyd_baseline as bb
from training import clv, tracking
from training.explain import reason_codes

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving")]


@pytest.fixture(scope="module")
def snapshot(served_world: ServedWorld) -> pd.DataFrame:
    snap, _ = snapshot_at(served_world.data, served_world.cutoff)
    return snap


@pytest.fixture(scope="module")
def scorer(served_world: ServedWorld, snapshot: pd.DataFrame) -> Scorer:
    return Scorer.fit(load_champions(uri=served_world.store_uri), snapshot, served_world.cutoff)


@pytest.fixture(scope="module")
def scores(scorer: Scorer, snapshot: pd.DataFrame) -> pd.DataFrame:
    return scorer.score(snapshot)


def test_probabilities_are_the_registered_pyfunc_models(served_world, scorer, snapshot, scores):
    # The registered pyfunc (mlflow.pyfunc.load_model through training.tracking) on the same features.
    churn = tracking.load_model("models:/siyu-churn@champion", uri=served_world.store_uri)
    rep = tracking.load_model("models:/siyu-repurchase-7d@champion", uri=served_world.store_uri)
    assert scorer.versions() == {"churn": churn.version, "repurchase_7d": rep.version, "clv": "1"}
    X = scorer.feature_frame(snapshot)
    inside = scores["p_churn"].notna().to_numpy()
    assert 0.3 < inside.mean() < 1.0
    assert np.array_equal(scores["p_churn"].to_numpy()[inside], churn.predict(X)[inside])
    assert np.array_equal(scores["p_repurchase_7d"].to_numpy(), rep.predict(X))


def test_churn_speaks_only_for_its_population(scores, snapshot):
    from features.labels import CHURN_ACTIVE_DAYS

    recent = (snapshot["recency_days"] <= CHURN_ACTIVE_DAYS).to_numpy()
    assert np.array_equal(scores["p_churn"].notna().to_numpy(), recent)
    assert scores.loc[~recent, "shap_reason_1"].isna().all()
    assert scores.loc[~recent, "shap_reason_1_value"].isna().all()


def test_shap_reasons_are_lightgbm_pred_contrib(scorer, snapshot, scores):
    est = scorer.models.churn.estimator
    X = scorer.feature_frame(snapshot)
    contrib = est.contributions(X).drop(columns="bias")
    expected = reason_codes(contrib, k=3, direction="up")
    inside = scores["p_churn"].notna().to_numpy()
    for i in (1, 2, 3):
        got, want = scores[f"shap_reason_{i}_value"][inside], expected[f"contribution_{i}"][inside]
        assert np.allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)
        names, want_names = scores[f"shap_reason_{i}"][inside], expected[f"reason_{i}"][inside]
        swapped = (names != want_names) & want_names.notna()
        # A name may differ only where two features contribute equally (to rounding).
        assert swapped.mean() < 0.01
        for row, name in names[swapped].items():
            assert abs(contrib.at[row, name] - want[row]) < 1e-9
    # Reasons push the risk up, largest first.
    v = scores.loc[inside, ["shap_reason_1_value", "shap_reason_2_value"]].dropna()
    assert (v["shap_reason_1_value"] >= v["shap_reason_2_value"]).all() and (v > 0).all().all()


def test_btyd_features_are_training_s_path_at_the_scoring_cutoff(scorer, snapshot, served_world):
    # training.btyd_baseline.add_btyd_features, as the training pipeline calls it, on the scoring snapshot.
    c = scorer.models.churn
    frame = snapshot.assign(cutoff=pd.Timestamp(served_world.cutoff))
    expected, _ = bb.add_btyd_features(
        frame, c.btyd.horizons_days, c.btyd.clv_months, c.btyd.monthly_discount_rate, c.btyd.penalizers
    )
    got = scorer.feature_frame(snapshot)
    cols = c.btyd_columns()
    assert cols and set(cols) <= set(c.estimator.feature_names_in_)
    pd.testing.assert_frame_equal(
        got[cols].reset_index(drop=True), expected[cols].reset_index(drop=True), check_exact=True
    )


def test_clv_equals_training_clv_and_interval_matches_simulation(scorer, snapshot, scores):
    bundle = scorer.models.clv.bundle
    x, t_x, T, m = (snapshot[c] for c in bb.BTYD_INPUTS)
    m = m.fillna(0.0)
    ref = clv.customer_lifetime_value(
        bundle.bg, bundle.gg, x, t_x, T, m, 12, bundle.monthly_discount_rate, 1.0
    )
    np.testing.assert_allclose(scores["clv_12m"], ref, rtol=1e-12)
    ep = bundle.bg.expected_purchases(90.0, x, t_x, T)
    np.testing.assert_array_equal(scores["expected_purchases_90d"], ep)
    # The delta-method interval against training.clv's simulated interval (4,000 parameter draws).
    sample = np.arange(0, len(snapshot), max(1, len(snapshot) // 200))
    sim = clv.clv_interval(
        bundle.bg,
        bundle.gg,
        x.iloc[sample],
        t_x.iloc[sample],
        T.iloc[sample],
        m.iloc[sample],
        12,
        bundle.monthly_discount_rate,
        1.0,
        n_draws=4000,
        level=0.9,
        seed=3,
    )
    low, high = scores["clv_12m_low"].to_numpy()[sample], scores["clv_12m_high"].to_numpy()[sample]
    assert np.median(np.abs(low / sim["clv_lower"].to_numpy() - 1)) < 0.02
    assert np.median(np.abs(high / sim["clv_upper"].to_numpy() - 1)) < 0.02
    assert (low <= scores["clv_12m"].to_numpy()[sample]).all() and (
        scores["clv_12m"].to_numpy()[sample] <= high
    ).all()


def test_each_row_scores_alone_exactly_as_in_the_whole_snapshot(scorer, snapshot, scores):
    picks = list(range(0, len(snapshot), max(1, len(snapshot) // 40)))
    for i in picks:
        alone = scorer.score(snapshot.iloc[[i]])
        pd.testing.assert_frame_equal(alone, scores.iloc[[i]].reset_index(drop=True), check_exact=True)
    enc = scorer.encode(snapshot)
    subset = pd.DataFrame(scorer.score_encoded(enc.take(picks[::-1])), columns=scorer.columns())
    pd.testing.assert_frame_equal(subset, scores.iloc[picks[::-1]].reset_index(drop=True), check_exact=True)


def test_payload_round_trip_and_thread_count_change_nothing(scorer, snapshot, scores):
    again = Scorer.from_payload(scorer.to_payload())
    pd.testing.assert_frame_equal(again.score(snapshot), scores, check_exact=True)
    one_thread = Scorer(scorer.models, scorer.feature_fits, scorer.cutoff, ScoringConfig(lgbm_threads=1))
    pd.testing.assert_frame_equal(one_thread.score(snapshot), scores, check_exact=True)


def test_native_trees_give_exactly_lightgbms_scores(scorer, snapshot, scores):
    native = Scorer(scorer.models, scorer.feature_fits, scorer.cutoff, ScoringConfig(trees="native"))
    assert native.prepare(explain=False) == {"churn": True, "repurchase_7d": True}
    pd.testing.assert_frame_equal(native.score(snapshot), scores, check_exact=True)
    alone = native.score(snapshot.iloc[[7]])  # a single row, as an HTTP request
    pd.testing.assert_frame_equal(alone, scores.iloc[[7]].reset_index(drop=True), check_exact=True)


def test_customers_without_a_purchase_get_the_bgnbd_prior(scorer, snapshot):
    rows = snapshot.iloc[:3].copy()
    rows[list(bb.BTYD_INPUTS)] = np.nan
    out = scorer.score(rows)
    bg = scorer.models.clv.bundle.bg
    assert (out["p_alive"] == 1.0).all()
    assert np.allclose(out["expected_purchases_90d"], bg.expected_purchases_population(90.0))
    assert out["clv_12m"].nunique() == 1 and out["clv_12m"].iloc[0] > 0
    assert out["clv_12m_low"].isna().all()


def test_score_without_explain_leaves_reasons_empty_and_the_rest_equal(scorer, snapshot, scores):
    quick = scorer.score(snapshot, explain=False)
    assert quick["shap_reason_1"].isna().all()
    same = [c for c in scores.columns if not c.startswith("shap_reason_")]
    pd.testing.assert_frame_equal(quick[same], scores[same], check_exact=True)


def test_missing_snapshot_columns_are_named(scorer, snapshot):
    with pytest.raises(ValueError, match="n_orders"):
        scorer.score(snapshot.drop(columns=["n_orders"]))


def test_probabilities_equal_the_registry_prepare_and_predict_path(scorer, snapshot, scores):
    # training.registry refits the BTYD features on the whole snapshot on each call; the scorer fits once.
    churn, rep = scorer.models.churn, scorer.models.repurchase_7d
    inside = scores["p_churn"].notna().to_numpy()
    assert np.array_equal(
        scores["p_churn"].to_numpy()[inside], churn.predict_proba(churn.prepare(snapshot))[inside]
    )
    assert np.array_equal(scores["p_repurchase_7d"].to_numpy(), rep.predict_proba(rep.prepare(snapshot)))


def _records(rows: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as an HTTP request carries them: Python values, missing as None, no cutoff."""
    frame = rows.drop(columns=["cutoff"]).astype(object)
    return frame.where(frame.notna(), None).to_dict("records")


def test_encoded_records_equal_the_encoded_frame_bit_for_bit(scorer, snapshot, scores):
    rows = snapshot.sample(60, random_state=3).reset_index(drop=True)
    # Unseen and missing categories, missing numbers, no purchase history: every encoding branch.
    rows.loc[0, "acquisition_channel"] = "a-channel-never-seen"
    rows.loc[1, ["member_level", "preferred_channel"]] = None
    rows.loc[2, ["n_orders", "recency_days", "aov"]] = np.nan
    rows.loc[3, list(bb.BTYD_INPUTS)] = np.nan
    records = _records(rows)
    for size in (1, 5, len(records)):  # a request's few rows and more (the categories' two lookups)
        got = scorer.encode_records(records[:size])
        want = scorer.encode(rows.iloc[:size])
        assert got.X.keys() == want.X.keys()
        for key in want.X:
            np.testing.assert_array_equal(got.X[key], want.X[key])
        np.testing.assert_array_equal(got.btyd, want.btyd)
        assert got.customer_id.tolist() == want.customer_id.tolist()
        np.testing.assert_array_equal(got.recency_days, want.recency_days)
    picks = rows.index[4:].tolist()
    live = pd.DataFrame(scorer.score_encoded(scorer.encode_records(records[4:])), columns=scorer.columns())
    at = snapshot.set_index("customer_id").index.get_indexer(rows.loc[picks, "customer_id"])
    pd.testing.assert_frame_equal(live, scores.iloc[at].reset_index(drop=True), check_exact=True)


def test_records_missing_a_column_are_named(scorer, snapshot):
    records = _records(snapshot.iloc[:2])
    del records[1]["n_orders"]
    with pytest.raises(ValueError, match="n_orders"):
        scorer.encode_records(records)

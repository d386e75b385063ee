"""TreeSHAP by leaf tables: LightGBM's pred_contrib values on every kind of split, row by row."""

from __future__ import annotations

import lightgbm as lgb
import numba
import numpy as np
import pytest

from training import treeshap
from training._treeshap_kernel import leaf_tables


def _data(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    X = rng.normal(size=(n, 6)) * scale
    X[:, 4] = rng.integers(0, 3, n)  # many exact zeros (zero-as-missing splits)
    X[:, 5] = rng.integers(-2, 45, n)  # categorical codes; negatives and unseen codes when scoring
    X[rng.random(X.shape) < 0.15] = np.nan
    return X


@pytest.fixture(scope="module", params=["nan_missing", "zero_missing", "no_missing"])
def booster(request) -> lgb.Booster:
    rng = np.random.default_rng(3)
    X = _data(rng, 6000)
    X[:, 5] = np.abs(X[:, 5]) % 40
    signal = np.nan_to_num(X[:, 0]) + (X[:, 5] % 3 == 0) - np.isnan(X[:, 1]) + X[:, 4]
    y = signal + rng.normal(size=6000) > 1
    params = {
        "objective": "binary",
        "num_leaves": 31,
        "min_data_in_leaf": 20,
        "min_data_per_group": 5,
        "cat_smooth": 1.0,
        "bagging_fraction": 0.7,
        "bagging_freq": 1,
        "verbose": -1,
        "seed": 1,
        "use_missing": request.param != "no_missing",
        "zero_as_missing": request.param == "zero_missing",
    }
    return lgb.train(params, lgb.Dataset(X, y.astype(int), categorical_feature=[5]), num_boost_round=80)


def test_contributions_equal_lightgbm_pred_contrib(booster):
    X = _data(np.random.default_rng(9), 4000, scale=2.0)
    X[:40, 0] = 0.0
    got = treeshap.TreeShap(booster.model_to_string()).contributions(X)
    want = booster.predict(X, pred_contrib=True)[:, :-1]
    assert np.abs(got - want).max() < 1e-12 * max(1.0, np.abs(want).max())
    # SHAP values add up to the raw score (local accuracy), bias aside.
    bias = booster.predict(X, pred_contrib=True)[:, -1]
    assert np.allclose(got.sum(axis=1) + bias, booster.predict(X, raw_score=True), atol=1e-10)


def test_a_row_gets_the_same_bits_alone_in_any_block_and_thread_count(booster):
    X = _data(np.random.default_rng(4), 700)
    shap = treeshap.TreeShap(booster.model_to_string())
    whole = shap.contributions(X)
    assert np.array_equal(shap.contributions(X[[512]]), whole[[512]])
    assert np.array_equal(shap.contributions(X[::-1]), whole[::-1])
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert np.array_equal(shap.contributions(X), whole)
    finally:
        numba.set_num_threads(threads)


def test_compiled_leaf_tables_equal_the_reference_formula():
    rng = np.random.default_rng(0)
    zeros = [rng.uniform(0.05, 0.95, d) for d in (1, 2, 3, 5, 8)]
    values = rng.normal(size=len(zeros))
    starts = np.cumsum([0, *(len(z) for z in zeros)])
    table_starts = np.cumsum([0, *(len(z) * 2 ** len(z) for z in zeros)])
    tables = np.empty(table_starts[-1])
    leaf_tables(values, starts, np.concatenate(zeros), table_starts, tables)
    for leaf, z in enumerate(zeros):
        ref = treeshap.leaf_table(float(values[leaf]), z).ravel()
        assert np.allclose(tables[table_starts[leaf] : table_starts[leaf + 1]], ref, rtol=1e-12, atol=1e-15)


def test_single_feature_leaf_is_value_times_follow_minus_share():
    table = treeshap.leaf_table(2.0, np.array([0.25]))
    assert table[:, 0].tolist() == [2.0 * (0 - 0.25), 2.0 * (1 - 0.25)]


def test_wrong_width_is_refused(booster):
    with pytest.raises(ValueError, match=r"expected a \(rows, 6\) matrix"):
        treeshap.TreeShap(booster.model_to_string()).contributions(np.zeros((3, 5)))

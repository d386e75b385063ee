"""Native boosters (tl2cgen): the same probabilities as LightGBM, bit for bit, cached by model text."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from training import trees


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    """A booster with missing values, a categorical feature and deep-ish trees."""
    rng = np.random.default_rng(5)
    n = 6000
    X = rng.normal(size=(n, 6))
    X[:, 5] = rng.integers(0, 7, n)
    X[rng.random(X.shape) < 0.15] = np.nan
    y = (np.nan_to_num(X[:, 0]) + (X[:, 5] == 3) - np.isnan(X[:, 1]) + rng.normal(size=n) > 0.3).astype(int)
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 40, "verbose": -1, "seed": 1}
    return lgb.train(params, lgb.Dataset(X, y, categorical_feature=[5]), num_boost_round=60)


def _scoring_rows(seed: int, n: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)) * 2
    X[:, 5] = rng.integers(-1, 10, n)  # codes the model never saw, and -1
    X[rng.random(X.shape) < 0.2] = np.nan
    return X


def test_native_booster_predicts_lightgbm_bit_for_bit(booster):
    native = trees.native_booster(booster.model_to_string(), threads=2)
    assert native is not None
    X = _scoring_rows(3)
    assert np.array_equal(native.predict(X), booster.predict(X))
    assert np.array_equal(native.predict(X[:1]), booster.predict(X[:1]))  # one row, as over HTTP
    assert native.predict(X[:0]).shape == (0,)


def test_libraries_are_cached_by_model_text_and_settings(booster, tmp_path, monkeypatch):
    monkeypatch.setenv(trees.CACHE_ENV, str(tmp_path))
    text = booster.model_to_string()
    first = trees.compile_booster(text)
    assert first.parent == tmp_path / "trees" and first.exists()
    stamp = first.stat().st_mtime_ns
    assert trees.compile_booster(text) == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    other = trees.library_path(text, trees.CompileSettings(optimisation="-O2"))
    assert other != first and not other.exists()
    smaller = booster.model_to_string(num_iteration=10)
    assert trees.library_path(smaller, trees.CompileSettings()) != first


def test_without_a_compiler_callers_keep_lightgbm(booster, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc on PATH
    with caplog.at_level("WARNING", logger="siyu.training.trees"):
        assert trees.native_booster(booster.model_to_string(num_iteration=5)) is None
    assert "no gcc" in caplog.text

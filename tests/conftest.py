"""Shared test configuration: keep every test off the user's MLflow store, PII key and caches."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def _tree_cache(tmp_path_factory: pytest.TempPathFactory):
    """One cache of compiled boosters per test process (never the developer's ~/.cache)."""
    return tmp_path_factory.mktemp("siyu-cache")


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, _tree_cache
) -> None:
    # Tests never write into the developer's ./mlruns.db; each test gets its own store unless it sets one.
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlruns.db")
    monkeypatch.setenv("SIYU_PII_KEY", "test-only-pii-key")
    monkeypatch.setenv("SIYU_CACHE_DIR", str(_tree_cache))


@pytest.fixture(scope="session")
def spark_session():
    """One local SparkSession per test process; mark its tests ``spark`` and ``xdist_group("spark")``."""
    from features.engine import EngineConfig, local_spark_session

    config = EngineConfig(
        name="spark",
        spark_master="local[2]",
        spark_shuffle_partitions=2,
        spark_driver_memory="1g",
        spark_conf={"spark.ui.showConsoleProgress": "false"},
    )
    session = local_spark_session(config)
    yield session
    session.stop()

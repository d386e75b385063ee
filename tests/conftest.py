"""Shared test configuration: keep every test off the user's MLflow store and PII key."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests never write into the developer's ./mlruns.db; each test gets its own store unless it sets one.
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlruns.db")
    monkeypatch.setenv("SIYU_PII_KEY", "test-only-pii-key")

"""Fixtures of the scoring tests: one trained world per test process (they share an xdist group)."""

from __future__ import annotations

import pytest

from tests.serving.served_world import ServedWorld, train_world


@pytest.fixture(scope="session")
def served_world(tmp_path_factory: pytest.TempPathFactory) -> ServedWorld:
    """A synthetic world with champion models in its own sqlite store (trained once per process)."""
    return train_world(tmp_path_factory.mktemp("served"))

"""A small synthetic world shared by the simulator and CLI tests of this folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.synthetic import SynthConfig, generate_world, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(SynthConfig(customers=4_000, seed=11)), out)
    return out

"""`mlflow run . -e train -P model=churn --env-manager local` trains and registers the churn model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.world import fast_config, write_config, write_small_world
from training import tracking

ROOT = Path(__file__).parents[2]


@pytest.mark.e2e
@pytest.mark.slow
def test_mlflow_run_train_entry_point(tmp_path: Path) -> None:
    data = write_small_world(tmp_path / "data", customers=3000, seed=5)
    config = write_config(fast_config(), tmp_path / "config.yaml")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(Path(bin_dir) / "mlflow"), "run", str(ROOT), "-e", "train", "-P", "model=churn",
         "-P", f"data={data}", "-P", f"config={config}", "--env-manager", "local"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    run_id = re.search(r"Run \(ID '([0-9a-f]+)'\) succeeded", log)
    assert run_id, log[-3000:]
    versions = tracking.model_versions("siyu-churn", uri)
    assert len(versions) == 1
    # The project's run is the training run: the registered version points at it.
    assert versions.loc[0, "run_id"] == run_id.group(1)
    assert "champion" in versions.loc[0, "aliases"]

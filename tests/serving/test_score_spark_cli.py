"""`siyu score --engine spark` end to end: the snapshot built on Spark, the scores computed in Spark
``mapInPandas`` tasks from the broadcast model payload, and the same table as the DuckDB job."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.io import snapshot_dir
from siyu.cli import app
from tests.serving.served_world import ServedWorld, tracking_env

# In the serving group: it shares the trained world (and this process's one SparkSession) with test_batch.
pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.xdist_group("serving")]


def _contract_copy(world: ServedWorld, dest: Path) -> Path:
    """The world's contract tables without any snapshot, so that the job must build one."""
    dest.mkdir(parents=True)
    for table in world.data.glob("*.parquet"):
        shutil.copy2(table, dest / table.name)
    return dest


def _score(world: ServedWorld, data: Path, out: Path, engine: str) -> str:
    args = ["score", "--data", str(data), "--cutoff", world.cutoff.isoformat(), "--out", str(out)]
    with tracking_env(world.store_uri):
        res = CliRunner().invoke(app, [*args, "--engine", engine])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_cli_score_on_spark_gives_the_duckdb_table(
    served_world: ServedWorld, spark_session, tmp_path: Path
) -> None:
    # The CLI finds the active session (as under spark-submit) instead of starting its own.
    runs = {}
    for engine in ("duckdb", "spark"):
        data = _contract_copy(served_world, tmp_path / engine / "data")
        output = _score(served_world, data, tmp_path / engine / "scores.parquet", engine)
        assert "built snapshot" in output
        snapshot = pd.read_parquet(snapshot_dir(data) / f"{served_world.cutoff}.parquet")
        runs[engine] = (snapshot, pd.read_parquet(tmp_path / engine / "scores.parquet"))

    (duck_snap, duck), (spark_snap, spark) = runs["duckdb"], runs["spark"]
    pd.testing.assert_frame_equal(spark_snap, duck_snap, check_exact=False, rtol=1e-9, atol=0)
    pd.testing.assert_frame_equal(spark, duck, check_exact=True)
    # The comparison covers real scores, decisions and the reasons of the contacted customers.
    assert len(duck) == len(duck_snap) > 1000
    assert np.isfinite(duck["p_repurchase_7d"]).all() and duck["p_churn"].notna().any()
    contacted = duck["channel"].notna()
    assert contacted.any() and duck.loc[contacted & duck["p_churn"].notna(), "shap_reason_1"].notna().all()

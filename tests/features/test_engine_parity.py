"""The same feature and label definitions give identical outputs on DuckDB and on local PySpark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.engine import Engine, EngineConfig, local_spark_session
from features.snapshot import CATEGORICAL, build_snapshot, compute_snapshot, load_tables
from features.synthetic import SynthConfig, generate_world, write_world
from features.training_set import build_training_set
from siyu.cli import app

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.xdist_group("spark")]

CUTOFFS = ["2023-09-01", "2024-03-01"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parity") / "data"
    write_world(generate_world(SynthConfig(customers=400, seed=5)), out)
    return out


@pytest.fixture(scope="module")
def spark(spark_session) -> Engine:
    return Engine(EngineConfig(name="spark"), spark=spark_session)


def assert_same_frames(duck: pd.DataFrame, spark: pd.DataFrame) -> None:
    """Same columns, dtypes, keys and categories; floats within 1e-9 relative, missing in the same places."""
    assert list(spark.columns) == list(duck.columns)
    assert dict(spark.dtypes) == dict(duck.dtypes)
    assert len(duck) > 0
    for col in duck.columns:
        a, b = duck[col], spark[col]
        if pd.api.types.is_float_dtype(a):
            np.testing.assert_allclose(
                b.to_numpy(), a.to_numpy(), rtol=1e-9, atol=0, equal_nan=True, err_msg=col
            )
        else:
            assert a.equals(b), col


def test_training_set_identical_on_duckdb_and_spark(world: Path, spark: Engine) -> None:
    duck = build_training_set(world, CUTOFFS, progress=False)
    sp = build_training_set(world, CUTOFFS, progress=False, engine=spark)
    assert_same_frames(duck, sp)
    # The comparison covers every family and every label, with real variation in each.
    assert {c for c in CATEGORICAL if duck[c].nunique() > 1} == set(CATEGORICAL)
    labelled = duck[duck["cutoff"] == duck["cutoff"].min()]
    assert labelled[["label_churn", "label_repurchase_7d"]].notna().any().all()
    assert (labelled["label_future_net_spend_365d"] > 0).any()


def test_in_memory_tables_identical_on_duckdb_and_spark(world: Path, spark: Engine) -> None:
    tables = load_tables(world)
    assert_same_frames(
        compute_snapshot(tables, CUTOFFS[1]), compute_snapshot(tables, CUTOFFS[1], engine=spark)
    )


def test_cli_build_with_spark_engine(world: Path, tmp_path: Path, spark: Engine) -> None:
    # The CLI picks up the active session started by the fixture, as it would on a cluster.
    runner = CliRunner()
    args = ["features", "build", "--data", str(world), "--cutoff", CUTOFFS[0]]
    duck = runner.invoke(app, [*args, "--out", str(tmp_path / "duck.parquet")])
    sp = runner.invoke(app, [*args, "--out", str(tmp_path / "spark.parquet"), "--engine", "spark"])
    assert duck.exit_code == 0, duck.output
    assert sp.exit_code == 0, sp.output
    assert "(spark)" in sp.output
    assert_same_frames(
        pd.read_parquet(tmp_path / "duck.parquet"), pd.read_parquet(tmp_path / "spark.parquet")
    )


def test_cli_training_set_with_spark_engine(world: Path, tmp_path: Path, spark: Engine) -> None:
    # `siyu features training-set --engine spark` on the fixture's active session, against DuckDB.
    runner = CliRunner()
    args = ["features", "training-set", "--data", str(world), "--cutoffs", CUTOFFS[0]]
    duck = runner.invoke(app, [*args, "--out", str(tmp_path / "duck.parquet")])
    sp = runner.invoke(app, [*args, "--out", str(tmp_path / "spark.parquet"), "--engine", "spark"])
    assert duck.exit_code == 0, duck.output
    assert sp.exit_code == 0, sp.output
    got, want = pd.read_parquet(tmp_path / "spark.parquet"), pd.read_parquet(tmp_path / "duck.parquet")
    assert_same_frames(want, got)
    assert want["label_churn"].notna().any() and want["label_repurchase_7d"].notna().any()
    manifests = [json.loads((tmp_path / f"{n}.manifest.json").read_text()) for n in ("duck", "spark")]
    assert [m.pop("engine") for m in manifests] == ["duckdb", "spark"]
    assert manifests[0] == manifests[1]


def test_spark_reads_the_local_files_whatever_the_default_file_system(
    world: Path, spark: Engine, spark_session
) -> None:
    # On a YARN cluster fs.defaultFS is HDFS: a bare path would be looked up there, not where the driver
    # found the data directory. siyu names the file:// scheme, so the setting does not matter.
    hadoop = spark_session.sparkContext._jsc.hadoopConfiguration()
    default_fs = hadoop.get("fs.defaultFS")
    hadoop.set("fs.defaultFS", "nofs://cluster/")
    try:
        got = build_snapshot(world, CUTOFFS[1], engine=spark)
    finally:
        hadoop.set("fs.defaultFS", default_fs)
    assert_same_frames(build_snapshot(world, CUTOFFS[1]), got)


def test_an_active_session_keeps_its_own_settings(spark_session) -> None:
    # `siyu score --engine spark` asks for a local session; on a cluster it must get the cluster's as is.
    conf = spark_session.conf
    before = conf.get("spark.sql.shuffle.partitions")
    conf.set("spark.sql.shuffle.partitions", "7")
    conf.set("spark.sql.session.timeZone", "Asia/Shanghai")
    try:
        got = local_spark_session(EngineConfig(name="spark", spark_shuffle_partitions=4))
        assert got is spark_session
        assert conf.get("spark.sql.shuffle.partitions") == "7"
        assert conf.get("spark.sql.session.timeZone") == "UTC"  # what siyu relies on is still applied
    finally:
        conf.set("spark.sql.shuffle.partitions", before)
        conf.set("spark.sql.session.timeZone", "UTC")

"""`siyu score`: one stamped row per customer, decisions within the policy, atomic and idempotent output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.assignment import global_holdout_mask
from features.io import snapshot_dir
from serving.batch import BatchConfig, in_customer_order, policy_inputs, run_batch
from serving.scoring import load_champions
from serving.tiering import load_policy
from siyu.cli import app
from tests.serving.served_world import ServedWorld, tracking_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving")]


def _score(world: ServedWorld, out: Path, *extra: str) -> str:
    with tracking_env(world.store_uri):
        res = CliRunner().invoke(
            app,
            [
                "score",
                "--data",
                str(world.data),
                "--cutoff",
                world.cutoff.isoformat(),
                "--out",
                str(out),
                *extra,
            ],
        )
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


@pytest.fixture(scope="module")
def batch(served_world: ServedWorld, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("batch")
    first = _score(served_world, out / "a.parquet")
    second = _score(served_world, out / "b.parquet")
    return out / "a.parquet", out / "b.parquet", first + second


@pytest.fixture(scope="module")
def table(batch) -> pd.DataFrame:
    return pd.read_parquet(batch[0])


def test_rerun_reuses_the_snapshot_and_writes_identical_bytes(batch, served_world):
    a, b, output = batch
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert (snapshot_dir(served_world.data) / f"{served_world.cutoff}.parquet").exists()
    assert "reused snapshot" in output
    assert not [p for p in a.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_one_row_per_snapshot_customer_stamped_with_cutoff_and_versions(table, served_world):
    snap = pd.read_parquet(snapshot_dir(served_world.data) / f"{served_world.cutoff}.parquet")
    assert sorted(table["customer_id"]) == sorted(snap["customer_id"]) and table["customer_id"].is_unique
    assert (table["cutoff"] == served_world.cutoff).all()
    versions = load_champions(uri=served_world.store_uri).versions()
    for kind, version in versions.items():
        assert (table[f"{kind}_model_version"] == version).all()
    for col in (
        "p_repurchase_7d",
        "p_alive",
        "expected_purchases_30d",
        "expected_purchases_90d",
        "clv_12m",
        "tier",
        "action",
        "reason",
        "lifecycle_stage",
        "value_tier",
    ):
        assert table[col].notna().all(), col
    assert ((table["p_churn"].dropna() >= 0) & (table["p_churn"].dropna() <= 1)).all()
    assert (table["clv_12m_low"] <= table["clv_12m"]).all() and (
        table["clv_12m"] <= table["clv_12m_high"]
    ).all()
    assert (table["expected_purchases_30d"] <= table["expected_purchases_90d"]).all()


def test_decisions_follow_the_policy(table):
    policy = load_policy()
    contacted = table["channel"].notna()
    assert 0 < contacted.sum() < len(table)
    assert set(table.loc[contacted, "action"]) <= set(policy.contact_channels)
    assert (table.loc[~contacted, "action"] == "none").all()
    assert (table.loc[contacted, "expected_value"] > 0).all()
    assert table["cost"].sum() <= policy.budget + 1e-9
    held = global_holdout_mask(table["customer_id"], policy.global_holdout_share)
    assert held.any() and not contacted[held].any()
    assert set(table["tier"]) <= {t.name for t in policy.tiers}


def test_shap_reasons_for_contacted_customers_of_the_churn_population(table):
    wanted = table["channel"].notna() & table["p_churn"].notna()
    assert wanted.any()
    assert table.loc[wanted, "shap_reason_1"].notna().all()
    assert table.loc[~wanted, "shap_reason_1"].isna().all()
    assert (table.loc[wanted, "shap_reason_1_value"] > 0).all()


def test_explain_all_fills_every_churn_customer_and_changes_nothing_else(served_world, table, tmp_path):
    _score(served_world, tmp_path / "all.parquet", "--explain", "all")
    full = pd.read_parquet(tmp_path / "all.parquet")
    inside = full["p_churn"].notna()
    assert full.loc[inside, "shap_reason_1"].notna().all()
    shared = table["shap_reason_1"].notna()
    pd.testing.assert_frame_equal(
        full[shared].reset_index(drop=True), table[shared].reset_index(drop=True), check_exact=True
    )
    same = [c for c in table.columns if not c.startswith("shap_reason_")]
    pd.testing.assert_frame_equal(full[same], table[same], check_exact=True)


def test_snapshots_are_put_in_customer_order_without_a_copy_when_they_already_are() -> None:
    ordered = pd.DataFrame({"customer_id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})
    assert in_customer_order(ordered) is ordered
    shuffled = ordered.iloc[[2, 0, 1]]
    fixed = in_customer_order(shuffled)
    pd.testing.assert_frame_equal(fixed, ordered)
    assert in_customer_order(ordered.set_index(pd.Index([5, 6, 7]))).index.tolist() == [0, 1, 2]


def test_policy_inputs_are_the_same_whether_aligned_by_position_or_joined_by_id() -> None:
    snap = pd.DataFrame({"customer_id": ["a", "b", "c"], "wecom_added": [1, 0, 1]})
    scores = pd.DataFrame({"customer_id": ["a", "b", "c"], "p_churn": [0.1, 0.2, 0.3]})
    aligned = policy_inputs(scores, snap)  # same order: by position
    joined = policy_inputs(scores, snap.iloc[[2, 0, 1]])  # another order: by id
    pd.testing.assert_frame_equal(aligned, joined)
    assert aligned["wecom_added"].tolist() == [True, False, True]


def test_score_reports_a_missing_champion_as_one_line(served_world, tmp_path):
    with tracking_env(f"sqlite:///{tmp_path / 'empty.db'}"):
        res = CliRunner().invoke(
            app,
            [
                "score",
                "--data",
                str(served_world.data),
                "--cutoff",
                served_world.cutoff.isoformat(),
                "--out",
                str(tmp_path / "x.parquet"),
            ],
        )
    assert res.exit_code == 1
    assert "siyu score failed" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.parquet").exists()


def test_bad_options_are_refused(served_world, tmp_path):
    for args in (
        ["--cutoff", "2024-13-01"],
        ["--cutoff", "2024-12-01", "--engine", "pandas"],
        ["--cutoff", "2024-12-01", "--explain", "some"],
    ):
        res = CliRunner().invoke(
            app, ["score", "--data", str(served_world.data), "--out", str(tmp_path / "x.parquet"), *args]
        )
        assert res.exit_code == 2, args


@pytest.mark.spark
def test_spark_path_gives_the_same_table(served_world, table, tmp_path):
    from features.engine import local_spark_session

    spark = local_spark_session()
    with tracking_env(served_world.store_uri):
        result = run_batch(
            BatchConfig(served_world.data, served_world.cutoff, tmp_path / "spark.parquet", engine="spark"),
            progress=False,
            echo=lambda _: None,
            spark=spark,
        )
    assert result.snapshot_reused
    got = pd.read_parquet(result.path)
    pd.testing.assert_frame_equal(got, table, check_exact=True)
    assert np.isfinite(got["p_repurchase_7d"]).all()

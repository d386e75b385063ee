"""Snapshot quality: schema validation, checks against the previous snapshot, and PSI per feature."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.quality import PSI_EPS, compare_snapshots, snapshot_psi, validate_snapshot
from features.snapshot import compute_snapshot
from features.synthetic import SynthConfig, generate_world, write_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quality") / "data"
    write_world(generate_world(SynthConfig(customers=1000, seed=21)), out)
    return out


@pytest.fixture(scope="module")
def snaps(world: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return compute_snapshot(world, "2024-03-01"), compute_snapshot(world, "2024-09-01")


def test_real_snapshots_pass_the_schema_also_after_a_parquet_round_trip(snaps, tmp_path: Path) -> None:
    for snap in snaps:
        assert validate_snapshot(snap).ok, validate_snapshot(snap).summary()
    snaps[0].to_parquet(tmp_path / "s.parquet")
    assert validate_snapshot(pd.read_parquet(tmp_path / "s.parquet")).ok


def test_schema_reports_every_broken_column_at_once(snaps) -> None:
    bad = snaps[0].copy()
    bad.loc[0, "orders_30d"] = -1.0
    bad.loc[1, "share_tmall"] = 1.5
    bad.loc[2, "lifecycle_stage"] = "sleeping"
    bad.loc[3, "customer_id"] = bad.loc[4, "customer_id"]
    bad.loc[5, "tenure_days"] = np.nan
    buyer = bad.index[bad["n_orders"] == 1][0]
    bad.loc[buyer, "btyd_x"] = 3.0
    report = validate_snapshot(bad.drop(columns=["omni"]))
    assert not report.ok
    failed = set(report.failure_cases["column"].dropna())
    assert {"orders_30d", "share_tmall", "lifecycle_stage", "customer_id", "tenure_days"} <= failed
    fc = report.failure_cases
    assert "omni" in set(fc.loc[fc["check"] == "column_in_dataframe", "failure_case"])
    checks = " ".join(fc["check"].astype(str))
    assert "btyd_x <= n_orders - 1" in checks
    assert "snapshot: FAILED" in report.summary()


def test_compare_snapshots_passes_a_normal_month_and_flags_lost_rows_and_nulls(snaps) -> None:
    prev, cur = snaps
    ok = compare_snapshots(prev, cur, max_row_change=0.5)
    assert ok.ok, ok.summary()
    half = compare_snapshots(prev, prev.iloc[: len(prev) // 2])
    assert [c.name for c in half.failures] == ["row count"]
    assert half.failures[0].current == len(prev) // 2
    nulls = prev.copy()
    nulls.loc[nulls.index[: len(nulls) // 10], "total_net"] = np.nan
    flagged = compare_snapshots(prev, nulls)
    assert [(c.name, c.column) for c in flagged.failures] == [("null rate", "total_net")]
    assert flagged.failures[0].current == pytest.approx((len(prev) // 10) / len(prev))
    assert "null rate of total_net" in flagged.summary()
    dropped = compare_snapshots(prev, prev.drop(columns=["aov"]))
    assert [c.column for c in dropped.failures] == ["aov"]


def _frame(**cols: list) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    return pd.DataFrame({"customer_id": [f"C{i}" for i in range(n)], **cols})


def test_psi_per_feature_matches_hand_computed_values() -> None:
    # Numeric: reference 0..99 cut at its quartiles (24.75, 49.5, 74.25) gives shares 1/4 each; the
    # current sample puts 0.4, 0.2, 0.2, 0.2 in those bins. PSI = 0.15 ln 1.6 + 3 · 0.05 ln 1.25 = 0.15 ln 2.
    # Categorical: reference new/mature 0.5/0.5, current new/mature/lapsed 0.3/0.6/0.1 with the empty
    # reference share of "lapsed" floored at 1e-4.
    ref = _frame(x=list(np.arange(100.0)), stage=["new"] * 50 + ["mature"] * 50)
    cur = _frame(
        x=[10.0] * 40 + [30.0] * 20 + [60.0] * 20 + [90.0] * 20,
        stage=["new"] * 30 + ["mature"] * 60 + ["lapsed"] * 10,
    )
    report = snapshot_psi(ref, cur, bins=4)
    assert report.results["x"].value == pytest.approx(0.15 * math.log(2), rel=1e-12)
    assert report.results["x"].value == pytest.approx(0.1039720771, abs=1e-10)
    want = -0.2 * math.log(0.6) + 0.1 * math.log(1.2) + (0.1 - PSI_EPS) * math.log(0.1 / PSI_EPS)
    assert report.results["stage"].value == pytest.approx(want, rel=1e-12)
    assert report.results["stage"].value == pytest.approx(0.8104820329, abs=1e-9)
    assert report.drifted(0.2) == ["stage"]
    table = report.table()
    assert list(table["feature"]) == ["stage", "x"] and list(table["level"]) == ["significant", "moderate"]


def test_psi_between_real_snapshots(snaps) -> None:
    prev, cur = snaps
    same = snapshot_psi(prev, prev)
    assert max(r.value for r in same.results.values()) == pytest.approx(0.0, abs=1e-12)
    assert "cutoff_month" not in same.results and "customer_id" not in same.results
    drift = snapshot_psi(prev, cur)
    # Six months on, every customer is older: tenure shifts, the customer attributes barely move.
    assert drift.results["tenure_days"].value > 0.1
    assert drift.results["member_level"].value < 0.1
    with pytest.raises(ValueError, match="on one side only: \\['aov'\\]"):
        snapshot_psi(prev, cur.drop(columns=["aov"]))

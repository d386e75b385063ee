"""Snapshots on the synthetic world: deterministic bytes on any thread count, one row per customer from
every family, the same result from files and from memory, and the CLI's default output path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.as_of import EngineCutoff, bind_cutoff, cutoff_ts, cutoff_us, require_fixed_offset
from features.behavioral import BEHAVIORAL_COLUMNS, behavioral_features
from features.channel import CHANNEL_COLUMNS, channel_features
from features.engine import Engine, EngineConfig, normalise_frame
from features.io import atomic_write_parquet
from features.lifecycle import LIFECYCLE_COLUMNS, LifecycleRules, lifecycle_features
from features.rfm import RFM_COLUMNS, rfm_features
from features.snapshot import SNAPSHOT_DTYPES, compute_snapshot, latest_snapshot, load_tables
from features.synthetic import SynthConfig, generate_world, write_world
from siyu.cli import app

CUTOFF = "2024-05-01"
#: The snapshot's columns before touch_response_rate_7d was added; models trained on them depend on
#: their names and order.
LEGACY_PREFIX = 70


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("snap") / "data"
    write_world(generate_world(SynthConfig(customers=1500, seed=11)), out)
    return out


@pytest.fixture(scope="module")
def snap(world: Path) -> pd.DataFrame:
    return compute_snapshot(world, CUTOFF)


def _digest(df: pd.DataFrame, path: Path) -> str:
    return hashlib.sha256(atomic_write_parquet(df, path).read_bytes()).hexdigest()


def test_same_data_gives_identical_bytes_on_one_thread_and_on_many(world: Path, tmp_path: Path) -> None:
    digests = set()
    for threads in (1, 2, 4):
        with Engine(EngineConfig(threads=threads)) as eng:
            digests.add(_digest(compute_snapshot(world, CUTOFF, engine=eng), tmp_path / f"{threads}.parquet"))
    assert len(digests) == 1


def test_files_and_in_memory_tables_give_the_same_snapshot(world: Path, snap: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(compute_snapshot(load_tables(world), CUTOFF), snap)


def test_one_engine_rebinds_files_and_frames(world: Path, snap: pd.DataFrame) -> None:
    tables = load_tables(world)
    fewer = {**tables, "orders": tables["orders"].iloc[: len(tables["orders"]) // 2]}
    with Engine() as eng:
        got = [compute_snapshot(src, CUTOFF, engine=eng) for src in (world, fewer, world, tables)]
    pd.testing.assert_frame_equal(got[0], snap)
    pd.testing.assert_frame_equal(got[1], compute_snapshot(fewer, CUTOFF))
    assert got[1]["n_orders"].sum() < snap["n_orders"].sum()
    pd.testing.assert_frame_equal(got[2], snap)
    pd.testing.assert_frame_equal(got[3], snap)


def test_one_row_per_customer_seen_before_the_cutoff(world: Path, snap: pd.DataFrame) -> None:
    customers = pd.read_parquet(world / "customers.parquet")
    seen = customers.loc[customers["first_seen_ts"] < cutoff_ts(CUTOFF), "customer_id"]
    assert list(snap["customer_id"]) == sorted(seen)
    assert (snap["cutoff"] == cutoff_ts(CUTOFF)).all()
    assert list(snap.columns) == list(SNAPSHOT_DTYPES)
    assert dict(snap.dtypes.astype(str)) == {
        c: str(pd.Series(dtype=t).dtype) for c, t in SNAPSHOT_DTYPES.items()
    }
    assert list(snap.columns[LEGACY_PREFIX:]) == ["touch_response_rate_7d"]
    assert snap["n_orders"].gt(0).mean() > 0.3 and snap["lifecycle_stage"].nunique() == 5


def test_each_family_returns_one_row_per_customer_and_the_snapshot_holds_them(world: Path, snap) -> None:
    with Engine() as eng:
        h = eng.histories(world)
        c = EngineCutoff.of(CUTOFF)
        rfm = rfm_features(h.customers, h.orders, c)
        families = {
            "rfm": (rfm, RFM_COLUMNS),
            "channel": (channel_features(h.customers, h.orders, c), CHANNEL_COLUMNS),
            "behavioral": (
                behavioral_features(h.customers, h.events, h.touches, h.orders, c),
                BEHAVIORAL_COLUMNS,
            ),
            "lifecycle": (lifecycle_features(rfm), LIFECYCLE_COLUMNS),
        }
        for name, (expr, columns) in families.items():
            df = eng.execute(expr.order_by("customer_id"))
            assert df["customer_id"].is_unique, name
            assert list(df["customer_id"]) == list(snap["customer_id"]), name
            for col in columns:
                pd.testing.assert_series_equal(
                    df[col].astype(SNAPSHOT_DTYPES[col]), snap[col], check_names=False, obj=f"{name}.{col}"
                )


def test_lifecycle_rules_are_configurable_and_validated(world: Path, snap: pd.DataFrame) -> None:
    strict = compute_snapshot(world, CUTOFF, rules=LifecycleRules(active_days=30, dormant_days=60))
    assert (strict["lifecycle_stage"] == "lapsed").sum() > (snap["lifecycle_stage"] == "lapsed").sum()
    with pytest.raises(ValueError, match="active_days <= dormant_days"):
        LifecycleRules(active_days=200, dormant_days=100)
    with pytest.raises(ValueError, match="growing_min_orders <= mature_min_orders"):
        LifecycleRules(growing_min_orders=5, mature_min_orders=3)


def test_missing_optional_tables_give_zero_counts_and_missing_recencies(world: Path) -> None:
    tables = load_tables(world)
    del tables["events"], tables["touches"]
    snap = compute_snapshot(tables, CUTOFF)
    assert (snap["ev_live_view_90d"] == 0).all() and snap["days_since_last_event"].isna().all()
    assert (snap["touches_90d"] == 0).all() and snap["touch_response_rate_7d"].isna().all()
    assert snap["n_orders"].sum() > 0


def test_naive_timestamps_are_refused_at_the_engine_boundary(world: Path) -> None:
    orders = pd.read_parquet(world / "orders.parquet")
    orders["ts"] = orders["ts"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="'ts' must hold timezone-aware timestamps"):
        normalise_frame("orders", orders)


def test_business_timezones_with_daylight_saving_are_refused() -> None:
    require_fixed_offset("Asia/Shanghai")
    with pytest.raises(ValueError, match="daylight saving"):
        require_fixed_offset("Europe/Berlin")


def test_a_compiled_query_serves_every_cutoff() -> None:
    with Engine() as eng:
        h = eng.histories({"customers": _one_customer(), "orders": _no_orders()})
        template = eng.sql(rfm_features(h.customers, h.orders, EngineCutoff.placeholder()))
        direct = eng.sql(rfm_features(h.customers, h.orders, EngineCutoff.of("2024-05-01")))
    assert bind_cutoff(template, "2024-05-01") == direct
    assert str(cutoff_us("2024-05-01")) in direct


def _one_customer() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["C1"],
            "first_seen_ts": pd.to_datetime(["2024-01-01"], utc=True),
            "acquisition_channel": ["app"],
            "city_tier": [1],
            "member_level": ["none"],
            "wecom_added_ts": pd.to_datetime([None], utc=True),
        }
    )


def _no_orders() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "channel": pd.Series(dtype=object),
            "status": pd.Series(dtype=object),
            "net_amount": pd.Series(dtype=float),
        }
    )


def test_cli_build_writes_the_latest_snapshot_where_serving_finds_it(world: Path, snap: pd.DataFrame) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["features", "build", "--data", str(world), "--cutoff", CUTOFF])
    assert result.exit_code == 0, result.output
    assert f"{len(snap):,} customers" in result.output
    day, latest = latest_snapshot(world)
    assert str(day) == CUTOFF
    pd.testing.assert_frame_equal(latest, snap, check_dtype=False)
    missing = runner.invoke(app, ["features", "build", "--data", str(world / "nope"), "--cutoff", CUTOFF])
    assert missing.exit_code == 1 and "not found" in missing.output and "Traceback" not in missing.output

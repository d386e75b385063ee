"""Label windows: beyond the data or overlapping the feature window are refused with clear messages;
time-based splits keep validation label windows after every training label window."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.as_of import cutoff_ts
from features.labels import LabelWindowError, check_no_overlap, compute_labels, data_end
from features.synthetic import SynthConfig, generate_world, write_world
from features.training_set import (
    SnapshotCache,
    check_split,
    stack_training_set,
    time_split,
    write_training_set,
)
from siyu.cli import app


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("windows") / "data"
    write_world(generate_world(SynthConfig(customers=300, seed=3)), out)
    return out


def test_data_end_is_midnight_after_the_last_business_day(world: Path) -> None:
    last = max(pd.read_parquet(world / f"{t}.parquet")["ts"].max() for t in ("orders", "events", "touches"))
    end = data_end(world)
    assert end == cutoff_ts(last.tz_convert("Asia/Shanghai").date() + dt.timedelta(days=1))
    assert end - pd.Timedelta(days=1) <= last < end


def test_label_window_beyond_the_data_is_refused_with_the_last_usable_cutoff(world: Path) -> None:
    end_day = data_end(world).tz_convert("Asia/Shanghai").date()
    cutoff = end_day - dt.timedelta(days=30)
    with pytest.raises(LabelWindowError) as err:
        compute_labels(world, cutoff, labels=("label_churn",))
    msg = str(err.value)
    assert "label_churn" in msg and "runs past the end of the data" in msg
    assert f"last observed day {end_day - dt.timedelta(days=1)}" in msg
    assert f"on or before {end_day - dt.timedelta(days=90)}" in msg
    # The 7-day label fits and is computed.
    ok = compute_labels(world, cutoff, labels=("label_repurchase_7d",))
    assert ok["label_repurchase_7d"].notna().any()


def test_label_window_that_ends_exactly_at_the_data_end_is_allowed(world: Path) -> None:
    end_day = data_end(world).tz_convert("Asia/Shanghai").date()
    got = compute_labels(world, end_day - dt.timedelta(days=7), labels=("label_repurchase_7d",))
    assert len(got) > 0
    with pytest.raises(LabelWindowError):
        compute_labels(world, end_day - dt.timedelta(days=6), labels=("label_repurchase_7d",))


def test_label_window_overlapping_the_feature_window_is_refused(world: Path) -> None:
    with pytest.raises(LabelWindowError, match="before the feature cutoff 2024-03-01.*overlap"):
        compute_labels(world, "2024-02-01", labels=("label_churn",), feature_cutoff="2024-03-01")
    with pytest.raises(LabelWindowError, match="overlap"):
        check_no_overlap(cutoff_ts("2024-03-01"), cutoff_ts("2024-02-29"), "label_churn")
    # At the feature cutoff or later the windows are disjoint.
    check_no_overlap(cutoff_ts("2024-03-01"), cutoff_ts("2024-03-01"), "label_churn")
    ok = compute_labels(world, "2024-03-01", labels=("label_churn",), feature_cutoff="2024-03-01")
    assert ok["label_churn"].notna().any()


def test_check_split_refuses_a_validation_window_inside_a_training_label_window() -> None:
    train = [dt.date(2024, 1, 1), dt.date(2024, 2, 1)]
    with pytest.raises(LabelWindowError, match="validate on 2024-05-01 or later"):
        check_split(train, dt.date(2024, 4, 30), horizon_days=90)
    check_split(train, dt.date(2024, 5, 1), horizon_days=90)
    with pytest.raises(ValueError, match="at least one training cutoff"):
        check_split([], dt.date(2024, 5, 1), horizon_days=90)


def test_time_split_keeps_earlier_cutoffs_for_training(world: Path) -> None:
    df = stack_training_set(world, ["2023-10-01", "2024-01-01", "2024-04-01"], progress=False)
    with pytest.raises(LabelWindowError, match="overlaps the training label window"):
        time_split(df, "2024-04-01", horizon_days=120)
    train, valid = time_split(df, "2024-04-01", horizon_days=60)
    assert set(train["cutoff"]) == {cutoff_ts("2023-10-01"), cutoff_ts("2024-01-01")}
    assert set(valid["cutoff"]) == {cutoff_ts("2024-04-01")}
    assert len(train) + len(valid) == len(df)
    with pytest.raises(ValueError, match="no rows at the validation cutoff"):
        time_split(df, "2024-05-01", horizon_days=7)
    with pytest.raises(ValueError, match="no cutoff before"):
        time_split(df, "2023-10-01", horizon_days=7)


def test_training_set_leaves_unobservable_labels_missing_and_names_them(world: Path, tmp_path: Path) -> None:
    end_day = data_end(world).tz_convert("Asia/Shanghai").date()
    late = end_day - dt.timedelta(days=30)  # the 7-day label fits, churn and 365-day spend do not
    df = stack_training_set(world, ["2023-06-01", late], progress=False)
    at_late = df[df["cutoff"] == cutoff_ts(late)]
    assert at_late["label_churn"].isna().all() and at_late["label_future_net_spend_365d"].isna().all()
    assert at_late["label_repurchase_7d"].notna().any()
    path = write_training_set(df, tmp_path / "ts.parquet", world, 90)
    manifest = json.loads(path.with_suffix(".manifest.json").read_text())
    assert manifest["labels_unavailable"]["label_churn"] == [str(late)]
    assert manifest["labels_unavailable"]["label_repurchase_7d"] == []
    assert manifest["engine"] == "duckdb" and manifest["rows"] == len(df)


def test_training_set_refuses_a_cutoff_where_no_label_can_be_observed(world: Path) -> None:
    end_day = data_end(world).tz_convert("Asia/Shanghai").date()
    with pytest.raises(LabelWindowError, match="every label window runs past the end of the data"):
        stack_training_set(world, [end_day - dt.timedelta(days=3)], progress=False)


def test_cli_training_set_reports_windows_beyond_the_data(world: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["features", "training-set", "--data", str(world), "--out", str(tmp_path / "ts.parquet")]
    bad = runner.invoke(app, [*args, "--cutoffs", "2024-12-30"])
    assert bad.exit_code == 1
    assert "every label window runs past the end of the data" in bad.output
    assert "Traceback" not in bad.output
    typo = runner.invoke(app, [*args, "--cutoffs", "2024-13-01"])
    assert typo.exit_code == 2 and "not a date" in typo.output
    engine = runner.invoke(app, [*args, "--cutoffs", "2024-01-01", "--engine", "polars"])
    assert engine.exit_code == 2 and "unknown engine" in engine.output
    good = runner.invoke(app, [*args, "--cutoffs", "2023-09-01,2024-01-01"])
    assert good.exit_code == 0, good.output
    assert len(pd.read_parquet(tmp_path / "ts.parquet")["cutoff"].unique()) == 2


def test_shared_cutoffs_are_built_once_and_read_back_identical(world: Path, tmp_path: Path) -> None:
    shared = dt.date(2024, 1, 1)
    cache = SnapshotCache(tmp_path, frozenset({shared}))
    first = stack_training_set(world, ["2023-10-01", shared], progress=False, cache=cache)
    kept = cache.path(shared, 90)
    assert kept.exists() and not cache.path(dt.date(2023, 10, 1), 90).exists()  # only the shared one
    stamp = kept.stat().st_mtime_ns
    again = stack_training_set(world, [shared, "2024-04-01"], progress=False, cache=cache)
    assert kept.stat().st_mtime_ns == stamp  # read, not rebuilt
    fresh = stack_training_set(world, [shared, "2024-04-01"], progress=False)
    pd.testing.assert_frame_equal(again, fresh, check_exact=True)
    at = first["cutoff"] == cutoff_ts(shared)
    pd.testing.assert_frame_equal(first[at].reset_index(drop=True),
                                  fresh[fresh["cutoff"] == cutoff_ts(shared)].reset_index(drop=True),
                                  check_exact=True)

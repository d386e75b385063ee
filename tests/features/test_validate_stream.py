"""`siyu data validate` reads each table in batches and still reports what whole-table validation reports.

The reference is pandera on the whole table (:func:`features.schema.validate_table` after
``pd.read_parquet``); the streamed report must hold the same failures, row numbers and summary, with
duplicates found across batch boundaries and table-level failures reported once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import features.quality as quality
from features.quality import validate_data_dir, validate_parquet
from features.schema import TABLES, ValidationReport, validate_table
from features.synthetic import SynthConfig, generate_world, write_world
from siyu.cli import app

BATCH = 37  # small and odd, so duplicates and bad rows fall in different batches


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "data"
    write_world(generate_world(SynthConfig(customers=300, seed=3)), out)
    return out


def _corrupt(world: Path, out: Path) -> Path:
    """A copy of ``world`` with every kind of failure the contract checks, spread over the batches."""
    out.mkdir()
    t = {name: pd.read_parquet(world / f"{name}.parquet") for name in TABLES}

    c = t["customers"]
    c.loc[250, "customer_id"] = c.loc[5, "customer_id"]  # duplicate across batches
    c.loc[6, "city_tier"] = 9

    o = t["orders"]
    o.loc[[3, 400], "order_id"] = o.loc[1, "order_id"]  # three rows, three batches
    o.loc[[10, 11], "order_id"] = o.loc[12, "order_id"]  # within one batch
    o.loc[[20, 300], "order_id"] = None  # missing, not duplicates of each other
    o.loc[30, "channel"] = "taobao_live"
    o.loc[31, "gross_amount"] = -5.0  # negative and inconsistent with net_amount
    o.loc[len(o) - 1, "net_amount"] = 1e6

    e = t["events"]
    e["ts"] = e["ts"].dt.tz_localize(None)  # a table-level failure: naive timestamps
    e.loc[[2, 200], "event_type"] = "telepathy"
    e.loc[77, "customer_id"] = None

    tc = t["touches"].drop(columns=["cost"])  # a missing column, seen by every batch
    tc.loc[len(tc) - 1, "touch_id"] = tc.loc[0, "touch_id"]

    i = t["identities"]
    i.loc[300, ["source", "source_user_id"]] = i.loc[4, ["source", "source_user_id"]].to_numpy()
    i.loc[[50, 150], "source_user_id"] = None  # equal missing keys of one source are duplicates
    i.loc[[50, 150], "source"] = "jd"
    i.loc[90, "source"] = "myspace"

    for name, df in {"customers": c, "orders": o, "events": e, "touches": tc, "identities": i}.items():
        df.to_parquet(out / f"{name}.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def corrupt(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _corrupt(world, tmp_path_factory.mktemp("corrupt") / "data")


def _failures(report: ValidationReport) -> list[tuple]:
    fc = report.failure_cases
    rows = zip(fc["schema_context"], fc["column"], fc["check"], fc["failure_case"], fc["index"], strict=True)
    return sorted(
        (str(ctx), str(col), str(chk), repr(case), None if pd.isna(idx) else int(idx))
        for ctx, col, chk, case, idx in rows
    )


@pytest.mark.parametrize("name", TABLES)
def test_streamed_report_equals_whole_table_report(corrupt: Path, name: str) -> None:
    path = corrupt / f"{name}.parquet"
    whole = validate_table(name, pd.read_parquet(path))
    streamed = validate_parquet(name, path, batch_rows=BATCH)
    assert not whole.ok  # every table was broken on purpose
    assert streamed.n_rows == whole.n_rows > 3 * BATCH
    assert _failures(streamed) == _failures(whole)
    assert streamed.n_bad_rows == whole.n_bad_rows
    # Same lines (table, column, check, count); the examples may be listed in another order.
    assert _lines(streamed) == _lines(whole)


def _lines(report: ValidationReport) -> list[str]:
    return [line.split("; examples")[0] for line in report.summary().splitlines()]


def test_duplicates_across_batches_are_all_reported(corrupt: Path) -> None:
    report = validate_parquet("orders", corrupt / "orders.parquet", batch_rows=BATCH)
    dup = report.failure_cases[report.failure_cases["check"] == "field_uniqueness"]
    assert sorted(dup["index"].astype(int)) == [1, 3, 10, 11, 12, 400]
    tables = report.failure_cases[report.failure_cases["index"].isna()]
    assert tables.empty
    events = validate_parquet("events", corrupt / "events.parquet", batch_rows=BATCH)
    naive = events.failure_cases[events.failure_cases["column"] == "ts"]
    assert len(naive) == 1 and naive["index"].isna().all()  # reported once, not once per batch


def test_clean_world_passes_with_any_batch_size(world: Path) -> None:
    for rows in (BATCH, 1_000_000):
        reports, missing = validate_data_dir(world, batch_rows=rows)
        assert not missing
        assert all(r.ok for r in reports), "\n".join(r.summary() for r in reports)
        assert [r.n_rows for r in reports] == [len(pd.read_parquet(world / f"{t}.parquet")) for t in TABLES]


def test_no_batch_larger_than_asked(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = quality._failures

    def recording(schema, frame: pd.DataFrame) -> pd.DataFrame:
        sizes.append(len(frame))
        return real(schema, frame)

    monkeypatch.setattr(quality, "_failures", recording)
    report = validate_parquet("orders", world / "orders.parquet", batch_rows=BATCH)
    assert report.ok and max(sizes) == BATCH and sum(sizes) == report.n_rows


def test_empty_table_still_checks_columns(tmp_path: Path, world: Path) -> None:
    orders = pd.read_parquet(world / "orders.parquet").iloc[:0]
    orders.to_parquet(tmp_path / "ok.parquet", index=False)
    assert validate_parquet("orders", tmp_path / "ok.parquet").ok
    orders.drop(columns=["status"]).to_parquet(tmp_path / "bad.parquet", index=False)
    report = validate_parquet("orders", tmp_path / "bad.parquet")
    assert _failures(report) == _failures(validate_table("orders", pd.read_parquet(tmp_path / "bad.parquet")))
    assert "status" in set(report.failure_cases["failure_case"])


def test_validation_does_not_modify_the_frame(world: Path) -> None:
    frame = pd.read_parquet(world / "orders.parquet")
    before = frame.copy()
    quality._failures(quality._without_uniqueness(quality.SCHEMAS["orders"]), frame)
    pd.testing.assert_frame_equal(frame, before)
    assert np.all(frame.columns == before.columns)


def test_cli_reports_every_table(corrupt: Path) -> None:
    res = CliRunner().invoke(app, ["data", "validate", str(corrupt)])
    assert res.exit_code == 1
    for name in TABLES:
        assert f"{name}: FAILED" in res.output
    assert "field_uniqueness" in res.output and "multiple_fields_uniqueness" in res.output

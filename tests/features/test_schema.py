"""The data contract: valid tables pass, every bad row is reported at once, the CLI exits non-zero."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.io import write_table
from features.pii import MissingPIIKeyError, hash_identifier, pii_key
from features.schema import ContractError, check_table, text_lengths, validate_table
from siyu.cli import app


def _orders(n: int = 4) -> pd.DataFrame:
    gross = [100.0, 50.0, 80.0, 20.0][:n]
    disc = [10.0, 0.0, 5.0, 0.0][:n]
    refund = [0.0, 50.0, 0.0, 0.0][:n]
    return pd.DataFrame(
        {
            "order_id": [f"O{i}" for i in range(n)],
            "customer_id": ["C1", "C1", "C2", "C3"][:n],
            "ts": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-02-01", "2024-03-01"][:n], utc=True),
            "channel": ["tmall", "jd", "offline_store", "wecom"][:n],
            "store_id": [None, None, "S1", None][:n],
            "gross_amount": gross,
            "discount_amount": disc,
            "refund_amount": refund,
            "net_amount": [g - d - r for g, d, r in zip(gross, disc, refund, strict=True)],
            "coupon_id": [None, "CP1", None, None][:n],
            "status": ["paid", "refunded", "paid", "cancelled"][:n],
            "n_items": [1, 2, 1, 0][:n],
            "category": ["dairy", "snacks", "dairy", "gifts"][:n],
        }
    )


def test_valid_orders_pass() -> None:
    report = validate_table("orders", _orders())
    assert report.ok, report.summary()
    assert report.n_bad_rows == 0


def test_every_bad_row_is_reported_at_once() -> None:
    df = _orders()
    df.loc[0, "channel"] = "taobao_live"  # unknown channel
    df.loc[2, "gross_amount"] = -5.0  # negative money (also breaks net_amount consistency)
    df.loc[3, "net_amount"] = 999.0  # inconsistent net amount
    report = validate_table("orders", df)
    assert not report.ok
    bad_rows = set(report.failure_cases["index"].dropna().astype(int))
    assert bad_rows == {0, 2, 3}
    text = report.summary()
    assert "channel" in text and "gross_amount" in text and "net_amount" in text


def test_naive_timestamps_are_refused() -> None:
    df = _orders()
    df["ts"] = df["ts"].dt.tz_localize(None)
    with pytest.raises(ContractError, match="ts"):
        check_table("orders", df)


def test_duplicate_order_ids_are_refused() -> None:
    df = _orders()
    df.loc[1, "order_id"] = "O0"
    report = validate_table("orders", df)
    assert not report.ok
    assert {0, 1} <= set(report.failure_cases["index"].dropna().astype(int))


def test_cli_validate_exit_codes(tmp_path) -> None:
    runner = CliRunner()
    write_table(_orders(), tmp_path, "orders")
    result = runner.invoke(app, ["data", "validate", str(tmp_path)])
    # the other four tables are missing: a clear message and a non-zero exit
    assert result.exit_code == 1
    assert "customers: MISSING" in result.output
    assert "orders: OK" in result.output

    bad = _orders()
    bad.loc[1, "status"] = "lost"
    bad.to_parquet(tmp_path / "orders.parquet")
    result = runner.invoke(app, ["data", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "orders: FAILED (1 of 4 rows" in result.output


def test_pii_hash_is_keyed_and_normalised() -> None:
    a = hash_identifier(" 13800138000 ", b"k1")
    assert a == hash_identifier("13800138000", b"k1")
    assert a != hash_identifier("13800138000", b"k2")
    assert "13800138000" not in a and len(a) == 64


def test_pii_key_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIYU_PII_KEY", raising=False)
    with pytest.raises(MissingPIIKeyError, match="SIYU_PII_KEY"):
        pii_key()
    assert pii_key("explicit") == b"explicit"


def test_text_lengths_count_characters_and_refuse_non_strings():
    got = text_lengths(pd.Series(["C1", "", None, "会员42", float("nan")], dtype=object))
    assert got is not None and got.tolist() == [2, 0, 0, 4, 0]
    assert text_lengths(pd.Series(["a", 7], dtype=object)) is None

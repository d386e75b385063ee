"""Real-file ingest: a deliberately dirty export with every quirk in known counts, both file formats,
order-level exports with status/refund rows, unrecoverable input and the CLI end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from features.ingest import (
    RULES,
    IngestError,
    IngestMapping,
    ingest_file,
    ingest_frame,
    load_mapping,
    resolve_mapping,
    write_ingest,
)
from features.quality import validate_data_dir
from features.schema import validate_table
from siyu.cli import app

COLUMNS = [
    "Invoice",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "Price",
    "Customer ID",
    "Country",
]
LONDON = ZoneInfo("Europe/London")
N_INVOICES = 30
N_CUSTOMERS = 8


@dataclass
class Dirty:
    """A dirty Online-Retail-style export and what a correct ingest must make of it."""

    rows: list[list[str]] = field(default_factory=list)
    rules: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    gross: dict[str, float] = field(default_factory=dict)  # invoice → gross of its sale lines
    refund: dict[str, float] = field(default_factory=dict)  # invoice → refund before capping
    first_ts: dict[str, pd.Timestamp] = field(default_factory=dict)  # invoice → UTC ts
    customer: dict[str, str] = field(default_factory=dict)
    aware_rows: int = 0
    unparseable_rows: int = 0

    def add(self, rule: str, row: list[str]) -> None:
        self.rows.append(row)
        self.rules[rule] += 1

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS, dtype=object)


def _local(day: int, hour: int = 10) -> datetime:
    # 2024-03-15 + day: crosses the UK switch to summer time (2024-03-31).
    return datetime(2024, 3, 15, hour) + pd.Timedelta(days=day)


def _utc(naive: datetime) -> pd.Timestamp:
    return pd.Timestamp(naive.replace(tzinfo=LONDON)).tz_convert("UTC")


def build_dirty() -> Dirty:
    d = Dirty()
    lines: dict[str, list[tuple[str, int, float]]] = {}
    # 30 clean invoices: 60 sale lines; invoices 0 and 3 carry an explicit UTC offset (+08:00).
    for i in range(N_INVOICES):
        inv, cust = f"5000{i:02d}", f"{10001 + i % N_CUSTOMERS}.0"  # ids exported through a float column
        naive = _local(i)
        if i in (0, 3):
            stamp = (pd.Timestamp(_utc(naive)).tz_convert("Asia/Shanghai")).isoformat()
        else:
            stamp = naive.strftime("%Y-%m-%d %H:%M:%S")
        d.first_ts[inv], d.customer[inv], d.gross[inv], d.refund[inv] = _utc(naive), cust[:-2], 0.0, 0.0
        lines[inv] = []
        for j in range(1 + i % 3):
            qty, price = 1 + j, 2.5 + j
            d.add("sale_line", [inv, f"P{i}-{j}", f"ITEM {i}-{j}", str(qty), stamp, f"{price}", cust, "UK"])
            d.aware_rows += i in (0, 3)
            d.gross[inv] += qty * price
            lines[inv].append((f"P{i}-{j}", qty, price))
    # 4 exact duplicates of sale lines (overlapping extracts).
    for k in (1, 5, 17, 40):
        d.add("duplicate_row", list(d.rows[k]))
        d.aware_rows += d.rows[k][4].endswith("+08:00")
    # 10 non-product lines (postage, bank charges, gift vouchers, manual), one also without a customer.
    for i in range(5):
        d.add(
            "non_product_line",
            [f"5000{i:02d}", "POST", "POSTAGE", "1", "2024-03-16 10:00:00", "18", "10001", "UK"],
        )
    for i in range(2):
        d.add(
            "non_product_line",
            [f"50010{i}", "BANK CHARGES", "Bank Charges", "1", "2024-03-20 11:00:00", "15", "10002", "UK"],
        )
    d.add(
        "non_product_line",
        [
            "500200",
            "gift_0001_20",
            "Dotcomgiftshop Gift Voucher £20.00",
            "1",
            "2024-03-21 09:00:00",
            "17.02",
            "10003",
            "UK",
        ],
    )
    d.add("non_product_line", ["500201", "ZZ1", "Manual", "1", "2024-03-21 09:00:00", "3.5", "10003", "UK"])
    d.add("non_product_line", ["500202", "POST", "POSTAGE", "1", "2024-03-21 09:00:00", "18", "", "UK"])
    # 7 lines without a customer id (guest checkouts).
    for i in range(7):
        d.add(
            "missing_customer_id",
            [f"5100{i:02d}", f"G{i}", "GUEST ITEM", "2", "2024-03-22 12:00:00", "4.0", "", "UK"],
        )
    # 3 unparseable timestamps (one empty).
    for stamp in ("31/02/2024 10:00", "yesterday", ""):
        d.add("unparseable_timestamp", ["520000", "Q1", "ITEM", "1", stamp, "3.0", "10004", "UK"])
        d.unparseable_rows += 1
    # 2 invalid numbers.
    d.add("invalid_number", ["530000", "Q2", "ITEM", "abc", "2024-03-22 12:00:00", "3.0", "10004", "UK"])
    d.add("invalid_number", ["530001", "Q3", "ITEM", "2", "2024-03-22 12:00:00", "", "10004", "UK"])
    # 3 zero prices and 2 negative prices (bad-debt style adjustments under an unlisted code).
    for i in range(3):
        d.add(
            "zero_price", [f"54000{i}", "Q4", "FREE SAMPLE", "1", "2024-03-23 12:00:00", "0", "10005", "UK"]
        )
    for i in range(2):
        d.add(
            "negative_price",
            [f"55000{i}", "X1", "Adjust debt", "1", "2024-03-23 12:00:00", "-11.5", "10005", "UK"],
        )

    def cancel(inv: str, line: int, qty: int, day: int, prefix: str = "C", same_number: bool = False) -> None:
        code, _, price = lines[inv][line]
        number = inv if same_number else f"{prefix}6{inv}"
        stamp = _local(day).strftime("%Y-%m-%d %H:%M:%S")
        cust = d.customer[inv]
        d.add("return_netted", [number, code, "RETURN", str(-qty), stamp, f"{price}", cust, "UK"])
        d.refund[inv] += qty * price

    # 4 cancellations with the 'C' prefix: a whole single-line order, an over-return (capped), 2 partial.
    cancel("500006", 0, 1, 8)  # invoice 6 has one line of qty 1: cancelled in full
    cancel("500009", 0, 2, 12)  # invoice 9 bought 1; 2 returned → capped at what was paid
    cancel("500001", 1, 1, 3)  # invoice 1 line 1 (qty 2): one returned
    cancel("500005", 2, 3, 9)  # invoice 5 line 2 (qty 3): all returned, the order's other lines stay
    # 2 refund rows repeating the invoice number, no prefix, negative quantity.
    cancel("500010", 0, 1, 15, same_number=True)
    cancel("500014", 1, 2, 20, same_number=True)
    # 2 returns that match nothing: a product the customer never bought, and one dated before the purchase.
    d.add(
        "return_unmatched", ["C700000", "NEVER", "RETURN", "-1", "2024-04-01 10:00:00", "5.0", "10001", "UK"]
    )
    code, _, price = lines["500020"][0]
    before = _local(19).strftime("%Y-%m-%d %H:%M:%S")
    d.add(
        "return_unmatched", ["C700001", code, "RETURN", "-1", before, f"{price}", d.customer["500020"], "UK"]
    )
    return d


@pytest.fixture(scope="module")
def dirty() -> Dirty:
    return build_dirty()


@pytest.fixture(scope="module")
def retail() -> IngestMapping:
    return load_mapping(resolve_mapping("online_retail"))


def _expected_orders(d: Dirty) -> pd.DataFrame:
    out = pd.DataFrame({"gross": d.gross, "wanted": d.refund, "ts": d.first_ts, "customer": d.customer})
    out["refund"] = out[["gross", "wanted"]].min(axis=1)
    out["status"] = [
        "refunded" if r >= g else "paid" for g, r in zip(out["gross"], out["refund"], strict=True)
    ]
    return out


def test_bundled_mapping_ships_as_package_data() -> None:
    path = resolve_mapping("online_retail")
    assert path.name == "online_retail.yaml" and path.parent.name == "mappings"
    m = load_mapping(path)
    assert m.columns.order_id == "Invoice" and m.returns.cancel_prefix == "C"


def test_dirty_export_every_row_accounted_for(dirty: Dirty, retail: IngestMapping) -> None:
    result = ingest_frame(dirty.frame(), retail)
    r = result.report
    assert r.input_rows == len(dirty.rows) == 99
    assert r.rules == dirty.rules
    assert sum(r.rules.values()) == r.input_rows
    # naive timestamps were localised; the offset ones converted; unparseable ones count as neither
    assert (
        r.notes["naive_timestamps_localised"] == len(dirty.rows) - dirty.aware_rows - dirty.unparseable_rows
    )
    assert r.notes["orders_refund_capped"] == 1
    assert r.notes["refund_excess_amount"] == pytest.approx(2.5)  # 2 × 2.5 returned, 1 × 2.5 paid


def test_dirty_export_orders_are_netted_and_valid(dirty: Dirty, retail: IngestMapping) -> None:
    result = ingest_frame(dirty.frame(), retail)
    assert validate_table("orders", result.orders).ok
    assert validate_table("customers", result.customers).ok
    got = result.orders.set_index("order_id").sort_index()
    want = _expected_orders(dirty).sort_index()
    assert list(got.index) == list(want.index)
    assert got["customer_id"].tolist() == want["customer"].tolist()
    assert got["gross_amount"].to_numpy() == pytest.approx(want["gross"].to_numpy())
    assert got["refund_amount"].to_numpy() == pytest.approx(want["refund"].to_numpy())
    assert got["status"].tolist() == want["status"].tolist()
    assert (got["status"] == "refunded").sum() == 2
    assert (got["ts"] == want["ts"]).all()  # localised in Europe/London (GMT, then BST), stored UTC
    assert got.loc["500020", "ts"] == pd.Timestamp("2024-04-04 09:00", tz="UTC")  # 10:00 BST
    assert got.loc["500000", "ts"] == pd.Timestamp("2024-03-15 10:00", tz="UTC")  # from +08:00
    assert got["n_items"].sum() == sum(1 + j for i in range(N_INVOICES) for j in range(1 + i % 3))


def test_dirty_export_customers_from_first_orders(dirty: Dirty, retail: IngestMapping) -> None:
    c = ingest_frame(dirty.frame(), retail).customers.set_index("customer_id")
    first = _expected_orders(dirty).groupby("customer")["ts"].min()
    assert len(c) == N_CUSTOMERS
    assert c["first_seen_ts"].sort_index().tolist() == first.sort_index().tolist()
    assert (c["acquisition_channel"] == "app").all() and (c["city_tier"] == 3).all()


def test_csv_and_parquet_give_the_same_result(dirty: Dirty, retail: IngestMapping, tmp_path: Path) -> None:
    frame = dirty.frame()
    frame.to_csv(tmp_path / "export.csv", index=False)
    frame.to_parquet(tmp_path / "export.parquet", index=False)
    a = ingest_file(tmp_path / "export.csv", retail)
    b = ingest_file(tmp_path / "export.parquet", retail)
    assert a.report.rules == b.report.rules == dirty.rules
    pd.testing.assert_frame_equal(a.orders, b.orders)
    pd.testing.assert_frame_equal(a.customers, b.customers)


def test_typed_parquet_float_ids_and_naive_datetimes(retail: IngestMapping, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "Invoice": ["1", "1", "2", "3"],
            "StockCode": ["A1", "B1", "A1", "A1"],
            "Description": ["a", "b", "a", "a"],
            "Quantity": [2, 1, 1, 1],
            "InvoiceDate": pd.to_datetime(
                ["2024-07-01 09:00"] * 2 + ["2024-01-02 09:00", "2024-01-03 09:00"]
            ),
            "Price": [1.5, 2.0, 1.5, 1.5],
            "Customer ID": [13085.0, 13085.0, float("nan"), 13086.0],
            "Country": ["UK"] * 4,
        }
    )
    frame.to_parquet(tmp_path / "typed.parquet", index=False)
    r = ingest_file(tmp_path / "typed.parquet", retail)
    assert r.report.rules["missing_customer_id"] == 1 and r.report.rules["sale_line"] == 3
    o = r.orders.set_index("order_id")
    assert o["customer_id"].to_dict() == {"1": "13085", "3": "13086"}
    assert o.loc["1", "ts"] == pd.Timestamp("2024-07-01 08:00", tz="UTC")  # BST
    assert o.loc["3", "ts"] == pd.Timestamp("2024-01-03 09:00", tz="UTC")  # GMT
    assert o.loc["1", "gross_amount"] == pytest.approx(5.0) and o.loc["1", "n_items"] == 3


ORDER_LEVEL_MAPPING = """
columns:
  order_id: order_no
  customer_id: buyer
  ts: paid_at
  amount: paid_amount
  quantity: items
  discount: discount
  channel: shop
  status: state
  category: category
timestamp: {format: "%Y/%m/%d %H:%M", timezone: Asia/Shanghai}
channel:
  values: {"Tmall旗舰店": tmall, "抖音小店": douyin, "门店": offline_store}
status:
  values: {PAID: paid, Cancelled: cancelled, REFUND: refunded}
returns:
  match: [order_id]
"""


def test_order_level_export_with_status_and_refund_rows(tmp_path: Path) -> None:
    (tmp_path / "map.yaml").write_text(ORDER_LEVEL_MAPPING, encoding="utf-8")
    m = load_mapping(tmp_path / "map.yaml")
    rows = [
        # order_no, buyer, paid_at, paid_amount, items, discount, shop, state, category
        ["O1", "A", "2024/05/01 10:00", "100", "2", "10", "Tmall旗舰店", "PAID", "skincare"],
        ["O2", "A", "2024/05/02 10:00", "50", "1", "", "Tmall旗舰店", "Cancelled", "makeup"],
        ["O3", "B", "2024/05/03 10:00", "80", "1", "", "抖音小店", "paid", "makeup"],
        ["O3", "B", "2024/05/06 10:00", "-30", "1", "", "抖音小店", "REFUND", "makeup"],
        ["O4", "B", "2024/05/01 09:00", "40", "1", "", "门店", "PAID", "skincare"],
        ["O4", "B", "2024/05/09 10:00", "-40", "1", "", "门店", "REFUND", "skincare"],
        ["O5", "C", "2024/05/03 10:00", "20", "1", "", "Unknown shop", "PAID", "skincare"],
        ["O6", "C", "2024/05/03 10:00", "20", "1", "", "门店", "weird", "skincare"],
        ["O7", "C", "2024/05/04 10:00", "20", "1", "", "门店", "PAID", "skincare"],
        ["O7", "D", "2024/05/04 10:00", "25", "1", "", "门店", "PAID", "skincare"],
        ["O9", "D", "2024/05/05 10:00", "-15", "1", "", "门店", "REFUND", "skincare"],
        ["O8", "C", "2024/05/05 10:00", "0", "1", "", "门店", "PAID", "skincare"],
        ["O10", "C", "2024/05/05 10:00", "10", "0", "", "门店", "PAID", "skincare"],
    ]
    cols = ["order_no", "buyer", "paid_at", "paid_amount", "items", "discount", "shop", "state", "category"]
    result = ingest_frame(pd.DataFrame(rows, columns=cols), m)
    rules = {k: v for k, v in result.report.rules.items() if v}
    assert rules == {
        "sale_line": 4,
        "return_netted": 2,
        "return_unmatched": 1,
        "unmapped_channel": 1,
        "unmapped_status": 1,
        "conflicting_order": 2,
        "zero_price": 1,
        "zero_quantity": 1,
    }
    o = result.orders.set_index("order_id")
    assert o["status"].to_dict() == {"O4": "refunded", "O1": "paid", "O2": "cancelled", "O3": "paid"}
    assert o.loc["O1", ["gross_amount", "discount_amount", "refund_amount", "net_amount"]].tolist() == [
        100.0, 10.0, 0.0, 90.0,
    ]  # fmt: skip
    assert o.loc["O2", "refund_amount"] == 50.0 and o.loc["O2", "net_amount"] == 0.0
    assert o.loc["O3", "refund_amount"] == 30.0 and o.loc["O3", "net_amount"] == 50.0
    assert o.loc["O4", "net_amount"] == 0.0
    assert o.loc["O1", "ts"] == pd.Timestamp("2024-05-01 02:00", tz="UTC")  # Asia/Shanghai is UTC+8
    assert validate_table("orders", result.orders).ok
    c = result.customers.set_index("customer_id")
    # B's first order is O4 (offline store, 1 May), although O3 came first in the file
    assert c["acquisition_channel"].to_dict() == {"A": "tmall", "B": "offline_store"}
    assert validate_table("customers", result.customers).ok


def test_customer_ids_can_be_stored_as_keyed_hashes(tmp_path: Path) -> None:
    (tmp_path / "map.yaml").write_text(ORDER_LEVEL_MAPPING + "hash_customer_id: true\n", encoding="utf-8")
    raw = pd.DataFrame(
        [["O1", "13800138000", "2024/05/01 10:00", "100", "1", "", "门店", "PAID", "skincare"]],
        columns=[
            "order_no",
            "buyer",
            "paid_at",
            "paid_amount",
            "items",
            "discount",
            "shop",
            "state",
            "category",
        ],
    )
    result = ingest_frame(raw, load_mapping(tmp_path / "map.yaml"))
    (cid,) = result.orders["customer_id"]
    assert len(cid) == 64 and "13800138000" not in cid
    assert result.customers["customer_id"].tolist() == [cid]


def test_missing_mapped_columns_are_named_in_one_message(dirty: Dirty, retail: IngestMapping) -> None:
    raw = dirty.frame().drop(columns=["Price", "Customer ID"])
    with pytest.raises(IngestError) as err:
        ingest_frame(raw, retail)
    msg = str(err.value)
    assert "'Customer ID'" in msg and "'Price'" in msg and "missing" in msg


@pytest.mark.parametrize(
    ("column", "garbage"),
    [("InvoiceDate", "not a date"), ("Quantity", "many"), ("Price", "n/a")],
)
def test_a_column_with_no_usable_value_stops(
    dirty: Dirty, retail: IngestMapping, column: str, garbage: str
) -> None:
    raw = dirty.frame().assign(**{column: garbage})
    with pytest.raises(IngestError, match=repr(column)):
        ingest_frame(raw, retail)


def test_bad_mappings_are_refused_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "columns: {order_id: a, customer_id: b, ts: c, amount: d}\n"
        "channel: {values: {x: taobao}, default: tmall}\n"
        "timestamp: {timezone: Mars/Olympus}\n",
        encoding="utf-8",
    )
    with pytest.raises(IngestError) as err:
        load_mapping(tmp_path / "bad.yaml")
    assert "Mars/Olympus" in str(err.value) and "taobao" in str(err.value)
    with pytest.raises(ValidationError, match="channel.default is required"):
        IngestMapping.model_validate(
            {"columns": {"order_id": "a", "customer_id": "b", "ts": "c", "amount": "d"}}
        )


def test_everything_set_aside_still_writes_valid_empty_tables(retail: IngestMapping, tmp_path: Path) -> None:
    raw = pd.DataFrame(
        [["1", "POST", "POSTAGE", "1", "2024-01-01 10:00:00", "18", "1", "UK"]], columns=COLUMNS
    )
    result = ingest_frame(raw, retail)
    assert result.report.rules["non_product_line"] == 1 and result.report.orders == 0
    write_ingest(result, tmp_path)
    reports, _ = validate_data_dir(tmp_path)
    assert [r.table for r in reports] == ["customers", "orders"] and all(r.ok for r in reports)


def test_cli_ingest_end_to_end(dirty: Dirty, tmp_path: Path) -> None:
    dirty.frame().to_csv(tmp_path / "export.csv", index=False)
    out = tmp_path / "data"
    runner = CliRunner()
    args = ["data", "ingest", "--orders", str(tmp_path / "export.csv"), "--mapping", "online_retail"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "99 rows → 30 orders (2 refunded" in result.output
    report = json.loads((out / "ingest_report.json").read_text())
    assert report["rules"] == dirty.rules and report["input_rows"] == 99
    assert "10001" not in json.dumps(report)  # no customer ids in the report
    validated = runner.invoke(app, ["data", "validate", str(out)])
    assert "orders: OK (30 rows)" in validated.output
    assert f"customers: OK ({N_CUSTOMERS} rows)" in validated.output


def test_cli_ingest_unrecoverable_input_exits_with_one_message(dirty: Dirty, tmp_path: Path) -> None:
    dirty.frame().drop(columns=["InvoiceDate"]).to_csv(tmp_path / "export.csv", index=False)
    args = ["data", "ingest", "--orders", str(tmp_path / "export.csv"), "--mapping", "online_retail"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "'InvoiceDate'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "orders.parquet").exists()


def test_naive_times_in_clock_changes_are_localised_not_dropped(retail: IngestMapping) -> None:
    stamps = ["2024-10-27 01:30:00", "2024-03-31 01:30:00"]  # London: repeated hour, skipped hour
    raw = pd.DataFrame(
        [[str(i), "A1", "a", "1", s, "2.0", "7", "UK"] for i, s in enumerate(stamps)], columns=COLUMNS
    )
    result = ingest_frame(raw, retail)
    assert result.report.rules["sale_line"] == 2
    ts = result.orders.set_index("order_id")["ts"]
    assert ts["0"] == pd.Timestamp("2024-10-27 00:30", tz="UTC")  # first occurrence (still summer time)
    assert ts["1"] == pd.Timestamp("2024-03-31 01:00", tz="UTC")  # shifted forward to 02:00 BST

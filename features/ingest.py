"""Real-file ingest: a brand's transaction export → the ``orders`` and ``customers`` contract tables.

A generic transaction file (CSV or parquet; one row per order or per order line) is mapped to the
contract by a small YAML mapping (:class:`IngestMapping`, see ``features/mappings/online_retail.yaml``).
Real exports are dirty, so every input row ends under exactly one *rule* of :data:`RULES` — the first
that applies, in that order — and ``ingest_report.json`` counts them; the counts sum to the input rows,
so nothing disappears silently:

=====================  =====================================================================
duplicate_row          an exact copy (every column) of an earlier row: overlapping extracts
non_product_line       postage, fees, manual adjustments… (the mapping's exclude list)
missing_order_id       no order id
missing_customer_id    no customer id (guest checkouts; often a fifth of a real export)
unparseable_timestamp  the timestamp does not parse with the configured format
invalid_number         quantity / unit price / amount missing or not a number
zero_price             unit price (or amount) is 0: free samples, write-offs
negative_price         unit price < 0 (bad-debt adjustments); amounts < 0 are refunds instead
zero_quantity          quantity is 0
unmapped_channel       channel value not in the mapping and no default configured
unmapped_status        status value not in the mapping and no default configured
conflicting_order      the order id's sale lines name more than one customer
return_netted          a cancellation / return / refund line netted against its order
return_unmatched       a cancellation / return / refund line whose order is not in the file
sale_line              a sale line that became (part of) an order
=====================  =====================================================================

A *reversal* line is one whose order id carries the cancellation prefix (e.g. ``C`` on an invoice),
whose quantity is negative, or whose amount is negative. It is matched to its order by the mapping's
``returns.match`` strategies, tried in order: ``order_id`` (the order id without the prefix, same
customer — refund rows that repeat the order number) and ``customer_product`` (the same customer's
latest earlier order line of the same product — the Online-Retail style, where credit notes carry
their own numbers). Its value is added to the order's ``refund_amount``; a line whose *status* maps to
refunded / cancelled refunds its own value. Refunds are capped at what was paid (excess reported); an
order refunded in full gets status ``refunded`` (``cancelled`` when every line was marked cancelled).

Timestamps with an offset are converted to UTC; naive ones are localised in the configured timezone
first (ambiguous DST hours read as the first occurrence, non-existent ones shifted forward).
Input that cannot be ingested at all — a mapped column missing, a column where no value has the
expected type — stops with one :class:`IngestError` naming every such column.

Public API: :func:`load_mapping`, :func:`ingest_file`, :func:`write_ingest`, :class:`IngestResult`.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from features.io import write_table
from features.pii import hash_identifier, pii_key
from features.schema import BUSINESS_TZ, CITY_TIERS, MEMBER_LEVELS, ORDER_CHANNELS, ORDER_STATUSES

RULES: tuple[str, ...] = (
    "duplicate_row",
    "non_product_line",
    "missing_order_id",
    "missing_customer_id",
    "unparseable_timestamp",
    "invalid_number",
    "zero_price",
    "negative_price",
    "zero_quantity",
    "unmapped_channel",
    "unmapped_status",
    "conflicting_order",
    "return_netted",
    "return_unmatched",
    "sale_line",
)
REPORT_FILE = "ingest_report.json"
_EXAMPLES = 5
_MONEY_TOL = 1e-9
# An explicit UTC offset (or Z) after a clock time: such strings are converted, not localised.
_OFFSET_RE = r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}:?\d{2})\s*$"
# Ids exported through a float column ("13085.0") are the integer id.
_FLOAT_ID_RE = r"-?\d+\.0+"
_STR = "string[pyarrow]"  # vectorised string kernels: ~10x faster than Python strings on big exports


class IngestError(ValueError):
    """The input cannot be ingested at all (missing or wholly mistyped columns, bad mapping)."""


# ---------------------------------------------------------------------------------------------
# The mapping (typed config)
# ---------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnMap(_Strict):
    """Names of the input columns; ``None`` means the file has no such column."""

    order_id: str
    customer_id: str
    ts: str
    amount: str | None = Field(None, description="Line/order value; negative = refund. Or quantity × price.")
    quantity: str | None = None
    unit_price: str | None = None
    discount: str | None = Field(None, description="Discount amount (≥ 0) on the line/order.")
    product_code: str | None = None
    description: str | None = None
    channel: str | None = None
    store_id: str | None = None
    status: str | None = None
    category: str | None = None
    coupon_id: str | None = None
    member_level: str | None = None
    city_tier: str | None = None

    @model_validator(mode="after")
    def _value_source(self) -> ColumnMap:
        if self.amount is None and (self.quantity is None or self.unit_price is None):
            raise ValueError("map either `amount` or both `quantity` and `unit_price`")
        if self.amount is not None and self.unit_price is not None:
            raise ValueError("map `amount` or `unit_price`, not both")
        return self

    def mapped(self) -> dict[str, str]:
        """Contract field → input column, for the mapped fields only."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class TimestampConfig(_Strict):
    """How to read the timestamp column."""

    format: str = Field("ISO8601", description="strftime format, 'ISO8601' or 'mixed' (per value).")
    timezone: str = Field(BUSINESS_TZ, description="Zone of naive timestamps; stored as UTC.")
    dayfirst: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown timezone {v!r}") from err
        return v


class ValueMap(_Strict):
    """Raw value → contract value (case-insensitive); ``default`` for empty or unlisted values."""

    values: dict[str, str] = Field(default_factory=dict)
    default: str | None = None

    def lookup(self, raw: pd.Series, allowed: tuple[str, ...] | None) -> tuple[pd.Series, pd.Series]:
        """Mapped values and a mask of values that used the default because they were unlisted."""
        table = {k.strip().lower(): v for k, v in self.values.items()}
        key = raw.astype(_STR).str.strip().str.lower()
        mapped = key.map(table)
        if allowed is not None:  # a raw value that already is a contract value needs no entry
            mapped = mapped.where(mapped.notna() | ~key.isin(allowed), key)
        else:
            mapped = mapped.where(mapped.notna(), raw.astype(_STR).str.strip())
        empty = key.isna() | (key == "")
        unlisted = mapped.isna() & ~empty
        out = mapped.where(~(empty | unlisted), self.default)
        return out.astype(object).where(out.notna(), None), unlisted & (self.default is not None)


class ReturnsConfig(_Strict):
    """How cancellations, returns and refund rows are recognised and matched to their orders."""

    cancel_prefix: str | None = Field(None, description="Order-id prefix marking a cancellation, e.g. 'C'.")
    match: list[Literal["order_id", "customer_product"]] = Field(default_factory=lambda: ["order_id"])


class ExcludeConfig(_Strict):
    """Non-product lines (postage, fees, adjustments): codes exact, patterns as regexes (any case)."""

    product_codes: list[str] = Field(default_factory=list)
    product_code_patterns: list[str] = Field(default_factory=list)
    description_patterns: list[str] = Field(default_factory=list)

    @field_validator("product_code_patterns", "description_patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as err:
                raise ValueError(f"bad regular expression {p!r}: {err}") from err
        return v


class CustomerDefaults(_Strict):
    """Attributes the export does not carry: used for every customer without a mapped value."""

    city_tier: int = 3
    member_level: str = "none"

    @field_validator("city_tier")
    @classmethod
    def _tier(cls, v: int) -> int:
        if v not in CITY_TIERS:
            raise ValueError(f"city_tier must be one of {CITY_TIERS}")
        return v

    @field_validator("member_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v not in MEMBER_LEVELS:
            raise ValueError(f"member_level must be one of {MEMBER_LEVELS}")
        return v


class CsvOptions(_Strict):
    sep: str = ","
    encoding: str = "utf-8-sig"


_ALLOWED = {"channel": ORDER_CHANNELS, "status": ORDER_STATUSES, "member_level": MEMBER_LEVELS}


class IngestMapping(_Strict):
    """A transaction export's mapping onto the orders contract (loaded from YAML)."""

    columns: ColumnMap
    timestamp: TimestampConfig = TimestampConfig()
    channel: ValueMap = ValueMap()
    status: ValueMap = ValueMap(default="paid")
    category: ValueMap = ValueMap(default="uncategorised")
    member_level: ValueMap = ValueMap()
    returns: ReturnsConfig = ReturnsConfig()
    exclude: ExcludeConfig = ExcludeConfig()
    customers: CustomerDefaults = CustomerDefaults()
    csv: CsvOptions = CsvOptions()
    hash_customer_id: bool = Field(False, description="HMAC the customer id (phone numbers as ids).")
    money_decimals: int = Field(2, ge=0, le=6)

    @field_validator("channel", "status", "member_level")
    @classmethod
    def _contract_values(cls, vm: ValueMap, info: ValidationInfo) -> ValueMap:
        allowed = _ALLOWED[info.field_name]
        bad = sorted({v for v in [*vm.values.values(), vm.default] if v is not None} - set(allowed))
        if bad:
            raise ValueError(f"maps to {bad}; allowed: {', '.join(allowed)}")
        return vm

    @model_validator(mode="after")
    def _consistent(self) -> IngestMapping:
        if self.columns.channel is None and self.channel.default is None:
            raise ValueError("channel.default is required when no channel column is mapped")
        if self.category.default is None:
            raise ValueError("category.default is required (the contract's category is never empty)")
        if "customer_product" in self.returns.match and self.columns.product_code is None:
            raise ValueError("returns.match customer_product needs columns.product_code")
        return self


def load_mapping(path: str | Path) -> IngestMapping:
    """Read and validate a YAML mapping; raise :class:`IngestError` with every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise IngestError(f"mapping file not found: {path}") from err
    except yaml.YAMLError as err:
        raise IngestError(f"mapping {path} is not valid YAML: {err}") from err
    try:
        return IngestMapping.model_validate(raw or {})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<mapping>'}: {e['msg']}" for e in err.errors()
        )
        raise IngestError(f"mapping {path} is invalid: {problems}") from err


# ---------------------------------------------------------------------------------------------
# Reading and parsing
# ---------------------------------------------------------------------------------------------


def bundled_mappings() -> dict[str, Path]:
    """Mappings shipped with siyu (``features/mappings/*.yaml``) by name."""
    folder = Path(__file__).parent / "mappings"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_mapping(name_or_path: str | Path) -> Path:
    """A mapping file path: an existing file, else a bundled mapping's name; IngestError otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_mappings()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    raise IngestError(
        f"mapping not found: {name_or_path} (not a file, nor a bundled mapping: {', '.join(bundled)})"
    )


def read_transactions(path: str | Path, mapping: IngestMapping) -> pd.DataFrame:
    """The raw file: CSV (every column read as text) or parquet (types as stored)."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"transaction file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    if suffix in {".csv", ".txt", ".tsv"}:
        return pd.read_csv(path, dtype=str, sep=mapping.csv.sep, encoding=mapping.csv.encoding)
    raise IngestError(f"unsupported file type {suffix!r} for {path}: use .csv or .parquet")


def _check_columns(raw: pd.DataFrame, mapping: IngestMapping) -> None:
    missing = sorted({c for c in mapping.columns.mapped().values() if c not in raw.columns})
    if missing:
        raise IngestError(
            f"mapped column(s) missing from the file: {', '.join(map(repr, missing))}; "
            f"the file has: {', '.join(map(repr, map(str, raw.columns)))}"
        )


def _ids(s: pd.Series) -> pd.Series:
    """Identifiers as stripped text; empty → missing; '13085.0' → '13085'."""
    if pd.api.types.is_float_dtype(s):
        whole = s.notna() & (s == np.floor(s))
        text = s.astype(object).where(~whole, s.where(whole).astype("Int64").astype(str))
        s = text.astype(_STR)
    out = s.astype(_STR).str.strip()
    whole = out.str.fullmatch(_FLOAT_ID_RE).fillna(False).astype(bool)
    out = out.where(~whole, out.str.replace(r"\.0+$", "", regex=True))
    return out.where(out != "")


def _numbers(s: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(s):
        return s.astype(float)
    return pd.to_numeric(s.astype(_STR).str.strip(), errors="coerce").astype(float)


@dataclass(frozen=True)
class _Timestamps:
    utc: pd.Series
    naive: pd.Series  # bool: parsed from a value without an offset (localised)


def _localise(ts: pd.Series, tz: str) -> pd.Series:
    return ts.dt.tz_localize(tz, ambiguous=np.ones(len(ts), dtype=bool), nonexistent="shift_forward")


def _timestamps(s: pd.Series, cfg: TimestampConfig) -> _Timestamps:
    """UTC timestamps (NaT where unparseable) and which values were naive."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return _Timestamps(s.dt.tz_convert("UTC"), pd.Series(False, index=s.index))
    if pd.api.types.is_datetime64_dtype(s):
        return _Timestamps(_localise(s, cfg.timezone).dt.tz_convert("UTC"), s.notna())
    text = s.astype(_STR).str.strip()
    aware = text.str.contains(_OFFSET_RE, regex=True, na=False)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    kw = {"dayfirst": cfg.dayfirst, "errors": "coerce"}
    if aware.any():
        fmt = cfg.format if "%z" in cfg.format or cfg.format in {"ISO8601", "mixed"} else "ISO8601"
        out[aware] = pd.to_datetime(text[aware], format=fmt, utc=True, **kw)
    naive = ~aware & text.notna()
    if naive.any():
        parsed = pd.to_datetime(text[naive], format=cfg.format, **kw)
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):  # a %z format on offset-less values
            parsed = parsed.dt.tz_localize(None)
        out[naive] = _localise(parsed.astype("datetime64[ns]"), cfg.timezone).dt.tz_convert("UTC")
    return _Timestamps(out, naive & out.notna())


def _wholly_mistyped(raw: pd.Series, parsed: pd.Series) -> bool:
    """True when the column is empty or not one of its values parses."""
    present = (raw.notna() & (raw.astype(_STR).str.strip() != "")).fillna(False).astype(bool)
    return not bool(parsed[present].notna().any())


@dataclass(frozen=True)
class _Lines:
    """The parsed input, one row per input row, in input order."""

    frame: pd.DataFrame
    naive_ts: pd.Series
    channel_defaulted: pd.Series
    status_defaulted: pd.Series


def _parse(raw: pd.DataFrame, m: IngestMapping) -> _Lines:
    cols = m.columns
    col = raw.__getitem__
    f = pd.DataFrame(index=raw.index)
    f["order_id"] = _ids(col(cols.order_id))
    f["customer_id"] = _ids(col(cols.customer_id))
    ts = _timestamps(col(cols.ts), m.timestamp)
    f["ts"] = ts.utc
    numeric = {k: getattr(cols, k) for k in ("amount", "quantity", "unit_price", "discount")}
    for key, name in numeric.items():
        f[key] = _numbers(col(name)) if name else np.nan
    bad = [cols.ts] if _wholly_mistyped(col(cols.ts), f["ts"]) else []
    bad += [n for k, n in numeric.items() if n and k != "discount" and _wholly_mistyped(col(n), f[k])]
    if bad:
        raise IngestError(
            f"column(s) with no usable value of the expected type: {', '.join(map(repr, bad))} "
            f"(timestamp: {m.timestamp.format!r} in {m.timestamp.timezone}; numbers: decimal)"
        )
    for key in ("product_code", "description", "store_id", "coupon_id"):
        name = getattr(cols, key)
        f[key] = _ids(col(name)) if name else pd.Series(pd.NA, index=raw.index, dtype=_STR)
    none = pd.Series(None, index=raw.index, dtype=object)
    f["channel"], channel_defaulted = m.channel.lookup(
        col(cols.channel) if cols.channel else none, ORDER_CHANNELS
    )
    f["status"], status_defaulted = m.status.lookup(col(cols.status) if cols.status else none, ORDER_STATUSES)
    f["category"], _ = m.category.lookup(col(cols.category) if cols.category else none, None)
    f["member_level"], _ = m.member_level.lookup(
        col(cols.member_level) if cols.member_level else none, MEMBER_LEVELS
    )
    tier = _numbers(col(cols.city_tier)) if cols.city_tier else pd.Series(np.nan, index=raw.index)
    f["city_tier"] = tier.where(tier.isin(CITY_TIERS))
    return _Lines(f, ts.naive, channel_defaulted, status_defaulted)


# ---------------------------------------------------------------------------------------------
# Row rules
# ---------------------------------------------------------------------------------------------


def _contains(column: pd.Series, pattern: str) -> pd.Series:
    """Case-insensitive regex search: Arrow's RE2 kernel, or Python's re for what RE2 lacks."""
    with warnings.catch_warnings():  # groups in a user's pattern are fine: only the match counts
        warnings.filterwarnings("ignore", "This pattern is interpreted as a regular expression")
        try:
            return column.str.contains(f"(?i){pattern}", regex=True, na=False)
        except ValueError:  # pyarrow.ArrowInvalid: e.g. look-behind
            return column.astype(object).str.contains(pattern, flags=re.IGNORECASE, regex=True, na=False)


def _excluded(f: pd.DataFrame, ex: ExcludeConfig) -> pd.Series:
    code = f["product_code"].astype(_STR).str.strip()
    out = code.str.upper().isin([c.strip().upper() for c in ex.product_codes]).fillna(False)
    description = f["description"].astype(_STR)
    for pattern, column in [(p, code) for p in ex.product_code_patterns] + [
        (p, description) for p in ex.description_patterns
    ]:
        out |= _contains(column, pattern)
    return out.astype(bool)


def _line_values(f: pd.DataFrame, m: IngestMapping) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(signed value, reversal mask, invalid-number mask) of each line."""
    if m.columns.amount is not None:
        value = f["amount"]
        invalid = value.isna() | (f["quantity"].isna() if m.columns.quantity else False)
    else:
        value = f["quantity"] * f["unit_price"]
        invalid = f["quantity"].isna() | f["unit_price"].isna()
    prefix = m.returns.cancel_prefix
    marked = (
        f["order_id"].str.upper().str.startswith(prefix.upper()).fillna(False)
        if prefix
        else pd.Series(False, index=f.index)
    )
    reversal = marked | (f["quantity"] < 0) | (f["amount"] < 0)
    return value, reversal.astype(bool), pd.Series(invalid, index=f.index).astype(bool)


def _classify(raw: pd.DataFrame, lines: _Lines, m: IngestMapping) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Rule of every row before order-level checks, with line values and the reversal mask."""
    f = lines.frame
    value, reversal, invalid = _line_values(f, m)
    price = f["unit_price"] if m.columns.unit_price else f["amount"]
    checks: list[tuple[str, pd.Series]] = [
        ("duplicate_row", raw.duplicated(keep="first")),
        ("non_product_line", _excluded(f, m.exclude)),
        ("missing_order_id", f["order_id"].isna()),
        ("missing_customer_id", f["customer_id"].isna()),
        ("unparseable_timestamp", f["ts"].isna()),
        ("invalid_number", invalid),
        ("zero_price", price == 0),
        ("negative_price", (price < 0) if m.columns.unit_price else pd.Series(False, index=f.index)),
        ("zero_quantity", f["quantity"] == 0),
        ("unmapped_channel", f["channel"].isna()),
        ("unmapped_status", f["status"].isna()),
    ]
    rule = pd.Series(None, index=f.index, dtype=object)
    for name, mask in checks:
        rule = rule.mask(rule.isna() & mask.to_numpy(dtype=bool), name)
    candidate = rule.isna()
    # Sale lines of one order id must name one customer; otherwise the order cannot be attributed.
    sale = candidate & ~reversal
    n_cust = f.loc[sale].groupby("order_id")["customer_id"].nunique()
    conflicted = sale & f["order_id"].isin(n_cust.index[n_cust > 1])
    rule = rule.mask(conflicted, "conflicting_order")
    rule = rule.mask(rule.isna() & ~reversal, "sale_line")
    return rule, value.abs(), reversal


def _match_returns(f: pd.DataFrame, rule: pd.Series, m: IngestMapping) -> pd.Series:
    """For each reversal line still unruled, the order id it nets against (NA when unmatched)."""
    pending = rule.isna()
    target = pd.Series(pd.NA, index=f.index, dtype=_STR)
    sales = f.loc[rule.eq("sale_line")]
    order_customer = sales.groupby("order_id")["customer_id"].first()
    for strategy in m.returns.match:
        todo = pending & target.isna()
        if not todo.any():
            break
        r = f.loc[todo]
        if strategy == "order_id":
            oid = r["order_id"]
            if m.returns.cancel_prefix:
                p = m.returns.cancel_prefix
                has = oid.str.upper().str.startswith(p.upper()).fillna(False)
                oid = oid.where(~has, oid.str.slice(len(p)))
            same = oid.map(order_customer).eq(r["customer_id"]).fillna(False).astype(bool)
            target.loc[same[same].index] = oid[same]
        else:  # customer_product: the customer's latest earlier line of the same product
            left = r.loc[r["product_code"].notna(), ["ts", "customer_id", "product_code"]]
            right = sales.loc[
                sales["product_code"].notna(), ["ts", "customer_id", "product_code", "order_id"]
            ]
            if left.empty or right.empty:
                continue
            left = left.reset_index(names="_row").sort_values(["ts", "_row"], kind="stable")
            right = right.sort_values(["ts", "order_id"], kind="stable")
            hit = pd.merge_asof(
                left, right, on="ts", by=["customer_id", "product_code"], direction="backward"
            )
            hit = hit.dropna(subset=["order_id"])
            target.loc[hit["_row"].to_numpy()] = hit["order_id"].to_numpy()
    return target


# ---------------------------------------------------------------------------------------------
# Orders, customers, report
# ---------------------------------------------------------------------------------------------


ORDER_COLUMNS: tuple[str, ...] = (
    "order_id", "customer_id", "ts", "channel", "store_id", "gross_amount", "discount_amount",
    "refund_amount", "net_amount", "coupon_id", "status", "n_items", "category",
)  # fmt: skip


def _typed_orders(o: pd.DataFrame) -> pd.DataFrame:
    out = o[list(ORDER_COLUMNS)].reset_index(drop=True)
    for c in ("order_id", "customer_id", "channel", "store_id", "coupon_id", "status", "category"):
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    for c in ("gross_amount", "discount_amount", "refund_amount", "net_amount"):
        out[c] = out[c].astype(float)
    out["ts"] = out["ts"].astype("datetime64[ns, UTC]")
    out["n_items"] = out["n_items"].astype("int64")
    return out


def _orders(
    f: pd.DataFrame, rule: pd.Series, value: pd.Series, target: pd.Series, m: IngestMapping
) -> tuple[pd.DataFrame, dict[str, float]]:
    d = m.money_decimals
    sale = f.loc[rule.eq("sale_line")].copy()
    if sale.empty:
        notes = {"orders_refund_capped": 0, "refund_excess_amount": 0.0, "orders_discount_capped": 0}
        return _typed_orders(pd.DataFrame(columns=list(ORDER_COLUMNS))), notes
    sale["value"] = value[sale.index]
    sale["discount"] = sale["discount"].fillna(0.0).clip(lower=0.0)
    sale["row"] = np.arange(len(sale))
    line_refund = sale["status"].isin(["refunded", "cancelled"])
    sale["status_refund"] = (sale["value"] - sale["discount"]).clip(lower=0.0).where(line_refund, 0.0)
    sale["cancelled_line"] = sale["status"].eq("cancelled")
    sale = sale.sort_values(["order_id", "ts", "row"], kind="stable")
    g = sale.groupby("order_id", sort=True)
    first = g.first()  # first non-null per column, lines in time order
    top_category = sale.sort_values(
        ["order_id", "value", "row"], ascending=[True, False, True], kind="stable"
    )
    o = pd.DataFrame(
        {
            "customer_id": first["customer_id"],
            "ts": g["ts"].min(),
            "channel": first["channel"],
            "store_id": first["store_id"],
            "gross_amount": g["value"].sum().round(d),
            "discount_amount": g["discount"].sum().round(d),
            "status_refund": g["status_refund"].sum(),
            "coupon_id": first["coupon_id"],
            "n_items": (g["quantity"].sum() if m.columns.quantity else g.size()).round().astype("int64"),
            "category": top_category.groupby("order_id", sort=True)["category"].first(),
            "all_cancelled": g["cancelled_line"].all(),
        }
    )
    returned = value[target.notna()].groupby(target[target.notna()].astype(str)).sum()
    o["return_refund"] = returned.reindex(o.index).fillna(0.0)
    over_discount = o["discount_amount"] > o["gross_amount"]
    o["discount_amount"] = o["discount_amount"].clip(upper=o["gross_amount"])
    payable = (o["gross_amount"] - o["discount_amount"]).round(d)
    wanted = (o["status_refund"] + o["return_refund"]).round(d)
    o["refund_amount"] = np.minimum(wanted, payable)
    o["net_amount"] = (o["gross_amount"] - o["discount_amount"] - o["refund_amount"]).round(d)
    full = (o["refund_amount"] > 0) & (o["net_amount"] <= _MONEY_TOL)
    cancelled = full & o["all_cancelled"] & (o["return_refund"] == 0)
    o["status"] = np.where(cancelled, "cancelled", np.where(full, "refunded", "paid"))
    if m.hash_customer_id:
        key = pii_key()
        o["customer_id"] = [hash_identifier(c, key) for c in o["customer_id"]]
    excess = (wanted - o["refund_amount"]).clip(lower=0.0)
    notes = {
        "orders_refund_capped": int((excess > _MONEY_TOL).sum()),
        "refund_excess_amount": round(float(excess.sum()), d),
        "orders_discount_capped": int(over_discount.sum()),
    }
    o = o.reset_index(names="order_id").sort_values(["ts", "order_id"], kind="stable")
    return _typed_orders(o), notes


def _customers(orders: pd.DataFrame, f: pd.DataFrame, rule: pd.Series, m: IngestMapping) -> pd.DataFrame:
    """One row per customer with orders: first order's time and channel; attributes or defaults."""
    first = (
        orders.sort_values(["customer_id", "ts", "order_id"], kind="stable").groupby("customer_id").first()
    )
    lines = f.loc[rule.eq("sale_line")].sort_values("ts", kind="stable")
    if m.hash_customer_id:
        key = pii_key()
        lines = lines.assign(customer_id=[hash_identifier(c, key) for c in lines["customer_id"]])
    latest = lines.groupby("customer_id")[["member_level", "city_tier"]].last()  # last non-null
    c = pd.DataFrame(index=first.index)
    c["first_seen_ts"] = first["ts"]
    c["acquisition_channel"] = first["channel"]
    c["city_tier"] = latest["city_tier"].reindex(c.index).fillna(m.customers.city_tier).astype("int64")
    level = latest["member_level"].reindex(c.index)
    c["member_level"] = level.where(level.notna(), m.customers.member_level).astype(object)
    c["wecom_added_ts"] = pd.Series(pd.NaT, index=c.index, dtype="datetime64[ns, UTC]")
    c["_defaulted_tier"] = latest["city_tier"].reindex(c.index).isna()
    c["_defaulted_level"] = level.isna()
    return c.reset_index(names="customer_id")


class IngestReport(BaseModel):
    """What happened to every input row; ``sum(rules.values()) == input_rows``."""

    source: str
    mapping: str
    timezone: str = Field(description="Zone naive timestamps were localised in.")
    input_rows: int
    rules: dict[str, int]
    examples: dict[str, list[int]] = Field(description="Up to 5 data-row numbers (1 = first row) per rule.")
    line_value: dict[str, float] = Field(description="Sum of |line value| per rule (where numeric).")
    notes: dict[str, float | int]
    orders: int
    orders_by_status: dict[str, int]
    customers: int

    @model_validator(mode="after")
    def _accounted(self) -> IngestReport:
        if sum(self.rules.values()) != self.input_rows:
            raise ValueError(f"rule counts sum to {sum(self.rules.values())}, not {self.input_rows}")
        return self


@dataclass(frozen=True)
class IngestResult:
    orders: pd.DataFrame
    customers: pd.DataFrame
    report: IngestReport


def ingest_frame(
    raw: pd.DataFrame, mapping: IngestMapping, source: str = "<frame>", mapping_name: str = "<mapping>"
) -> IngestResult:
    """Map a raw transaction frame to contract orders + customers, accounting for every row."""
    raw = raw.reset_index(drop=True)
    _check_columns(raw, mapping)
    lines = _parse(raw, mapping)
    f = lines.frame
    rule, value, reversal = _classify(raw, lines, mapping)
    target = _match_returns(f, rule, mapping)
    rule = rule.mask(rule.isna() & target.notna(), "return_netted")
    rule = rule.mask(rule.isna(), "return_unmatched")
    orders, notes = _orders(f, rule, value, target.where(rule.eq("return_netted")), mapping)
    customers = _customers(orders, f, rule, mapping)
    counts = rule.value_counts()
    examples = {r: (np.flatnonzero(rule.eq(r).to_numpy())[:_EXAMPLES] + 1).tolist() for r in RULES}
    report = IngestReport(
        source=source,
        mapping=mapping_name,
        timezone=mapping.timestamp.timezone,
        input_rows=len(raw),
        rules={r: int(counts.get(r, 0)) for r in RULES},
        examples={r: v for r, v in examples.items() if v},
        line_value={r: round(float(value[rule.eq(r)].sum()), mapping.money_decimals) for r in RULES},
        notes={
            "naive_timestamps_localised": int(lines.naive_ts.sum()),
            "channel_defaulted": int(lines.channel_defaulted.sum()),
            "status_defaulted": int(lines.status_defaulted.sum()),
            **notes,
            "customers_default_city_tier": int(customers["_defaulted_tier"].sum()),
            "customers_default_member_level": int(customers["_defaulted_level"].sum()),
        },
        orders=len(orders),
        orders_by_status={s: int((orders["status"] == s).sum()) for s in ORDER_STATUSES},
        customers=len(customers),
    )
    customers = customers.drop(columns=["_defaulted_tier", "_defaulted_level"])
    return IngestResult(orders, customers, report)


def ingest_file(orders_path: str | Path, mapping: IngestMapping | str | Path) -> IngestResult:
    """Ingest one transaction file (CSV or parquet) with a mapping object or YAML path."""
    name = str(mapping) if isinstance(mapping, str | Path) else "<mapping>"
    m = mapping if isinstance(mapping, IngestMapping) else load_mapping(mapping)
    raw = read_transactions(orders_path, m)
    return ingest_frame(raw, m, source=Path(orders_path).name, mapping_name=Path(name).name)


def write_ingest(result: IngestResult, out: str | Path) -> dict[str, Path]:
    """Validate and write ``OUT/orders.parquet``, ``OUT/customers.parquet`` and the report."""
    out = Path(out)
    paths = {
        "orders": write_table(result.orders, out, "orders"),
        "customers": write_table(result.customers, out, "customers"),
    }
    text = json.dumps(result.report.model_dump(mode="json"), indent=2) + "\n"
    tmp = out / f".{REPORT_FILE}.tmp"
    tmp.write_text(text, encoding="utf-8")
    paths["report"] = tmp.replace(out / REPORT_FILE)
    return paths


__all__ = [
    "RULES",
    "IngestError",
    "IngestMapping",
    "IngestReport",
    "IngestResult",
    "ingest_file",
    "ingest_frame",
    "bundled_mappings",
    "load_mapping",
    "resolve_mapping",
    "read_transactions",
    "write_ingest",
]

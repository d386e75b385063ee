"""The data contract of siyu's unified customer histories.

Every table is declared once here as a pandera schema; every entry point (synthetic generator,
ingest, feature builds, HTTP) validates against these with lazy validation so that all bad rows
and columns are reported at once.

Timestamps are timezone-aware UTC. Business days (cutoffs, 7-day windows) are computed in the
business timezone (default ``Asia/Shanghai``). Money is a decimal number in the shop's currency and
``net_amount = gross_amount - discount_amount - refund_amount``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

BUSINESS_TZ = "Asia/Shanghai"

TABLES: tuple[str, ...] = ("customers", "orders", "events", "touches", "identities")

ORDER_CHANNELS: tuple[str, ...] = (
    "tmall",
    "jd",
    "douyin",
    "miniprogram",
    "offline_store",
    "app",
    "wecom",
)
ONLINE_CHANNELS: frozenset[str] = frozenset(ORDER_CHANNELS) - {"offline_store"}
ORDER_STATUSES: tuple[str, ...] = ("paid", "refunded", "cancelled")
#: Only these statuses count as a purchase for features and labels.
PURCHASE_STATUSES: tuple[str, ...] = ("paid",)

EVENT_TYPES: tuple[str, ...] = (
    "wecom_add",
    "wecom_msg_in",
    "wecom_msg_out",
    "group_join",
    "live_view",
    "miniprogram_visit",
    "coupon_claim",
    "coupon_redeem",
    "call_connected",
    "sms_click",
    "referral",
)
TOUCH_CHANNELS: tuple[str, ...] = (
    "ai_call",
    "sms",
    "wecom_1v1",
    "wecom_group",
    "coupon",
    "template_msg",
)
ARMS: tuple[str, ...] = ("treatment", "control", "holdout")
MEMBER_LEVELS: tuple[str, ...] = ("none", "silver", "gold", "platinum")
CITY_TIERS: tuple[int, ...] = (1, 2, 3, 4, 5)
IDENTITY_SOURCES: tuple[str, ...] = (
    "tmall",
    "jd",
    "douyin",
    "miniprogram",
    "wecom",
    "offline_store",
    "app",
)

_UTC = pd.DatetimeTZDtype(tz="UTC")
_MONEY_TOL = 1e-6


def text_lengths(values: pd.Series) -> np.ndarray | None:
    """Character lengths of string values (missing → 0), counted in Arrow without a Python call per
    value; None when some value is neither a string nor missing (callers then name the bad rows)."""
    import pyarrow
    import pyarrow.compute as pc

    try:
        text = pyarrow.array(values.to_numpy(dtype=object), type=pyarrow.string(), from_pandas=True)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        return None
    return pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)


def _utc_ts(nullable: bool = False) -> pa.Column:
    return pa.Column(_UTC, nullable=nullable)


def _id(unique: bool = False, nullable: bool = False) -> pa.Column:
    return pa.Column(
        str,
        checks=pa.Check.str_length(min_value=1),
        unique=unique,
        nullable=nullable,
    )


def _money() -> pa.Column:
    return pa.Column(float, checks=pa.Check.ge(0.0))


def _net_amount_consistent(df: pd.DataFrame) -> pd.Series:
    expected = df["gross_amount"] - df["discount_amount"] - df["refund_amount"]
    return (df["net_amount"] - expected).abs() <= _MONEY_TOL * (1.0 + expected.abs())


CUSTOMERS = pa.DataFrameSchema(
    {
        "customer_id": _id(unique=True),
        "first_seen_ts": _utc_ts(),
        "acquisition_channel": pa.Column(str, pa.Check.isin(ORDER_CHANNELS)),
        "city_tier": pa.Column("int64", pa.Check.isin(CITY_TIERS)),
        "member_level": pa.Column(str, pa.Check.isin(MEMBER_LEVELS)),
        "wecom_added_ts": _utc_ts(nullable=True),
    },
    name="customers",
    strict=False,
    coerce=False,
)

ORDERS = pa.DataFrameSchema(
    {
        "order_id": _id(unique=True),
        "customer_id": _id(),
        "ts": _utc_ts(),
        "channel": pa.Column(str, pa.Check.isin(ORDER_CHANNELS)),
        "store_id": pa.Column(str, nullable=True),
        "gross_amount": _money(),
        "discount_amount": _money(),
        "refund_amount": _money(),
        "net_amount": pa.Column(float),
        "coupon_id": pa.Column(str, nullable=True),
        "status": pa.Column(str, pa.Check.isin(ORDER_STATUSES)),
        "n_items": pa.Column("int64", pa.Check.ge(0)),
        "category": pa.Column(str),
    },
    checks=[
        pa.Check(
            _net_amount_consistent,
            name="net_amount = gross - discount - refund",
            error="net_amount must equal gross_amount - discount_amount - refund_amount",
        )
    ],
    name="orders",
    strict=False,
)

EVENTS = pa.DataFrameSchema(
    {
        "customer_id": _id(),
        "ts": _utc_ts(),
        "event_type": pa.Column(str, pa.Check.isin(EVENT_TYPES)),
        "channel": pa.Column(str),
        "value": pa.Column(float, nullable=True),
    },
    name="events",
    strict=False,
)

TOUCHES = pa.DataFrameSchema(
    {
        "touch_id": _id(unique=True),
        "customer_id": _id(),
        "ts": _utc_ts(),
        "campaign_id": _id(),
        "channel": pa.Column(str, pa.Check.isin(TOUCH_CHANNELS)),
        "arm": pa.Column(str, pa.Check.isin(ARMS)),
        "cost": _money(),
    },
    name="touches",
    strict=False,
)

IDENTITIES = pa.DataFrameSchema(
    {
        "source": pa.Column(str, pa.Check.isin(IDENTITY_SOURCES)),
        "source_user_id": _id(),
        "phone_hash": pa.Column(str, nullable=True),
        "unionid": pa.Column(str, nullable=True),
        "member_id": pa.Column(str, nullable=True),
        "customer_id": pa.Column(str, nullable=True),
    },
    unique=["source", "source_user_id"],
    name="identities",
    strict=False,
)

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "customers": CUSTOMERS,
    "orders": ORDERS,
    "events": EVENTS,
    "touches": TOUCHES,
    "identities": IDENTITIES,
}


@dataclass(frozen=True)
class ValidationReport:
    """Every failure of one table, found in a single lazy pass."""

    table: str
    n_rows: int
    failure_cases: pd.DataFrame

    @property
    def ok(self) -> bool:
        return self.failure_cases.empty

    @property
    def n_bad_rows(self) -> int:
        if self.failure_cases.empty:
            return 0
        idx = self.failure_cases["index"].dropna()
        return int(idx.nunique()) if len(idx) else 0

    def summary(self, max_examples: int = 5) -> str:
        """A human-readable summary: one line per (column, check) with counts and examples."""
        if self.ok:
            return f"{self.table}: OK ({self.n_rows:,} rows)"
        lines = [f"{self.table}: FAILED ({self.n_bad_rows:,} of {self.n_rows:,} rows have problems)"]
        fc = self.failure_cases.copy()
        fc["column"] = fc["column"].fillna("<table>")
        for (column, check), grp in fc.groupby(["column", "check"], sort=True, dropna=False):
            examples = ", ".join(repr(v) for v in grp["failure_case"].head(max_examples).tolist())
            rows = grp["index"].dropna().head(max_examples).tolist()
            lines.append(
                f"  - column {column!s}: check {check!s} failed {len(grp):,}x; "
                f"examples {examples}; rows {rows}"
            )
        return "\n".join(lines)


class ContractError(ValueError):
    """Raised when a table breaks the data contract; carries every failure at once."""

    def __init__(self, reports: list[ValidationReport]):
        self.reports = [r for r in reports if not r.ok]
        super().__init__("\n".join(r.summary() for r in self.reports))


def validate_table(name: str, df: pd.DataFrame) -> ValidationReport:
    """Validate ``df`` against the contract for table ``name`` and return every failure."""
    if name not in SCHEMAS:
        raise KeyError(f"unknown table {name!r}; expected one of {', '.join(TABLES)}")
    try:
        SCHEMAS[name].validate(df, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases.reset_index(drop=True)
        return ValidationReport(name, len(df), cases)
    return ValidationReport(name, len(df), pd.DataFrame(columns=["column", "check", "index"]))


def check_table(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """Validate and return ``df``; raise :class:`ContractError` listing every failure."""
    report = validate_table(name, df)
    if not report.ok:
        raise ContractError([report])
    return df

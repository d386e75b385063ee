"""HTTP request and response schemas of the scoring service (pydantic, strict, extra fields forbidden).

Requests are validated as a whole, so one response lists every bad field, each with its path
(``customer_ids.3``, ``rows.0.btyd_x``, ``history.12.ts``). Types are strict: a number sent as a
string, an integer sent as a float, NaN or infinity are errors, never silently coerced.

An inline feature row (``rows``) is one row of a feature snapshot without its ``cutoff`` key: the columns
and types come from :data:`features.snapshot.SNAPSHOT_DTYPES`, every column is required (``null``
marks a missing value where the snapshot allows one), and the BTYD summary must be a possible purchase
history, so that a bad row is refused here rather than failing inside a model.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from features.schema import ARMS, TOUCH_CHANNELS
from features.snapshot import SNAPSHOT_DTYPES
from serving.tiering import LIFECYCLE_STAGES, VALUE_TIERS

#: At most this many customers in one request (413 beyond).
MAX_CUSTOMERS = 1000
#: At most this many contact-history rows in one /tier request (413 beyond).
MAX_HISTORY = 20_000
#: Largest request body accepted, in bytes (413 beyond).
MAX_BODY_BYTES = 1 << 20
#: Longest BTYD observation window accepted for a row (days): a century, i.e. a sanity bound.
MAX_DAYS = 36_500.0

CustomerId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(strict=True, max_length=128)]


class Strict(BaseModel):
    """Base of every request model: strict types, no extra fields, finite numbers only."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


# ------------------------------------------------------------------------------------ feature rows


class _FeatureRowBase(Strict):
    @model_validator(mode="after")
    def _possible_history(self) -> _FeatureRowBase:
        x, t_x, T = self.btyd_x, self.btyd_t_x_days, self.btyd_T_days  # type: ignore[attr-defined]
        problems = []
        if T is not None and not 0 <= T <= MAX_DAYS:
            problems.append(f"btyd_T_days must lie in [0, {MAX_DAYS:.0f}]")
        if x is not None and (x < 0 or x != int(x)):
            problems.append("btyd_x must be a non-negative whole number")
        if t_x is not None and t_x < 0:
            problems.append("btyd_t_x_days must not be negative")
        if None not in (t_x, T) and t_x > T:
            problems.append("btyd_t_x_days must not exceed btyd_T_days")
        if None not in (x, T) and x > T:
            problems.append("btyd_x (repeat purchase days) must not exceed btyd_T_days")
        if x == 0 and t_x not in (None, 0):
            problems.append("btyd_t_x_days must be 0 when btyd_x is 0")
        monetary = self.btyd_monetary  # type: ignore[attr-defined]
        if monetary is not None and monetary < 0:
            problems.append("btyd_monetary must not be negative")
        recency = self.recency_days  # type: ignore[attr-defined]
        if recency is not None and recency < 0:
            problems.append("recency_days must not be negative")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _row_field(column: str, dtype: object) -> tuple[Any, Any]:
    if column == "customer_id":
        return CustomerId, ...
    if column == "lifecycle_stage":
        return Literal[LIFECYCLE_STAGES], ...  # type: ignore[valid-type]
    if column == "value_tier":
        return Literal[VALUE_TIERS], ...  # type: ignore[valid-type]
    if dtype is object:
        return Text | None, ...
    if str(dtype) == "int64":
        return StrictInt, ...
    return float | None, ...


#: One feature-snapshot row (every snapshot column except ``cutoff``), built from the snapshot contract.
FeatureRow: type[Strict] = create_model(
    "FeatureRow",
    __base__=_FeatureRowBase,
    __doc__="One feature-snapshot row (the snapshot's columns without the cutoff key).",
    **{c: _row_field(c, d) for c, d in SNAPSHOT_DTYPES.items() if c != "cutoff"},
)


def feature_columns() -> list[str]:
    """Columns of an inline feature row, in snapshot order."""
    return list(FeatureRow.model_fields)


# ---------------------------------------------------------------------------------------- requests


def _unique(values: list[str], name: str) -> None:
    seen: dict[str, int] = {}
    dup = []
    for i, v in enumerate(values):
        if v in seen:
            dup.append(f"{name}.{i} repeats {name}.{seen[v]}")
        seen.setdefault(v, i)
    if dup:
        raise ValueError("customer ids must be unique (" + "; ".join(dup[:20]) + ")")


class ScoreRequest(Strict):
    """``{"customer_ids": [...]}`` (looked up in the latest snapshot) or ``{"rows": [...]}`` (inline rows)."""

    customer_ids: list[CustomerId] | None = Field(None, min_length=1, max_length=MAX_CUSTOMERS)
    rows: list[FeatureRow] | None = Field(None, min_length=1, max_length=MAX_CUSTOMERS)  # type: ignore[valid-type]
    explain: StrictBool = Field(
        False,
        description="Add the top-3 SHAP reasons behind each churn risk (TreeSHAP: ~3× the scores' cost).",
    )

    @field_validator("customer_ids")
    @classmethod
    def _unique_ids(cls, ids: list[str] | None) -> list[str] | None:
        if ids is not None:
            _unique(ids, "customer_ids")
        return ids

    @field_validator("rows")
    @classmethod
    def _unique_rows(cls, rows: list[Any] | None) -> list[Any] | None:
        if rows is not None:
            _unique([r.customer_id for r in rows], "rows")
        return rows

    @model_validator(mode="after")
    def _one_source(self) -> ScoreRequest:
        if (self.customer_ids is None) == (self.rows is None):
            raise ValueError("give exactly one of customer_ids or rows")
        return self


class Touch(Strict):
    """One contact-history row (the ``touches`` contract): who was contacted when, on which channel."""

    customer_id: CustomerId
    ts: AwareDatetime
    channel: Literal[TOUCH_CHANNELS]  # type: ignore[valid-type]
    arm: Literal[ARMS]  # type: ignore[valid-type]
    touch_id: Text | None = None
    campaign_id: Text | None = None
    cost: float | None = Field(None, ge=0)


class TierRequest(ScoreRequest):
    """A score request plus the contact history the caps are checked against and the day planned."""

    explain: StrictBool = Field(False, description="Unused by /tier (actions carry the policy's reason).")
    history: list[Touch] = Field(default_factory=list, max_length=MAX_HISTORY)
    as_of: dt.date | None = Field(None, description="Business day planned; default: the snapshot's cutoff.")


#: Request model of each API route (used by the request guard and by the service).
REQUEST_MODELS: dict[str, type[Strict]] = {"/score": ScoreRequest, "/tier": TierRequest}
#: Request fields whose length is limited (413 beyond), with the limit.
LIMITED_FIELDS: dict[str, int] = {
    "customer_ids": MAX_CUSTOMERS,
    "rows": MAX_CUSTOMERS,
    "history": MAX_HISTORY,
}


# --------------------------------------------------------------------------------------- responses


class ModelVersions(BaseModel):
    """Registered versions of the three models behind a response."""

    churn: str
    repurchase_7d: str
    clv: str


class Reason(BaseModel):
    """A feature pushing the churn risk up, with its SHAP value (log-odds)."""

    feature: str
    shap: float


class ScoreItem(BaseModel):
    """Scores of one customer; ``status`` is ``not_found`` (and every score null) for an unknown id."""

    customer_id: str
    status: Literal["ok", "not_found"]
    p_churn: float | None = None
    p_repurchase_7d: float | None = None
    p_alive: float | None = None
    expected_purchases_30d: float | None = None
    expected_purchases_90d: float | None = None
    clv_12m: float | None = None
    clv_12m_low: float | None = None
    clv_12m_high: float | None = None
    expected_order_value: float | None = None
    lifecycle_stage: str | None = None
    value_tier: str | None = None
    recency_days: float | None = None
    reasons: list[Reason] = Field(default_factory=list)


class ScoreResponse(BaseModel):
    """Scores in request order, with the cutoff of the features and the model versions used."""

    cutoff: dt.date
    model_versions: ModelVersions
    results: list[ScoreItem]


class ActionItem(BaseModel):
    """The policy's decision for one customer (``status`` ``not_found`` for an unknown id)."""

    customer_id: str
    status: Literal["ok", "not_found"]
    tier: str | None = None
    action: str | None = None
    channel: str | None = None
    expected_value: float | None = None
    cost: float | None = None
    reason: str | None = None


class TierResponse(BaseModel):
    """Actions in request order for the business day ``as_of``."""

    cutoff: dt.date
    as_of: dt.date
    model_versions: ModelVersions
    results: list[ActionItem]


class FieldError(BaseModel):
    """One problem with a request: where (dotted path) and what."""

    field: str
    message: str


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer produced by siyu (never a stack trace)."""

    error: str
    errors: list[FieldError] = Field(default_factory=list)


def field_errors(err: ValidationError) -> list[FieldError]:
    """Pydantic errors as (dotted path, message); input values are never echoed (they may be personal)."""
    out = []
    for e in err.errors(include_url=False, include_context=False, include_input=False):
        path = ".".join(str(p) for p in e["loc"]) or "<body>"
        out.append(FieldError(field=path, message=e["msg"]))
    return out

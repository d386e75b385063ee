"""Outreach tiering: model scores + contact history + policy → one action per customer, with a reason.

Pure functions (the only I/O is :func:`load_policy` reading the YAML). The policy
(``serving/policy.yaml``, typed as :class:`Policy`) holds the channels with their cost, uplift prior and
daily capacity; the tiers that combine value and risk; the contact caps; the budget and margin.

For every customer :func:`plan_actions`

1. finds the first tier whose conditions match (value tier, lifecycle stage, churn risk, 7-day
   repurchase probability, P(alive), recency) — the tier lists the channels it may use;
2. removes customers in the global holdout, opted-out customers and customers the contact caps
   protect (touches in the last 7 / 30 business days, quiet days after a touch);
3. computes the expected incremental value of each allowed channel,
   ``EV = uplift × margin_rate × expected order value − cost``, where uplift is the customer's learned
   ``uplift_<channel>`` score when present, else ``uplift_prior × tier response_factor × P(alive)``;
4. spends the budget by marginal return (:func:`allocate`): every customer's efficient upgrades
   (none → cheaper channel → dearer channel) are taken in order of ΔEV/Δcost under the budget and
   each channel's daily capacity. Only options with EV > 0 are ever considered.

Ties are broken by customer id, so the same input gives the same actions in any row order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
import yaml
from pandera.errors import SchemaErrors
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from experiments.assignment import global_holdout_mask
from features.as_of import business_day_number
from features.schema import ARMS, TOUCH_CHANNELS, ContractError, ValidationReport, text_lengths

LifecycleStage = Literal["new", "growing", "mature", "dormant", "lapsed"]
ValueTier = Literal["high", "mid", "low", "none"]
LIFECYCLE_STAGES: tuple[str, ...] = ("new", "growing", "mature", "dormant", "lapsed")
VALUE_TIERS: tuple[str, ...] = ("high", "mid", "low", "none")
NO_ACTION = "none"
HOLDOUT_REASON = "global holdout"
OPT_OUT_REASON = "opted out"
OUTPUT_COLUMNS: tuple[str, ...] = ("customer_id", "tier", "action", "expected_value", "cost", "reason")
UPLIFT_PREFIX = "uplift_"
#: Below this many expected purchases in 90 days the CLV says nothing about order value.
_MIN_PURCHASES_FOR_ORDER_VALUE = 0.01
_EPS = 1e-9


# ----------------------------------------------------------------------------- typed policy


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelSpec(_Frozen):
    """One outreach channel: price, prior effect, capacity."""

    label: str = Field(min_length=1, description="Human-readable name used in reasons.")
    cost: float = Field(ge=0, description="¥ per contact.")
    uplift_prior: float = Field(
        ge=-1, le=1, description="Incremental P(≥1 purchase in the response window) per contact."
    )
    daily_capacity: int | None = Field(None, ge=0, description="Contacts per run; None = unlimited.")
    incentive: bool = Field(False, description="An incentive (discount); tiers may forbid these.")
    requires: str | None = Field(
        None, description="Scores column that must be true for the customer to be reachable, if present."
    )


class ContactCaps(_Frozen):
    """Contact frequency limits over treatment touches of every campaign, in business days."""

    max_per_7d: int = Field(ge=0, description="Touches allowed in any 7 business days (incl. the new one).")
    max_per_30d: int = Field(ge=0, description="Touches allowed in any 30 business days (incl. the new one).")
    quiet_days: int = Field(ge=0, le=29, description="No touch on this many business days after a touch.")

    @model_validator(mode="after")
    def _consistent(self) -> ContactCaps:
        if self.max_per_7d > self.max_per_30d:
            raise ValueError(f"max_per_7d ({self.max_per_7d}) exceeds max_per_30d ({self.max_per_30d})")
        return self


class Condition(_Frozen):
    """A conjunction of tests on one customer's scores; unset fields are not tested.

    ``risk`` is ``p_churn``, or ``1 − p_alive`` for customers outside the churn population (NaN
    ``p_churn``). Tests on a missing value (e.g. recency of a customer who never bought) are false.
    """

    value_tiers: list[ValueTier] | None = None
    lifecycle_stages: list[LifecycleStage] | None = None
    risk_at_least: float | None = Field(None, ge=0, le=1)
    risk_below: float | None = Field(None, ge=0, le=1)
    p_repurchase_7d_at_least: float | None = Field(None, ge=0, le=1)
    p_alive_below: float | None = Field(None, ge=0, le=1)
    recency_days_at_least: float | None = Field(None, ge=0)
    recency_days_at_most: float | None = Field(None, ge=0)
    recency_days_above: float | None = Field(None, ge=0)

    @property
    def unconditional(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)


class Tier(_Frozen):
    """A customer segment, the channels it may be contacted on, and how strongly it responds."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str = Field(min_length=1, description="Human-readable name used in reasons.")
    when: list[Condition] = Field(min_length=1, description="The tier matches if ANY condition holds.")
    channels: list[str] = Field(default_factory=list, description="Channels this tier may use.")
    response_factor: float = Field(1.0, ge=0, description="Multiplies the channel priors for this tier.")
    incentives_allowed: bool = True
    open_to_learned: bool = Field(
        True,
        description="A channel outside `channels` is allowed where the customer has a learned uplift "
        "for it (experiments beat the prior play); incentives still follow incentives_allowed.",
    )

    @field_validator("channels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"channels listed twice: {dup}")
        return v


class Policy(_Frozen):
    """The whole outreach policy (see ``serving/policy.yaml`` for the documented defaults)."""

    currency: str = "¥"
    margin_rate: float = Field(gt=0, le=1, description="Gross margin share of incremental net revenue.")
    budget: float = Field(gt=0, description="¥ per run, all channels together.")
    response_window_days: int = Field(gt=0, description="Window the uplift priors refer to.")
    default_order_value: float = Field(gt=0, description="¥ per order when the CLV cannot tell.")
    global_holdout_share: float = Field(0.05, ge=0, lt=1)
    caps: ContactCaps
    channels: dict[str, ChannelSpec]
    tiers: list[Tier] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Policy:
        problems = []
        unknown = sorted(set(self.channels) - set(TOUCH_CHANNELS) - {NO_ACTION})
        if unknown:
            problems.append(f"channels {unknown} are not touch channels of the data contract")
        if not any(name != NO_ACTION for name in self.channels):
            problems.append("at least one contact channel must be declared besides 'none'")
        none = self.channels.get(NO_ACTION)
        if none is None:
            problems.append(f"channel {NO_ACTION!r} (no outreach) must be declared")
        elif none.cost != 0 or none.uplift_prior != 0 or none.daily_capacity is not None:
            problems.append(f"channel {NO_ACTION!r} must have cost 0, uplift_prior 0 and no capacity")
        for name, ch in self.channels.items():
            if name != NO_ACTION and ch.cost <= 0:
                problems.append(f"channel {name!r} must have a positive cost (allocation divides by it)")
        names = [t.name for t in self.tiers]
        twice = sorted({n for n in names if names.count(n) > 1})
        problems += [f"tier {n!r} is declared twice" for n in twice]
        for t in self.tiers:
            for c in t.channels:
                if c == NO_ACTION or c not in self.channels:
                    problems.append(f"tier {t.name!r} lists unknown channel {c!r}")
                elif self.channels[c].incentive and not t.incentives_allowed:
                    problems.append(f"tier {t.name!r} forbids incentives but lists incentive channel {c!r}")
        if not any(c.unconditional for c in self.tiers[-1].when):
            problems.append(f"the last tier {self.tiers[-1].name!r} must match everyone (a condition {{}})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def contact_channels(self) -> list[str]:
        """Channels that contact the customer (every declared channel except ``none``), in file order."""
        return [c for c in self.channels if c != NO_ACTION]

    def replace(self, **changes: object) -> Policy:
        """A validated copy with some top-level fields changed (e.g. ``budget``)."""
        return Policy.model_validate({**self.model_dump(), **changes})


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and validate a policy YAML (default: the packaged ``serving/policy.yaml``).

    Raises ``ValueError`` naming the file and every invalid field (with its path) at once.
    """
    if path is None:
        text = resources.files("serving").joinpath("policy.yaml").read_text(encoding="utf-8")
        where = "serving/policy.yaml"
    else:
        text = Path(path).read_text(encoding="utf-8")
        where = str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: not valid YAML: {err}") from None
    try:
        return Policy.model_validate(raw)
    except ValidationError as err:
        lines = [f"{where}: invalid policy ({err.error_count()} problems)"]
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "<root>"
            lines.append(f"  - {loc}: {e['msg']}")
        raise ValueError("\n".join(lines)) from None


# ----------------------------------------------------------------------------- input validation


def _finite(s: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(s.to_numpy(dtype=float)), index=s.index)


def _nonempty_str(s: pd.Series) -> pd.Series:
    if not (pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)):
        return pd.Series(False, index=s.index)
    lengths = text_lengths(s)
    if lengths is None:  # some value is not a string: the .str accessor gives NaN for those
        return s.str.len().fillna(0).gt(0) & s.map(type).eq(str)
    return pd.Series(lengths > 0, index=s.index)


def _prob(nullable: bool) -> pa.Column:
    return pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=nullable, coerce=True)


_SCORES = pa.DataFrameSchema(
    {
        "customer_id": pa.Column(
            checks=pa.Check(_nonempty_str, error="non-empty string"), nullable=False, unique=True
        ),
        "p_churn": _prob(True),
        "p_repurchase_7d": _prob(False),
        "p_alive": _prob(False),
        "expected_purchases_90d": pa.Column(
            float, [pa.Check.ge(0), pa.Check(_finite, error="finite")], coerce=True
        ),
        "clv_12m": pa.Column(float, [pa.Check.ge(0), pa.Check(_finite, error="finite")], coerce=True),
        "lifecycle_stage": pa.Column(checks=pa.Check.isin(LIFECYCLE_STAGES)),
        "value_tier": pa.Column(checks=pa.Check.isin(VALUE_TIERS)),
        "recency_days": pa.Column(
            float, [pa.Check.ge(0), pa.Check(_finite, error="finite")], nullable=True, coerce=True
        ),
        "opted_out": pa.Column(bool, required=False),
        "expected_order_value": pa.Column(
            float,
            [pa.Check.gt(0), pa.Check(_finite, error="finite")],
            nullable=True,
            required=False,
            coerce=True,
        ),
        rf"^{UPLIFT_PREFIX}.+$": pa.Column(
            float, pa.Check.in_range(-1.0, 1.0), nullable=True, required=False, regex=True, coerce=True
        ),
    },
    name="scores",
    strict=False,
)


def _is_utc(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.DatetimeTZDtype) and str(s.dtype.tz) == "UTC"


_HISTORY = pa.DataFrameSchema(
    {
        "customer_id": pa.Column(checks=pa.Check(_nonempty_str, error="non-empty string"), nullable=False),
        "ts": pa.Column(checks=pa.Check(_is_utc, error="timezone-aware UTC timestamps"), nullable=False),
        "channel": pa.Column(checks=pa.Check.isin(TOUCH_CHANNELS)),
        "arm": pa.Column(checks=pa.Check.isin(ARMS)),
    },
    name="touches",
    strict=False,
)


def _validate(schema: pa.DataFrameSchema, df: pd.DataFrame) -> pd.DataFrame:
    """Lazy validation: every bad row and column reported at once as a ``ContractError``."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{schema.name} must be a pandas DataFrame, got {type(df).__name__}")
    try:
        return schema.validate(df.reset_index(drop=True), lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases.reset_index(drop=True)
        raise ContractError([ValidationReport(str(schema.name), len(df), cases)]) from None


def validate_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Check the scores frame (see :func:`plan_actions`); returns a validated, re-indexed copy."""
    return _validate(_SCORES, scores)


def validate_history(history: pd.DataFrame) -> pd.DataFrame:
    """Check the touches history (customer_id, ts in UTC, channel, arm)."""
    return _validate(_HISTORY, history)


def _holdout_mask(ids: np.ndarray, holdout: pd.Series | None, policy: Policy) -> np.ndarray:
    if holdout is None:
        return global_holdout_mask(ids, policy.global_holdout_share)
    if not isinstance(holdout, pd.Series):
        raise TypeError(f"holdout must be a boolean Series indexed by customer_id, got {type(holdout)}")
    if not holdout.index.is_unique:
        raise ValueError("holdout index has duplicate customer ids")
    aligned = holdout.reindex(ids)
    missing = aligned.isna().to_numpy()
    if missing.any():
        examples = ids[missing][:20].tolist()
        raise ValueError(f"holdout has no entry for {int(missing.sum())} customers, e.g. {examples}")
    values = aligned.to_numpy()
    bad = ~np.isin(values, [True, False])
    if bad.any():
        raise ValueError(f"holdout values must be booleans; bad for customers {ids[bad][:20].tolist()}")
    return values.astype(bool)


# ----------------------------------------------------------------------------- tiers and caps


def customer_risk(scores: pd.DataFrame) -> np.ndarray:
    """``p_churn``, or ``1 − p_alive`` where the customer is outside the churn population."""
    churn = scores["p_churn"].to_numpy(dtype=float)
    return np.where(np.isnan(churn), 1.0 - scores["p_alive"].to_numpy(dtype=float), churn)


def _condition_mask(cond: Condition, scores: pd.DataFrame, risk: np.ndarray) -> np.ndarray:
    m = np.ones(len(scores), dtype=bool)
    rec = scores["recency_days"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        if cond.value_tiers is not None:
            m &= scores["value_tier"].isin(cond.value_tiers).to_numpy()
        if cond.lifecycle_stages is not None:
            m &= scores["lifecycle_stage"].isin(cond.lifecycle_stages).to_numpy()
        if cond.risk_at_least is not None:
            m &= risk >= cond.risk_at_least
        if cond.risk_below is not None:
            m &= risk < cond.risk_below
        if cond.p_repurchase_7d_at_least is not None:
            m &= scores["p_repurchase_7d"].to_numpy(dtype=float) >= cond.p_repurchase_7d_at_least
        if cond.p_alive_below is not None:
            m &= scores["p_alive"].to_numpy(dtype=float) < cond.p_alive_below
        if cond.recency_days_at_least is not None:
            m &= rec >= cond.recency_days_at_least
        if cond.recency_days_at_most is not None:
            m &= rec <= cond.recency_days_at_most
        if cond.recency_days_above is not None:
            m &= rec > cond.recency_days_above
    return m


def assign_tiers(scores: pd.DataFrame, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """(tier index, index of the matching condition in that tier) per row; first matching tier wins."""
    n = len(scores)
    risk = customer_risk(scores)
    tier = np.full(n, -1, dtype=np.int64)
    cond = np.full(n, -1, dtype=np.int64)
    for ti, t in enumerate(policy.tiers):
        for ci, c in enumerate(t.when):
            hit = (tier < 0) & _condition_mask(c, scores, risk)
            tier[hit], cond[hit] = ti, ci
    if (tier < 0).any():  # pragma: no cover - the policy validator requires a catch-all last tier
        raise RuntimeError("a customer matched no tier although the last tier matches everyone")
    return tier, cond


@dataclass(frozen=True)
class ContactCounts:
    """Treatment touches per customer before (and on) the planned business day."""

    last_7d: np.ndarray
    last_30d: np.ndarray
    days_since_last: np.ndarray  # business days; inf when never touched


def _business_day(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


def contact_counts(history: pd.DataFrame, ids: np.ndarray, as_of: dt.date) -> ContactCounts:
    """Count each customer's treatment touches in the 7 and 30 business days ending on ``as_of``.

    Touches later than ``as_of`` are ignored (they are not known when the plan is made); touches
    earlier on ``as_of`` itself count, so a customer is never planned twice on one day.
    """
    t = history[history["arm"] == "treatment"]
    ago = _business_day(as_of) - business_day_number(t["ts"]).to_numpy()
    # Each touch's customer as a position in ``ids`` (one hash lookup per touch, no group-by on text).
    pos = pd.Index(ids).get_indexer(t["customer_id"])
    keep = (ago >= 0) & (pos >= 0)
    pos, ago = pos[keep], ago[keep]
    n = len(ids)
    last = np.full(n, np.inf)
    np.minimum.at(last, pos, ago.astype(float))
    return ContactCounts(
        last_7d=np.bincount(pos[ago <= 6], minlength=n).astype(np.int64),
        last_30d=np.bincount(pos[ago <= 29], minlength=n).astype(np.int64),
        days_since_last=last,
    )


def _text(values: np.ndarray, spec: str) -> np.ndarray:
    """Format numbers one by one into an object array of str (for vectorised string concatenation)."""
    return np.array([format(v, spec) for v in np.asarray(values).tolist()], dtype=object)


def _join(parts: list[np.ndarray], sep: str) -> np.ndarray:
    out = parts[0]
    for p in parts[1:]:
        out = out + sep + p
    return out


def cap_reasons(counts: ContactCounts, caps: ContactCaps) -> np.ndarray:
    """Why the caps forbid a touch on the planned day (None where a touch is allowed)."""
    n7, n30, last = counts.last_7d, counts.last_30d, counts.days_since_last
    out = np.full(len(n7), None, dtype=object)
    by7 = n7 >= caps.max_per_7d
    by30 = ~by7 & (n30 >= caps.max_per_30d)
    quiet = ~by7 & ~by30 & (last <= caps.quiet_days)
    out[by7] = "contact cap: " + _text(n7[by7], "d") + f" touches in the last 7 days (max {caps.max_per_7d})"
    out[by30] = (
        "contact cap: " + _text(n30[by30], "d") + f" touches in the last 30 days (max {caps.max_per_30d})"
    )
    days = last[quiet].astype(np.int64)
    ago = np.where(days == 0, "today", _text(days, "d") + np.where(days == 1, " day ago", " days ago"))
    out[quiet] = (
        "quiet period: last touch " + ago.astype(object) + f" (quiet {caps.quiet_days} days after a touch)"
    )
    return out


# ----------------------------------------------------------------------------- expected value


def expected_order_value(scores: pd.DataFrame, policy: Policy) -> np.ndarray:
    """¥ per incremental order: ``expected_order_value`` if given, else the spend part of the CLV.

    ``clv_12m / (expected_purchases_90d × 365/90)``; where the customer has (almost) no expected
    purchases the policy's ``default_order_value`` is used.
    """
    e90 = scores["expected_purchases_90d"].to_numpy(dtype=float)
    clv = scores["clv_12m"].to_numpy(dtype=float)
    per_year = e90 * 365.0 / 90.0
    usable = (e90 >= _MIN_PURCHASES_FOR_ORDER_VALUE) & (clv > 0)
    value = np.where(usable, clv / np.where(usable, per_year, 1.0), policy.default_order_value)
    if "expected_order_value" in scores.columns:
        given = scores["expected_order_value"].to_numpy(dtype=float)
        value = np.where(np.isnan(given), value, given)
    return value


def channel_uplift(
    scores: pd.DataFrame, policy: Policy, tier: np.ndarray, channels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(uplift N×K, learned N×K bool): learned ``uplift_<channel>`` where given, else the tier's prior."""
    p_alive = scores["p_alive"].to_numpy(dtype=float)
    factor = np.array([t.response_factor for t in policy.tiers])[tier]
    up = np.empty((len(scores), len(channels)))
    learned = np.zeros_like(up, dtype=bool)
    for k, ch in enumerate(channels):
        up[:, k] = policy.channels[ch].uplift_prior * factor * p_alive
        col = f"{UPLIFT_PREFIX}{ch}"
        if col in scores.columns:
            given = scores[col].to_numpy(dtype=float)
            learned[:, k] = ~np.isnan(given)
            up[:, k] = np.where(learned[:, k], given, up[:, k])
    return up, learned


def _reachable(scores: pd.DataFrame, policy: Policy, channels: list[str]) -> np.ndarray:
    out = np.ones((len(scores), len(channels)), dtype=bool)
    for k, ch in enumerate(channels):
        col = policy.channels[ch].requires
        if col is not None and col in scores.columns:
            out[:, k] = scores[col].fillna(False).astype(bool).to_numpy()
    return out


# ----------------------------------------------------------------------------- budget allocation

BLOCK_NONE, BLOCK_BUDGET, BLOCK_CAPACITY = 0, 1, 2


@dataclass(frozen=True)
class Allocation:
    """Chosen channel index per customer (−1 = none) and why better options were not taken."""

    channel: np.ndarray
    blocked: np.ndarray  # BLOCK_* code of the last option that did not fit
    blocked_channel: np.ndarray  # channel index of that option (−1 if none)
    spend: float


def _frontier(
    value: np.ndarray, ok: np.ndarray, cost: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's efficient upgrade path on the upper convex hull of (cost, EV), from (0, 0).

    Returns flat arrays (row, step, from, to, Δcost, ΔEV) in step-major, row-minor order. Columns must
    be sorted by cost so that on equal slopes the cheaper upgrade comes first. Along a row the slopes
    ΔEV/Δcost never increase.
    """
    k = value.shape[1]
    act = np.flatnonzero(ok.any(axis=1))
    cur_cost, cur_val = np.zeros(act.size), np.zeros(act.size)
    cur = np.full(act.size, -1, dtype=np.int64)
    parts = []
    for step in range(k):
        if act.size == 0:
            break
        v = value[act]
        dc = cost[None, :] - cur_cost[:, None]
        dv = v - cur_val[:, None]
        cand = ok[act] & (dc > _EPS) & (dv > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(cand, dv / dc, -np.inf)
        j = slope.argmax(axis=1)
        has = cand[np.arange(act.size), j]
        r, jr = act[has], j[has]
        parts.append((r, np.full(r.size, step), cur[has], jr, dc[has, jr], dv[has, jr]))
        act, cur_cost, cur_val, cur = r, cost[jr], v[has, jr], jr
    if not parts:
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return empty_i, empty_i, empty_i, empty_i, empty_f, empty_f
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(6))  # type: ignore[return-value]


@dataclass
class _ScanState:
    """Mutable state of one allocation: choices, channel usage, budget left, block reasons."""

    choice: np.ndarray  # channel per customer, −1 = none
    used: np.ndarray  # contacts per channel (float, compared with capacity)
    remaining: float
    blocked: np.ndarray
    blocked_channel: np.ndarray


def _scan(
    cust: np.ndarray,
    step: np.ndarray,
    frm: np.ndarray,
    to: np.ndarray,
    dc: np.ndarray,
    capacity: np.ndarray,
    state: _ScanState,
    tol: float,
) -> np.ndarray:
    """Take upgrades in the given order while they fit; returns the customers blocked in this pass.

    The sequential rule — take an upgrade if the customer's earlier upgrades were taken, its Δcost
    fits the budget left and its channel has room; a channel that fills up stays closed for the pass —
    computed in bulk: the longest prefix that fits is taken at once; at the first upgrade that does not
    fit, every upgrade that can no longer fit is dropped (Δcost above the budget left, or the full
    channel). Each failure removes a whole Δcost value or a channel, so there are at most about K²
    passes over the array.
    """
    m, k = len(cust), len(capacity)
    alive = np.ones(m, dtype=bool)
    first_missed = np.full(len(state.choice), np.iinfo(np.int64).max)  # step of the first dropped upgrade
    blocked_now: list[np.ndarray] = []

    def drop(mask: np.ndarray, code: int) -> None:
        idx = np.flatnonzero(mask & alive)
        if idx.size == 0:
            return
        alive[idx] = False
        np.minimum.at(first_missed, cust[idx], step[idx])
        first = idx[step[idx] == first_missed[cust[idx]]]
        state.blocked[cust[first]], state.blocked_channel[cust[first]] = code, to[first]
        blocked_now.append(cust[first])

    drop(state.used[to] >= capacity[to], BLOCK_CAPACITY)
    drop(dc > state.remaining + tol, BLOCK_BUDGET)
    while True:
        cand = np.flatnonzero(alive & (step < first_missed[cust]))
        if cand.size == 0:
            break
        spent = np.cumsum(dc[cand])
        bad = spent > state.remaining + tol
        for ch in np.flatnonzero(np.isfinite(capacity)):
            delta = (to[cand] == ch).astype(np.int64) - (frm[cand] == ch).astype(np.int64)
            bad |= state.used[ch] + np.cumsum(delta) > capacity[ch]
        j = int(bad.argmax()) if bad.any() else cand.size
        take = cand[:j]
        # A customer's upgrades come in step order, so the last one taken is where they end up.
        state.choice[cust[take]] = to[take]
        state.used += np.bincount(to[take], minlength=k)
        state.used -= np.bincount(frm[take][frm[take] >= 0], minlength=k)
        state.remaining -= float(dc[take].sum())
        alive[take] = False
        if j == cand.size:
            break
        fail = cand[j]
        if dc[fail] > state.remaining + tol:
            drop(dc > state.remaining + tol, BLOCK_BUDGET)
        else:  # the target channel is full: close it for this pass
            drop(to == to[fail], BLOCK_CAPACITY)
    mark = np.zeros(len(state.choice), dtype=bool)
    for b in blocked_now:
        mark[b] = True
    return np.flatnonzero(mark)


def allocate(
    value: np.ndarray,
    feasible: np.ndarray,
    cost: np.ndarray,
    capacity: np.ndarray,
    budget: float,
    rank: np.ndarray,
) -> Allocation:
    """Spend ``budget`` by marginal return across customers and channels.

    ``value`` (N×K) is each option's EV net of cost, ``feasible`` (N×K) which options are allowed,
    ``cost`` (K, > 0) the price per contact, ``capacity`` (K, ``inf`` = unlimited) the contacts a
    channel can take, ``rank`` (N) the tie-break order of customers. Only options with EV > 0 are
    considered.

    Greedy on the multiple-choice knapsack (Sinha & Zoltners, 1979): each customer's upgrades along the
    upper convex hull of (cost, EV) — none → a cheap channel → a dearer, better one — are taken in
    descending ΔEV/Δcost (ties: customer rank, then step) while the budget and the target channel's
    capacity allow; a customer whose upgrade does not fit keeps their current option, and a channel
    that fills up is closed for the rest of the pass. Customers left with nothing get further passes
    restricted to options that still fit (a customer whose first choice ran out of capacity or budget
    can take a cheaper channel; slots freed by upgrades are offered again). Spend never exceeds the
    budget and no channel exceeds its capacity; without binding limits every customer gets their
    highest-EV option.
    """
    n, k = value.shape
    cost = np.asarray(cost, dtype=float)
    capacity = np.asarray(capacity, dtype=float)
    if (cost <= 0).any():
        raise ValueError(f"every channel needs a positive cost, got {cost.tolist()}")
    by_cost = np.lexsort((np.arange(k), cost))  # column order: cheapest first, ties by position
    # Work in customer-rank order, so every tie is broken by rank whatever the input order.
    perm = np.argsort(np.asarray(rank), kind="stable")
    value = np.asarray(value, dtype=float)[perm][:, by_cost]
    ok_all = (np.asarray(feasible, dtype=bool)[perm][:, by_cost]) & (value > 0)
    cost_sorted, cap_sorted = cost[by_cost], capacity[by_cost]
    state = _ScanState(
        choice=np.full(n, -1, dtype=np.int64),
        used=np.zeros(k),
        remaining=float(budget),
        blocked=np.zeros(n, dtype=np.int8),
        blocked_channel=np.full(n, -1, dtype=np.int64),
    )
    tol = _EPS * max(1.0, float(budget))
    open_rows = np.flatnonzero(ok_all.any(axis=1))
    for pass_no in range(k + 1):
        # The first pass sees every option (so a blocked customer knows why); later passes only the
        # options that still fit.
        if pass_no:
            fits = (cost_sorted <= state.remaining + tol) & (state.used < cap_sorted)
            ok = ok_all[open_rows] & fits[None, :]
        else:
            ok = ok_all[open_rows]
        r, step, frm, to, dc, dv = _frontier(value[open_rows], ok, cost_sorted)
        if r.size == 0:
            break
        # Items arrive step-major and rank-minor; a stable sort on the slope keeps that as tie-break,
        # and a customer's own upgrades (non-increasing slopes) stay in step order.
        order = np.argsort(-(dv / dc), kind="stable")
        before = int((state.choice >= 0).sum())
        blocked = _scan(
            open_rows[r][order], step[order], frm[order], to[order], dc[order], cap_sorted, state, tol
        )
        if pass_no and int((state.choice >= 0).sum()) == before:
            break
        open_rows = blocked[state.choice[blocked] < 0]
    # Back to the caller's row and column order.
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    chosen = np.where(state.choice >= 0, by_cost[np.maximum(state.choice, 0)], -1)[inv]
    blocked_channel = np.where(state.blocked_channel >= 0, by_cost[np.maximum(state.blocked_channel, 0)], -1)[
        inv
    ]
    spend = float(cost[chosen[chosen >= 0]].sum())
    return Allocation(chosen, state.blocked[inv], blocked_channel, spend)


# ----------------------------------------------------------------------------- the plan


def _money(values: np.ndarray, currency: str, decimals: int | None = None) -> np.ndarray:
    """``¥1,240`` / ``¥38.20`` / ``¥0.00424`` / ``−¥0.0112``: small amounts keep three significant digits."""
    v = np.asarray(values, dtype=float)
    a = np.abs(v)
    if decimals is not None:
        text = _text(a, f",.{decimals}f")
    else:
        small = (a < 0.995) & (a != 0)
        text = np.empty(len(a), dtype=object)
        text[~small] = _text(a[~small], ",.2f")
        text[small] = _text(a[small], ".3g")
    return np.where(v < 0, "−", "").astype(object) + currency + text


def _facts(cond: Condition, s: pd.DataFrame, currency: str) -> np.ndarray:
    """The facts that put each row in its tier (the fields the condition tests), plus the CLV."""
    parts = []
    if cond.risk_at_least is not None or cond.risk_below is not None:
        churn, alive = s["p_churn"].to_numpy(float), s["p_alive"].to_numpy(float)
        no_score = np.isnan(churn)
        parts.append(
            np.where(no_score, "1 − P(alive) ", "p_churn ").astype(object)
            + _text(np.where(no_score, 1.0 - alive, churn), ".2f")
        )
    if cond.p_repurchase_7d_at_least is not None:
        parts.append("p_repurchase_7d " + _text(s["p_repurchase_7d"].to_numpy(float), ".2f"))
    if cond.p_alive_below is not None:
        parts.append("P(alive) " + _text(s["p_alive"].to_numpy(float), ".2f"))
    if cond.lifecycle_stages is not None:
        parts.append(s["lifecycle_stage"].astype(str).to_numpy(dtype=object))
    if any(
        getattr(cond, f) is not None
        for f in ("recency_days_at_least", "recency_days_at_most", "recency_days_above")
    ):
        parts.append("last purchase " + _text(s["recency_days"].to_numpy(float), ".0f") + " days ago")
    parts.append("CLV " + _money(s["clv_12m"].to_numpy(float), currency, 0))
    return _join(parts, ", ")


def plan_actions(
    scores: pd.DataFrame,
    history: pd.DataFrame,
    policy: Policy,
    as_of: dt.date,
    holdout: pd.Series | None = None,
) -> pd.DataFrame:
    """One outreach decision per customer for the business day ``as_of``.

    ``scores``: customer_id, p_churn (NaN outside the churn population), p_repurchase_7d, p_alive,
    expected_purchases_90d, clv_12m, lifecycle_stage (new/growing/mature/dormant/lapsed), value_tier
    (high/mid/low/none), recency_days (days since the last purchase; NaN if none); optional
    ``opted_out`` (bool), ``expected_order_value`` (¥), a channel's ``requires`` column (e.g.
    ``wecom_added``) and learned ``uplift_<channel>`` columns (incremental conversion probability;
    NaN falls back to the prior; columns of channels the policy does not declare are ignored).

    ``history``: the touches table (customer_id, ts in UTC, channel, arm, …); only ``arm ==
    "treatment"`` rows are contacts. ``holdout``: booleans indexed by customer_id (True = in the
    persistent global holdout); when None it is computed with
    :func:`experiments.assignment.global_holdout_mask` at the policy's holdout share.

    Returns customer_id, tier, action (a channel or ``"none"``), expected_value (¥ incremental value
    of the chosen action net of its cost; 0 for none), cost (¥) and reason, one row per input row in
    the input order. Raises :class:`features.schema.ContractError` listing every bad input row.
    """
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must be a serving.tiering.Policy, got {type(policy).__name__}")
    if isinstance(as_of, dt.datetime) or not isinstance(as_of, dt.date):
        raise TypeError(f"as_of must be a datetime.date (a business day), got {as_of!r}")
    s = validate_scores(scores)
    h = validate_history(history)
    ids = s["customer_id"].to_numpy(dtype=object)
    n = len(s)
    channels = policy.contact_channels
    specs = [policy.channels[c] for c in channels]

    held = _holdout_mask(ids, holdout, policy)
    opted = s["opted_out"].to_numpy(dtype=bool) if "opted_out" in s.columns else np.zeros(n, dtype=bool)
    capped = cap_reasons(contact_counts(h, ids, as_of), policy.caps)
    is_capped = ~pd.isna(capped)
    tier, cond = assign_tiers(s, policy)

    uplift, learned = channel_uplift(s, policy, tier, channels)
    listed = np.array([[c in t.channels for c in channels] for t in policy.tiers], dtype=bool)
    may_learn = np.array(
        [
            [t.open_to_learned and (t.incentives_allowed or not sp.incentive) for sp in specs]
            for t in policy.tiers
        ],
        dtype=bool,
    )
    by_tier = listed[tier] | (may_learn[tier] & learned)
    reachable = _reachable(s, policy, channels)
    eligible = ~(held | opted | is_capped)
    allowed = by_tier & reachable & eligible[:, None]
    cost = np.array([c.cost for c in specs])
    value = uplift * policy.margin_rate * expected_order_value(s, policy)[:, None] - cost[None, :]
    capacity = np.array([np.inf if c.daily_capacity is None else float(c.daily_capacity) for c in specs])
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(ids.astype(str), kind="stable")] = np.arange(n)
    alloc = allocate(value, allowed, cost, capacity, policy.budget, rank)

    chosen = alloc.channel
    contacted = chosen >= 0
    rows = np.arange(n)
    pick = np.maximum(chosen, 0)
    ev = np.where(contacted, value[rows, pick], 0.0)
    spent = np.where(contacted, cost[pick], 0.0)
    action = np.where(contacted, np.array(channels, dtype=object)[pick], NO_ACTION)
    masked = np.where(by_tier & reachable, value, -np.inf)
    best = masked.argmax(axis=1)

    # Reasons, built column-wise: one head per (tier, condition), one tail per outcome.
    cur = policy.currency
    head = np.empty(n, dtype=object)
    width = max(len(t.when) for t in policy.tiers)
    for key in np.unique(tier * width + cond):
        ti, ci = divmod(int(key), width)
        m = (tier == ti) & (cond == ci)
        t = policy.tiers[ti]
        head[m] = f"{t.label} (" + _facts(t.when[ci], s.loc[m], cur) + ")"
    labels = np.array([sp.label for sp in specs], dtype=object)
    best_value = masked[rows, best]
    reason = np.empty(n, dtype=object)
    todo = np.ones(n, dtype=bool)

    def put(mask: np.ndarray, text: np.ndarray | str) -> None:
        mask = mask & todo
        reason[mask] = text if isinstance(text, str) else text[mask]
        todo[mask] = False

    put(held, HOLDOUT_REASON)
    put(opted, OPT_OUT_REASON)
    m = is_capped & todo
    reason[m] = head[m] + ": " + capped[m]
    todo[m] = False
    put(~by_tier.any(axis=1), head + ": no outreach")
    put(~np.isfinite(best_value), head + ": no reachable channel")
    m = contacted & todo
    if m.any():
        k = chosen[m]
        src = np.where(learned[m, k], " (learned)", " (prior)").astype(object)
        reason[m] = (
            head[m] + ": " + labels[k] + ", uplift " + _text(uplift[m, k], ".2%") + src
            + ", EV " + _money(ev[m], cur) + " > 0"
        )  # fmt: skip
        todo[m] = False
    m = todo & (best_value <= 0)
    if m.any():
        reason[m] = (
            head[m] + ": no channel with positive expected value (best " + labels[best[m]]
            + ", EV " + _money(best_value[m], cur) + ")"
        )  # fmt: skip
        todo[m] = False
    m = todo
    if m.any():
        k = np.where(alloc.blocked_channel[m] >= 0, alloc.blocked_channel[m], best[m])
        why = np.where(
            alloc.blocked[m] == BLOCK_BUDGET, ": budget exhausted for ", ": daily capacity reached for "
        )
        reason[m] = head[m] + why.astype(object) + labels[k] + " (EV " + _money(value[m, k], cur) + ")"

    return pd.DataFrame(
        {
            "customer_id": ids,
            "tier": np.array([t.name for t in policy.tiers], dtype=object)[tier],
            "action": action,
            "expected_value": ev.astype(float),
            "cost": spent.astype(float),
            "reason": reason,
        },
        columns=list(OUTPUT_COLUMNS),
    )

"""Property tests on random histories: the engine's snapshot and labels equal a brute-force reference,
and records at or after the cutoff change no feature (leakage guard)."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.engine import Engine
from features.labels import compute_labels
from features.lifecycle import LifecycleRules
from features.schema import ARMS, EVENT_TYPES, MEMBER_LEVELS, ORDER_CHANNELS, ORDER_STATUSES
from features.snapshot import SNAPSHOT_DTYPES, compute_snapshot
from tests.features.reference import cutoff_instant, reference_labels, reference_snapshot

CUTOFFS = (dt.date(2024, 6, 1), dt.date(2024, 11, 12), dt.date(2025, 1, 1))
#: Customer ids whose string order differs from their numeric order, in both cases.
IDS = ("C1", "C10", "C2", "c3", "B7", "a9")
DAY_S = 86_400
#: Offsets (seconds before the cutoff) on the edges of every window the features use.
EDGES = tuple(
    s
    for d in (0, 1, 7, 30, 60, 90, 180, 365, 372)
    for s in (d * DAY_S - 1, d * DAY_S, d * DAY_S + 1)
    if s >= 0
)
RULES = LifecycleRules(active_days=60, dormant_days=150, growing_min_orders=2, mature_min_orders=3)
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


def _offsets(past_days: int = 800, future_days: int = 400) -> st.SearchStrategy[int]:
    """Seconds relative to the cutoff (negative = before it), biased to window edges and shared days."""
    edge = st.sampled_from(EDGES).map(lambda s: -s)
    same_day = st.integers(-40, 40).map(lambda h: -3 * DAY_S + h * 1800)
    anywhere = st.integers(-past_days * DAY_S, future_days * DAY_S)
    return st.one_of(edge, same_day, anywhere)


@st.composite
def histories(draw: st.DrawFn) -> tuple[dt.date, dict[str, list[dict]]]:
    day = draw(st.sampled_from(CUTOFFS))
    c = cutoff_instant(day)
    at = lambda s: c + dt.timedelta(seconds=s)  # noqa: E731
    ids = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=len(IDS), unique=True))
    customers = [
        {
            "customer_id": cid,
            "first_seen_ts": at(draw(_offsets(900, 30))),
            "acquisition_channel": draw(st.sampled_from(ORDER_CHANNELS)),
            "city_tier": draw(st.integers(1, 5)),
            "member_level": draw(st.sampled_from(MEMBER_LEVELS)),
            "wecom_added_ts": draw(st.none() | _offsets().map(at)),
        }
        for cid in ids
    ]
    who = st.sampled_from(ids)
    orders = [
        {
            "customer_id": draw(who),
            "ts": at(draw(_offsets())),
            "channel": draw(st.sampled_from(ORDER_CHANNELS)),
            "status": draw(st.sampled_from(ORDER_STATUSES)),
            "net_amount": draw(st.integers(-2000, 50_000)) / 100,
        }
        for _ in range(draw(st.integers(0, 25)))
    ]
    events = [
        {
            "customer_id": draw(who),
            "ts": at(draw(_offsets(120, 30))),
            "event_type": draw(st.sampled_from(EVENT_TYPES)),
        }
        for _ in range(draw(st.integers(0, 20)))
    ]
    touches = [
        {"customer_id": draw(who), "ts": at(draw(_offsets(400, 30))), "arm": draw(st.sampled_from(ARMS))}
        for _ in range(draw(st.integers(0, 10)))
    ]
    return day, {"customers": customers, "orders": orders, "events": events, "touches": touches}


def _frames(tables: dict[str, list[dict]]) -> dict[str, pd.DataFrame]:
    """Contract-shaped frames (only the columns features use, plus ids) from the record lists."""
    cust = pd.DataFrame(tables["customers"])
    cust["first_seen_ts"] = pd.to_datetime(cust["first_seen_ts"], utc=True)
    cust["wecom_added_ts"] = pd.to_datetime(cust["wecom_added_ts"], utc=True)
    out = {"customers": cust}
    columns = {
        "orders": ["customer_id", "ts", "channel", "status", "net_amount"],
        "events": ["customer_id", "ts", "event_type"],
        "touches": ["customer_id", "ts", "arm"],
    }
    for name, cols in columns.items():
        df = pd.DataFrame(tables[name], columns=cols)
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
        if name == "orders":
            df["net_amount"] = df["net_amount"].astype(float)
        out[name] = df
    return out


def _same(got: object, want: object) -> bool:
    if isinstance(want, float):
        if math.isnan(want):
            return isinstance(got, float) and math.isnan(got)
        return math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-9)
    return got == want


@pytest.fixture(scope="module")
def engine():
    with Engine() as eng:
        yield eng


@SETTINGS
@given(histories())
def test_every_feature_equals_the_brute_force_reference(engine: Engine, case) -> None:
    day, tables = case
    snap = compute_snapshot(_frames(tables), day, rules=RULES, engine=engine)
    rules = {
        k: getattr(RULES, k)
        for k in ("active_days", "dormant_days", "growing_min_orders", "mature_min_orders")
    }
    want = reference_snapshot(tables, day, rules)
    assert list(snap["customer_id"]) == sorted(want)
    assert (snap["cutoff"] == pd.Timestamp(cutoff_instant(day))).all()
    features = [c for c in SNAPSHOT_DTYPES if c not in ("customer_id", "cutoff")]
    for row in want.values():
        assert set(row) == set(features)
    bad = [
        (row.customer_id, col, getattr(row, col), want[row.customer_id][col])
        for row in snap.itertuples(index=False)
        for col in features
        if not _same(getattr(row, col), want[row.customer_id][col])
    ]
    assert not bad, bad[:10]


@settings(SETTINGS, max_examples=40)
@given(histories(), st.integers(0, 3))
def test_labels_equal_the_brute_force_reference(engine: Engine, case, churn_choice: int) -> None:
    day, tables = case
    churn_days = (1, 30, 90, 180)[churn_choice]
    end = pd.Timestamp(cutoff_instant(day)) + pd.Timedelta(days=400)
    got = compute_labels(_frames(tables), day, None, churn_days, engine=engine, end=end)
    want = reference_labels(tables, day, churn_days)
    assert list(got.index) == sorted(want)
    bad = [
        (cid, col, got.at[cid, col], want[cid][col])
        for cid in want
        for col in want[cid]
        if not _same(float(got.at[cid, col]), want[cid][col])
    ]
    assert not bad, bad[:10]


@st.composite
def later_records(draw: st.DrawFn, ids: list[str], c: dt.datetime) -> dict[str, list[dict]]:
    """Any records at or after the cutoff: orders, events, touches and newly seen customers."""
    after = st.integers(0, 400 * DAY_S).map(lambda s: c + dt.timedelta(seconds=s))
    who = st.sampled_from(ids)
    n = st.integers(0, 8)
    return {
        "orders": [
            {
                "customer_id": draw(who),
                "ts": draw(after),
                "channel": draw(st.sampled_from(ORDER_CHANNELS)),
                "status": draw(st.sampled_from(ORDER_STATUSES)),
                "net_amount": draw(st.integers(0, 50_000)) / 100,
            }
            for _ in range(draw(n))
        ],
        "events": [
            {"customer_id": draw(who), "ts": draw(after), "event_type": draw(st.sampled_from(EVENT_TYPES))}
            for _ in range(draw(n))
        ],
        "touches": [
            {"customer_id": draw(who), "ts": draw(after), "arm": draw(st.sampled_from(ARMS))}
            for _ in range(draw(n))
        ],
        "customers": [
            {
                "customer_id": f"LATE{i}",
                "first_seen_ts": draw(after),
                "acquisition_channel": "app",
                "city_tier": 1,
                "member_level": "none",
                "wecom_added_ts": None,
            }
            for i in range(draw(st.integers(0, 2)))
        ],
    }


@settings(SETTINGS, max_examples=30)
@given(histories(), st.data())
def test_records_at_or_after_the_cutoff_change_no_feature(engine: Engine, case, data) -> None:
    day, tables = case
    c = cutoff_instant(day)
    ids = [p["customer_id"] for p in tables["customers"]]
    extra = data.draw(later_records(ids, c))
    noisy = {name: rows + extra[name] for name, rows in tables.items()}
    before = compute_snapshot(_frames(tables), day, engine=engine)
    after = compute_snapshot(_frames(noisy), day, engine=engine)
    pd.testing.assert_frame_equal(before, after)

"""Tiering policy: property tests over random score frames and histories, and one example per tier rule.

The properties are checked against independent re-computations written here (expected value from the
policy's formula, contact counts from the raw history, the real global-holdout hash), not against the
module's own helpers.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.assignment import global_holdout_mask
from features.schema import ContractError
from serving.tiering import (
    HOLDOUT_REASON,
    NO_ACTION,
    OPT_OUT_REASON,
    OUTPUT_COLUMNS,
    Policy,
    _scan,
    _ScanState,
    allocate,
    load_policy,
    plan_actions,
)

AS_OF = dt.date(2025, 3, 10)
TZ = "Asia/Shanghai"
POLICY = load_policy()
CHANNELS = POLICY.contact_channels
STAGES = ["new", "growing", "mature", "dormant", "lapsed"]
TIERS = ["high", "mid", "low", "none"]
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# ----------------------------------------------------------------------------- generators


def _touch_ts(days_ago: int, hour: int) -> pd.Timestamp:
    """A touch at ``hour`` local time, ``days_ago`` business days before AS_OF, in UTC."""
    day = AS_OF - dt.timedelta(days=days_ago)
    return pd.Timestamp(dt.datetime.combine(day, dt.time(hour))).tz_localize(TZ).tz_convert("UTC")


@st.composite
def worlds(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, Policy]:
    n = draw(st.integers(1, 30))
    nums = draw(st.lists(st.integers(0, 9999), min_size=n, max_size=n, unique=True))
    ids = [f"C{i:04d}" for i in nums]
    unit = st.floats(0, 1, allow_nan=False)
    scores = pd.DataFrame(
        {
            "customer_id": ids,
            "p_churn": draw(st.lists(st.one_of(st.none(), unit), min_size=n, max_size=n)),
            "p_repurchase_7d": draw(st.lists(st.floats(0, 0.8), min_size=n, max_size=n)),
            "p_alive": draw(st.lists(unit, min_size=n, max_size=n)),
            "expected_purchases_90d": draw(st.lists(st.floats(0, 4), min_size=n, max_size=n)),
            "clv_12m": draw(st.lists(st.floats(0, 6000), min_size=n, max_size=n)),
            "lifecycle_stage": draw(st.lists(st.sampled_from(STAGES), min_size=n, max_size=n)),
            "value_tier": draw(st.lists(st.sampled_from(TIERS), min_size=n, max_size=n)),
            "recency_days": draw(st.lists(st.one_of(st.none(), st.floats(0, 800)), min_size=n, max_size=n)),
        }
    )
    scores["p_churn"] = scores["p_churn"].astype(float)
    scores["recency_days"] = scores["recency_days"].astype(float)
    if draw(st.booleans()):
        scores["opted_out"] = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if draw(st.booleans()):
        scores["wecom_added"] = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    for ch in draw(st.lists(st.sampled_from(CHANNELS), unique=True, max_size=len(CHANNELS))):
        vals = draw(st.lists(st.one_of(st.none(), st.floats(-0.05, 0.4)), min_size=n, max_size=n))
        scores[f"uplift_{ch}"] = pd.Series(vals, dtype=float)
    touches = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),
                st.integers(-3, 40),  # negative: touches after the planned day, which must be ignored
                st.integers(0, 23),
                st.sampled_from(["ai_call", "sms", "wecom_1v1", "wecom_group", "coupon", "template_msg"]),
                st.sampled_from(["treatment", "control", "holdout"]),
            ),
            max_size=60,
        )
    )
    history = pd.DataFrame(
        {
            "customer_id": pd.Series([ids[t[0]] for t in touches], dtype=object),
            "ts": pd.Series([_touch_ts(t[1], t[2]) for t in touches], dtype="datetime64[ns, UTC]"),
            "campaign_id": "CMP",
            "channel": pd.Series([t[3] for t in touches], dtype=object),
            "arm": pd.Series([t[4] for t in touches], dtype=object),
            "cost": 0.1,
        }
    )
    max7 = draw(st.integers(0, 3))
    caps = {
        "max_per_7d": max7,
        "max_per_30d": draw(st.integers(max7, 6)),
        "quiet_days": draw(st.integers(0, 5)),
    }
    channels = {}
    for name, spec in POLICY.channels.items():
        cap = None if name == NO_ACTION else draw(st.one_of(st.none(), st.integers(0, 8)))
        channels[name] = spec.model_copy(update={"daily_capacity": cap})
    policy = POLICY.replace(
        budget=draw(st.floats(0.01, 40)),
        caps=caps,
        channels=channels,
        global_holdout_share=draw(st.sampled_from([0.0, 0.05, 0.3])),
    )
    return scores, history, policy


# ----------------------------------------------------------------------------- independent references


def _order_value(row: pd.Series, policy: Policy) -> float:
    e90, clv = row["expected_purchases_90d"], row["clv_12m"]
    if e90 >= 0.01 and clv > 0:
        return clv / (e90 * 365 / 90)
    return policy.default_order_value


def _uplift(row: pd.Series, channel: str, tier_name: str, policy: Policy) -> tuple[float, bool]:
    col = f"uplift_{channel}"
    if col in row.index and not pd.isna(row[col]):
        return float(row[col]), True
    tier = next(t for t in policy.tiers if t.name == tier_name)
    return policy.channels[channel].uplift_prior * tier.response_factor * row["p_alive"], False


def _ev(row: pd.Series, channel: str, tier_name: str, policy: Policy) -> float:
    up, _ = _uplift(row, channel, tier_name, policy)
    return up * policy.margin_rate * _order_value(row, policy) - policy.channels[channel].cost


def _allowed(row: pd.Series, tier_name: str, policy: Policy) -> list[str]:
    tier = next(t for t in policy.tiers if t.name == tier_name)
    out = []
    for ch in policy.contact_channels:
        spec = policy.channels[ch]
        learned = _uplift(row, ch, tier_name, policy)[1]
        opened = tier.open_to_learned and learned and (tier.incentives_allowed or not spec.incentive)
        reach = spec.requires is None or spec.requires not in row.index or bool(row[spec.requires])
        if (ch in tier.channels or opened) and reach:
            out.append(ch)
    return out


def _local_day(ts: pd.Timestamp) -> dt.date:
    return ts.tz_convert(TZ).date()


def _cap_ok(history: pd.DataFrame, cid: str, policy: Policy) -> bool:
    """Would one more touch on AS_OF keep this customer within every cap? (from the raw history)."""
    days = [
        (AS_OF - _local_day(ts)).days
        for ts, c, arm in zip(history["ts"], history["customer_id"], history["arm"], strict=True)
        if c == cid and arm == "treatment" and _local_day(ts) <= AS_OF
    ]
    caps = policy.caps
    return (
        sum(d < 7 for d in days) + 1 <= caps.max_per_7d
        and sum(d < 30 for d in days) + 1 <= caps.max_per_30d
        and all(d > caps.quiet_days for d in days)
    )


def _holdout_series(ids: pd.Series, share: float) -> pd.Series:
    return pd.Series(global_holdout_mask(ids, share), index=ids.to_numpy())


# ----------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(worlds())
def test_no_action_with_non_positive_expected_value(world) -> None:
    scores, history, policy = world
    plan = plan_actions(scores, history, policy, AS_OF)
    rows = scores.set_index("customer_id")
    for r in plan.itertuples():
        if r.action == NO_ACTION:
            assert r.expected_value == 0.0 and r.cost == 0.0
            continue
        expected = _ev(rows.loc[r.customer_id], r.action, r.tier, policy)
        assert r.expected_value > 0
        assert r.expected_value == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert r.cost == policy.channels[r.action].cost
        assert r.action in _allowed(rows.loc[r.customer_id], r.tier, policy)


@PROPERTY_SETTINGS
@given(worlds())
def test_caps_capacity_and_budget_are_never_exceeded(world) -> None:
    scores, history, policy = world
    plan = plan_actions(scores, history, policy, AS_OF)
    contacted = plan[plan["action"] != NO_ACTION]
    assert contacted["cost"].sum() <= policy.budget * (1 + 1e-9)
    for ch, n in contacted["action"].value_counts().items():
        cap = policy.channels[ch].daily_capacity
        assert cap is None or n <= cap, (ch, n, cap)
    for cid in contacted["customer_id"]:
        assert _cap_ok(history, cid, policy), cid


@PROPERTY_SETTINGS
@given(worlds())
def test_global_holdout_is_never_contacted(world) -> None:
    scores, history, policy = world
    held = global_holdout_mask(scores["customer_id"], policy.global_holdout_share)
    explicit = plan_actions(
        scores,
        history,
        policy,
        AS_OF,
        holdout=_holdout_series(scores["customer_id"], policy.global_holdout_share),
    )
    default = plan_actions(scores, history, policy, AS_OF)  # None → the same hash at the policy's share
    for plan in (explicit, default):
        assert (plan.loc[held, "action"] == NO_ACTION).all()
        assert (plan.loc[held, "reason"] == HOLDOUT_REASON).all()
    pd.testing.assert_frame_equal(explicit, default)


@PROPERTY_SETTINGS
@given(worlds())
def test_opted_out_customers_are_never_contacted(world) -> None:
    scores, history, policy = world
    scores = scores.assign(opted_out=[i % 2 == 0 for i in range(len(scores))])
    plan = plan_actions(scores, history, policy, AS_OF, holdout=pd.Series(False, index=scores["customer_id"]))
    out = plan[scores["opted_out"].to_numpy()]
    assert (out["action"] == NO_ACTION).all() and (out["reason"] == OPT_OUT_REASON).all()


@PROPERTY_SETTINGS
@given(worlds(), st.randoms(use_true_random=False))
def test_same_input_gives_same_actions_in_any_row_order(world, rnd) -> None:
    scores, history, policy = world
    before = scores.copy(), history.copy()
    first = plan_actions(scores, history, policy, AS_OF)
    again = plan_actions(scores, history, policy, AS_OF)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(scores, before[0])  # inputs are not modified
    pd.testing.assert_frame_equal(history, before[1])
    order = list(range(len(scores)))
    rnd.shuffle(order)
    shuffled = plan_actions(scores.iloc[order], history.iloc[::-1], policy, AS_OF)
    assert list(shuffled["customer_id"]) == list(scores["customer_id"].iloc[order])
    pd.testing.assert_frame_equal(
        shuffled.set_index("customer_id").sort_index(), first.set_index("customer_id").sort_index()
    )


@PROPERTY_SETTINGS
@given(worlds())
def test_one_row_per_customer_in_input_order(world) -> None:
    scores, history, policy = world
    plan = plan_actions(scores, history, policy, AS_OF)
    assert list(plan.columns) == list(OUTPUT_COLUMNS)
    assert list(plan["customer_id"]) == list(scores["customer_id"])
    assert plan["reason"].map(lambda s: isinstance(s, str) and len(s) > 0).all()


@PROPERTY_SETTINGS
@given(worlds())
def test_without_binding_limits_every_customer_gets_their_best_channel(world) -> None:
    scores, history, policy = world
    channels = {k: v.model_copy(update={"daily_capacity": None}) for k, v in POLICY.channels.items()}
    policy = policy.replace(budget=1e9, channels=channels)
    holdout = pd.Series(False, index=scores["customer_id"])
    plan = plan_actions(scores, history, policy, AS_OF, holdout=holdout).set_index("customer_id")
    for cid, row in scores.set_index("customer_id").iterrows():
        got = plan.loc[cid]
        evs = {ch: _ev(row, ch, got["tier"], policy) for ch in _allowed(row, got["tier"], policy)}
        eligible = _cap_ok(history, cid, policy) and not row.get("opted_out", False)
        if not eligible or not evs or max(evs.values()) <= 0:
            assert got["action"] == NO_ACTION
        else:
            assert got["expected_value"] == pytest.approx(max(evs.values()), rel=1e-9)


# ----------------------------------------------------------------------------- allocation


def _reference_scan(items, n, capacity, budget):
    """The sequential rule _scan computes in bulk, one upgrade at a time."""
    choice, used, remaining = [-1] * n, [0] * len(capacity), budget
    closed = [False] * len(capacity)
    for cust, _step, frm, to, dc in items:
        if choice[cust] != frm:
            continue
        if dc > remaining + 1e-9 or closed[to]:
            continue
        if used[to] >= capacity[to]:
            closed[to] = True
            continue
        choice[cust], used[to], remaining = to, used[to] + 1, remaining - dc
        if frm >= 0:
            used[frm] -= 1
    return choice, remaining


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(0, 2), min_size=1, max_size=3)), max_size=12),
    st.lists(st.one_of(st.just(float("inf")), st.integers(0, 3).map(float)), min_size=3, max_size=3),
    st.floats(0, 6),
)
def test_bulk_scan_equals_the_sequential_rule(paths, capacity, budget) -> None:
    cost = [0.5, 1.0, 2.0]
    items, seen = [], set()
    for cust, chans in paths:  # each customer's upgrade path: none → c1 → c2 ... (increasing cost)
        if cust in seen:
            continue
        seen.add(cust)
        frm = -1
        for step, to in enumerate(sorted(set(chans))):
            items.append((cust, step, frm, to, cost[to] - (cost[frm] if frm >= 0 else 0.0)))
            frm = to
    # A random interleaving of the customers' paths that keeps each path in step order (as the slope
    # sort guarantees): draw a key per item, then hand each customer's sorted keys to its steps in order.
    keys = np.random.default_rng(len(items)).random(len(items))
    for cust in seen:
        mine = [i for i, it in enumerate(items) if it[0] == cust]
        keys[mine] = np.sort(keys[mine])
    items = [items[i] for i in np.argsort(keys)]
    arr = [np.array([it[j] for it in items], dtype=float if j == 4 else np.int64) for j in range(5)]
    state = _ScanState(
        np.full(6, -1, dtype=np.int64), np.zeros(3), budget, np.zeros(6, np.int8), np.full(6, -1)
    )
    _scan(arr[0], arr[1], arr[2], arr[3], arr[4], np.array(capacity), state, 1e-9)
    want, remaining = _reference_scan(items, 6, capacity, budget)
    assert state.choice.tolist() == want
    assert state.remaining == pytest.approx(remaining)


def _brute_force(V: np.ndarray, c: np.ndarray, budget: float) -> float:
    import itertools

    best = 0.0
    for plan in itertools.product(range(-1, V.shape[1]), repeat=V.shape[0]):
        if sum(c[j] for j in plan if j >= 0) <= budget + 1e-9:
            best = max(best, sum(V[i, j] for i, j in enumerate(plan) if j >= 0))
    return best


def test_allocation_is_feasible_and_near_optimal() -> None:
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(40):
        V = rng.normal(1.0, 2.0, (7, 3))
        c = np.array([0.5, 1.0, 2.5])
        budget = float(rng.uniform(1, 8))
        a = allocate(V, np.ones(V.shape, bool), c, np.full(3, np.inf), budget, np.arange(7))
        chosen = np.flatnonzero(a.channel >= 0)
        assert a.spend <= budget + 1e-9 and (V[chosen, a.channel[chosen]] > 0).all()
        got = V[chosen, a.channel[chosen]].sum()
        opt = _brute_force(V, c, budget)
        assert got <= opt + 1e-9
        ratios.append(got / opt if opt > 0 else 1.0)
    assert np.mean(ratios) > 0.95 and min(ratios) > 0.7


def test_allocation_respects_capacity_and_falls_back_to_a_cheaper_channel() -> None:
    # Three customers all prefer channel 1 (capacity 1); the two who miss it take channel 0.
    V = np.array([[1.0, 5.0], [1.0, 4.0], [1.0, 3.0]])
    a = allocate(
        V, np.ones(V.shape, bool), np.array([0.1, 1.0]), np.array([np.inf, 1.0]), 100.0, np.arange(3)
    )
    assert a.channel.tolist() == [1, 0, 0]


# ----------------------------------------------------------------------------- one example per tier rule


def _one(**overrides) -> pd.DataFrame:
    row = {
        "customer_id": "C1",
        "p_churn": 0.62,
        "p_repurchase_7d": 0.05,
        "p_alive": 0.9,
        "expected_purchases_90d": 0.6,
        "clv_12m": 1240.0,
        "lifecycle_stage": "dormant",
        "value_tier": "high",
        "recency_days": 120.0,
    }
    row.update(overrides)
    return pd.DataFrame([row])


NO_HISTORY = pd.DataFrame(
    {
        "customer_id": pd.Series(dtype=object),
        "ts": pd.Series(dtype="datetime64[ns, UTC]"),
        "campaign_id": pd.Series(dtype=object),
        "channel": pd.Series(dtype=object),
        "arm": pd.Series(dtype=object),
        "cost": pd.Series(dtype=float),
    }
)


def _plan(scores: pd.DataFrame, policy: Policy = POLICY, history: pd.DataFrame = NO_HISTORY) -> pd.Series:
    holdout = pd.Series(False, index=scores["customer_id"])
    return plan_actions(scores, history, policy, AS_OF, holdout=holdout).iloc[0]


def _hand_ev(prior: float, factor: float, p_alive: float, clv: float, e90: float, cost: float) -> float:
    return prior * factor * p_alive * 0.35 * (clv / (e90 * 365 / 90)) - cost


def test_high_value_at_risk_gets_an_ai_call_with_a_readable_reason() -> None:
    out = _plan(_one())
    ev = _hand_ev(0.015, 1.0, 0.9, 1240.0, 0.6, 0.6)  # ai_call beats wecom_1v1 (0.02, ¥2.0) here
    assert out["tier"] == "high_value_at_risk" and out["action"] == "ai_call"
    assert out["expected_value"] == pytest.approx(ev)
    assert out["reason"] == (
        f"high value at risk (p_churn 0.62, CLV ¥1,240): AI call, uplift 1.35% (prior), EV ¥{ev:,.2f} > 0"
    )


def test_high_value_dormant_with_low_churn_score_is_still_at_risk() -> None:
    out = _plan(_one(p_churn=0.3))
    assert out["tier"] == "high_value_at_risk"
    assert out["reason"].startswith("high value at risk (dormant, CLV ¥1,240): AI call")


def test_learned_uplift_can_make_staff_wecom_the_better_channel() -> None:
    out = _plan(_one(uplift_wecom_1v1=0.08, wecom_added=True))
    assert out["action"] == "wecom_1v1"
    assert "staff WeCom 1:1, uplift 8.00% (learned)" in out["reason"]
    # Not reachable on WeCom: the same learned uplift cannot be used.
    assert _plan(_one(uplift_wecom_1v1=0.08, wecom_added=False))["action"] == "ai_call"


def test_mid_value_at_risk_picks_the_best_of_coupon_wecom_and_sms() -> None:
    # Priors on a ¥296 order: coupon (2 %, ¥3) and WeCom (2 %, ¥2) lose money; SMS (0.1 %, ¥0.05) pays.
    out = _plan(_one(value_tier="mid", clv_12m=600.0, expected_purchases_90d=0.5, p_churn=0.7))
    assert out["tier"] == "mid_value_at_risk" and out["action"] == "sms"
    assert out["expected_value"] == pytest.approx(_hand_ev(0.001, 1.0, 0.9, 600.0, 0.5, 0.05))
    assert _hand_ev(0.02, 1.0, 0.9, 600.0, 0.5, 2.0) < 0 and _hand_ev(0.02, 1.0, 0.9, 600.0, 0.5, 3.0) < 0
    # Measured coupon uplift of 10 % makes the coupon worth it.
    out = _plan(
        _one(value_tier="mid", clv_12m=300.0, expected_purchases_90d=0.5, p_churn=0.7, uplift_coupon=0.1)
    )
    assert out["action"] == "coupon" and "coupon, uplift 10.00% (learned)" in out["reason"]


def test_sure_things_get_no_incentive_at_most_a_light_reminder() -> None:
    out = _plan(_one(p_repurchase_7d=0.8, uplift_coupon=0.3, uplift_ai_call=-0.01))
    assert out["tier"] == "sure_thing" and out["action"] == "template_msg"
    assert out["reason"].startswith("likely to buy within 7 days anyway (p_repurchase_7d 0.80, CLV ¥1,240): ")
    bad = POLICY.model_dump()
    bad["tiers"][0]["channels"] = ["template_msg", "coupon"]
    with pytest.raises(ValueError, match="forbids incentives but lists incentive channel 'coupon'"):
        Policy.model_validate(bad)


def test_lapsed_180_to_360_days_get_a_recall() -> None:
    out = _plan(
        _one(lifecycle_stage="lapsed", value_tier="low", recency_days=200.0, p_churn=0.9, p_alive=0.6)
    )
    assert out["tier"] == "lapsed_recall" and out["action"] == "ai_call"
    assert out["reason"].startswith(
        "lapsed 180–360 days, recall (lapsed, last purchase 200 days ago, CLV ¥1,240)"
    )


def test_lost_causes_get_nothing_even_with_learned_uplift() -> None:
    out = _plan(_one(lifecycle_stage="lapsed", recency_days=400.0, p_churn=np.nan, uplift_ai_call=0.2))
    assert out["tier"] == "lost_cause" and out["action"] == NO_ACTION
    assert out["reason"] == "lost cause (last purchase 400 days ago, CLV ¥1,240): no outreach"
    out = _plan(_one(p_alive=0.05))
    assert out["reason"] == "lost cause (P(alive) 0.05, CLV ¥1,240): no outreach"


def test_missing_churn_score_falls_back_to_p_alive() -> None:
    out = _plan(_one(p_churn=np.nan, p_alive=0.3, lifecycle_stage="growing"))
    assert out["tier"] == "high_value_at_risk"
    assert out["reason"].startswith("high value at risk (1 − P(alive) 0.70, CLV ¥1,240)")


def test_new_and_steady_customers() -> None:
    new = _plan(
        _one(customer_id="N1", lifecycle_stage="new", value_tier="none", p_churn=np.nan, p_alive=1.0,
             clv_12m=0.0, expected_purchases_90d=0.0, recency_days=np.nan)
    )  # fmt: skip
    assert new["tier"] == "new_customer" and new["action"] == "template_msg"
    assert new["expected_value"] == pytest.approx(0.0005 * 0.5 * 1.0 * 0.35 * 200.0 - 0.01)
    steady = _plan(_one(p_churn=0.2, lifecycle_stage="mature", recency_days=20.0))
    assert steady["tier"] == "steady" and steady["action"] == NO_ACTION
    assert steady["reason"] == "active, not at risk (CLV ¥1,240): no outreach"


def test_negative_expected_value_is_explained() -> None:
    out = _plan(_one(value_tier="low", clv_12m=20.0, expected_purchases_90d=0.5, p_churn=0.8))
    assert out["action"] == NO_ACTION
    assert re.search(
        r": no channel with positive expected value \(best [a-zA-Z ]+, EV −¥0\.\d+\)$", out["reason"]
    )


def test_caps_and_quiet_days_are_explained() -> None:
    def touches(*days_ago: int) -> pd.DataFrame:
        return pd.DataFrame(
            {"customer_id": "C1", "ts": [_touch_ts(d, 12) for d in days_ago], "campaign_id": "X",
             "channel": "sms", "arm": "treatment", "cost": 0.05}
        )  # fmt: skip

    assert _plan(_one(), history=touches(4, 5))["reason"].endswith(
        "contact cap: 2 touches in the last 7 days (max 2)"
    )
    assert _plan(_one(), history=touches(8, 12, 20, 29))["reason"].endswith(
        "contact cap: 4 touches in the last 30 days (max 4)"
    )
    assert _plan(_one(), history=touches(2))["reason"].endswith(
        "quiet period: last touch 2 days ago (quiet 2 days after a touch)"
    )
    assert _plan(_one(), history=touches(3))["action"] == "ai_call"
    assert _plan(_one(), history=touches(30, 31, 40, 50, -1))["action"] == "ai_call"  # old or future
    control = touches(0).assign(arm="control")
    assert _plan(_one(), history=control)["action"] == "ai_call"  # control rows are not contacts


def test_budget_and_capacity_are_explained() -> None:
    two = pd.concat([_one(customer_id="A", clv_12m=2000.0), _one(customer_id="B")], ignore_index=True)
    plan = plan_actions(
        two, NO_HISTORY, POLICY.replace(budget=0.7), AS_OF, holdout=pd.Series(False, index=["A", "B"])
    )
    assert plan["action"].tolist() == ["ai_call", NO_ACTION]  # A is worth more per ¥
    assert re.search(r": budget exhausted for AI call \(EV ¥\d\.\d\d\)$", plan.loc[1, "reason"])
    channels = {k: v.model_copy(update={"daily_capacity": 1 if k == "ai_call" else v.daily_capacity})
                for k, v in POLICY.channels.items()}  # fmt: skip
    capped = POLICY.replace(channels=channels)
    holdout = pd.Series(False, index=["A", "B"])
    plan = plan_actions(two, NO_HISTORY, capped, AS_OF, holdout=holdout)
    assert plan["action"].tolist() == ["ai_call", "wecom_1v1"]  # B falls back to its next-best channel
    plan = plan_actions(two.assign(wecom_added=False), NO_HISTORY, capped, AS_OF, holdout=holdout)
    assert plan["action"].tolist() == ["ai_call", NO_ACTION]
    assert re.search(r": daily capacity reached for AI call \(EV ¥\d\.\d\d\)$", plan.loc[1, "reason"])


def test_holdout_and_opt_out_reasons() -> None:
    scores = _one(opted_out=True)
    assert _plan(scores)["reason"] == OPT_OUT_REASON
    held = plan_actions(_one(), NO_HISTORY, POLICY, AS_OF, holdout=pd.Series(True, index=["C1"])).iloc[0]
    assert held["action"] == NO_ACTION and held["reason"] == HOLDOUT_REASON


def test_expected_order_value_column_replaces_the_clv_estimate() -> None:
    out = _plan(_one(expected_order_value=500.0))
    assert out["expected_value"] == pytest.approx(0.015 * 0.9 * 0.35 * 500.0 - 0.6)


# ----------------------------------------------------------------------------- validation and the policy file


def test_bad_scores_are_reported_all_at_once() -> None:
    bad = pd.concat([_one(customer_id="A"), _one(customer_id="A"), _one(customer_id="B")], ignore_index=True)
    bad.loc[1, "p_alive"] = 1.5
    bad.loc[2, "lifecycle_stage"] = "zombie"
    bad.loc[2, "clv_12m"] = np.nan
    with pytest.raises(ContractError) as err:
        plan_actions(bad, NO_HISTORY, POLICY, AS_OF)
    text = str(err.value)
    for fragment in ("customer_id", "p_alive", "lifecycle_stage", "clv_12m"):
        assert fragment in text, fragment


def test_bad_history_and_arguments_are_rejected() -> None:
    naive = NO_HISTORY.copy()
    naive["ts"] = pd.Series(dtype="datetime64[ns]")
    with pytest.raises(ContractError, match="ts"):
        plan_actions(_one(), naive, POLICY, AS_OF)
    with pytest.raises(TypeError, match="as_of"):
        plan_actions(_one(), NO_HISTORY, POLICY, dt.datetime(2025, 3, 10))
    with pytest.raises(ValueError, match="no entry for 1 customers"):
        plan_actions(_one(), NO_HISTORY, POLICY, AS_OF, holdout=pd.Series(False, index=["other"]))


def test_empty_scores_give_an_empty_plan() -> None:
    plan = plan_actions(_one().iloc[:0], NO_HISTORY, POLICY, AS_OF)
    assert plan.empty and list(plan.columns) == list(OUTPUT_COLUMNS)


def test_packaged_policy_loads_and_cites_its_sources() -> None:
    policy = load_policy()
    assert set(policy.channels) == {"ai_call", "wecom_1v1", "coupon", "sms", "template_msg", "none"}
    assert policy.tiers[-1].when[0].unconditional
    text = (Path(__file__).parents[2] / "serving" / "policy.yaml").read_text(encoding="utf-8")
    assert text.count("CHANNELS.md") >= 5


def test_invalid_policy_file_lists_every_problem(tmp_path: Path) -> None:
    import yaml

    raw = POLICY.model_dump()
    raw["margin_rate"] = 1.5
    raw["surprise"] = 1
    raw["channels"]["fax"] = {"label": "fax", "cost": 1.0, "uplift_prior": 0.1}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_policy(path)
    text = str(err.value)
    assert str(path) in text and "margin_rate" in text and "surprise" in text
    raw = POLICY.model_dump()
    raw["channels"]["fax"] = {"label": "fax", "cost": 1.0, "uplift_prior": 0.1}
    raw["tiers"] = raw["tiers"][:-1]
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_policy(path)
    assert "'fax'" in str(err.value) and "must match everyone" in str(err.value)
    path.write_text("channels: [unclosed", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_policy(path)

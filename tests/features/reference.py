"""Brute-force, pure-Python reference of every snapshot feature and label, written from the definitions.

Loops over each customer's records with plain ``datetime`` arithmetic; it shares no code with the
engine path (no ibis, no SQL, no pandas groupby) so that agreement is evidence, not tautology.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from fractions import Fraction
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Shanghai")
UTC = dt.UTC
CHANNELS = ("tmall", "jd", "douyin", "miniprogram", "offline_store", "app", "wecom")
TRACKED_EVENTS = (
    "wecom_msg_in",
    "wecom_msg_out",
    "group_join",
    "live_view",
    "miniprogram_visit",
    "coupon_claim",
    "coupon_redeem",
)
DAY = dt.timedelta(days=1)


def cutoff_instant(day: dt.date) -> dt.datetime:
    """Midnight of ``day`` in Shanghai, as an aware UTC datetime."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=TZ).astimezone(UTC)


def _days(delta: dt.timedelta) -> float:
    return delta / DAY


def _money(values: list[float]) -> float:
    # Amounts are whole cents: sum them exactly.
    return float(sum((Fraction(round(v * 100), 100) for v in values), Fraction(0)))


def _rank_pct(keys: dict[str, tuple]) -> dict[str, float]:
    """Position (1-based) of each customer when sorted by key, as a fraction of the group size."""
    ordered = sorted(keys, key=lambda cid: (keys[cid], cid))
    return {cid: (i + 1) / len(ordered) for i, cid in enumerate(ordered)}


def _quintile(pct: float) -> int:
    return min(max(math.ceil(pct * 5), 1), 5)


def _next_sale_days(day: dt.date) -> int:
    sales = [dt.date(y, m, d) for y in (day.year, day.year + 1) for m, d in ((6, 18), (11, 11))]
    return min((s - day).days for s in sales if s >= day)


def reference_snapshot(tables: dict[str, list[dict]], day: dt.date, rules: dict[str, int]) -> dict[str, dict]:
    """Every snapshot feature of every customer first seen before the cutoff, keyed by customer_id."""
    c = cutoff_instant(day)
    people = [p for p in tables["customers"] if p["first_seen_ts"] < c]
    out: dict[str, dict] = {}
    for p in people:
        cid = p["customer_id"]
        paid = [
            o for o in tables["orders"] if o["customer_id"] == cid and o["status"] == "paid" and o["ts"] < c
        ]
        events = [e for e in tables["events"] if e["customer_id"] == cid and e["ts"] < c]
        treated = [
            t
            for t in tables["touches"]
            if t["customer_id"] == cid and t["arm"] == "treatment" and t["ts"] < c
        ]
        row = {
            "acquisition_channel": p["acquisition_channel"],
            "member_level": p["member_level"],
            "city_tier": p["city_tier"],
            "wecom_added": int(p["wecom_added_ts"] is not None and p["wecom_added_ts"] < c),
            "tenure_days": _days(c - p["first_seen_ts"]),
            "cutoff_month": day.month,
            "days_to_next_sale": _next_sale_days(day),
        }
        row.update(_rfm(paid, c, day, row["tenure_days"]))
        row.update(_channels(paid))
        row.update(_behaviour(events, treated, paid, c))
        row["lifecycle_stage"] = _stage(row["n_orders"], row["recency_days"], rules)
        out[cid] = row
    _population_ranks(out)
    return out


def _rfm(paid: list[dict], c: dt.datetime, day: dt.date, tenure: float) -> dict:
    n = len(paid)
    ages = [_days(c - o["ts"]) for o in paid]
    nets = [o["net_amount"] for o in paid]
    row = {
        "n_orders": float(n),
        "total_net": _money(nets),
        "aov": _money(nets) / n if n else math.nan,
        "recency_days": min(ages) if n else math.nan,
        "first_purchase_days": max(ages) if n else math.nan,
        "purchases_per_year": n / max(tenure, 1.0) * 365.0,
    }
    for w in (30, 90, 365):
        row[f"orders_{w}d"] = float(sum(1 for o in paid if c - o["ts"] < w * DAY))
    for w in (90, 365):
        row[f"spend_{w}d"] = _money([o["net_amount"] for o in paid if c - o["ts"] < w * DAY])
    by_day: dict[dt.date, list[float]] = {}
    for o in paid:
        by_day.setdefault(o["ts"].astimezone(TZ).date(), []).append(o["net_amount"])
    days = sorted(by_day)
    x = max(len(days) - 1, 0)
    row["btyd_x"] = float(x)
    row["btyd_t_x_days"] = float((days[-1] - days[0]).days) if days else 0.0
    row["btyd_T_days"] = float((day - days[0]).days) if days else 0.0
    repeat = [v for d in days[1:] for v in by_day[d]]
    row["btyd_monetary"] = _money(repeat) / x if x else 0.0
    row["btyd_t_x_weeks"] = row["btyd_t_x_days"] / 7
    row["btyd_T_weeks"] = row["btyd_T_days"] / 7
    row["gap_mean_days"] = row["btyd_t_x_days"] / x if x else math.nan
    return row


def _channels(paid: list[dict]) -> dict:
    counts = Counter(o["channel"] for o in paid)
    n = len(paid)
    row = {f"share_{ch}": counts[ch] / n if n else 0.0 for ch in CHANNELS}
    row["n_channels"] = float(len(counts))
    row["online_share"] = 1.0 - row["share_offline_store"]
    if n:
        best = max(counts.values())
        row["preferred_channel"] = min(ch for ch, k in counts.items() if k == best)
    else:
        row["preferred_channel"] = "none"
    row["omni"] = int(len(counts) >= 2 and counts["offline_store"] > 0 and n - counts["offline_store"] > 0)
    return row


def _behaviour(events: list[dict], treated: list[dict], paid: list[dict], c: dt.datetime) -> dict:
    row = {}
    for et in TRACKED_EVENTS:
        for w in (7, 30, 90):
            row[f"ev_{et}_{w}d"] = float(
                sum(1 for e in events if e["event_type"] == et and c - e["ts"] < w * DAY)
            )
    last30 = sum(1 for e in events if c - e["ts"] < 30 * DAY)
    prev30 = sum(1 for e in events if 30 * DAY <= c - e["ts"] < 60 * DAY)
    row["ev_trend_30d"] = float(last30 - prev30)
    row["days_since_last_event"] = min(_days(c - e["ts"]) for e in events) if events else math.nan
    claims = sum(1 for e in events if e["event_type"] == "coupon_claim")
    redeems = sum(1 for e in events if e["event_type"] == "coupon_redeem")
    row["coupon_redeem_rate"] = redeems / claims if claims else math.nan
    row["touches_90d"] = float(sum(1 for t in treated if c - t["ts"] < 90 * DAY))
    row["days_since_last_touch"] = min(_days(c - t["ts"]) for t in treated) if treated else math.nan
    closed = [t for t in treated if c - 365 * DAY <= t["ts"] < c - 7 * DAY]
    answered = [t for t in closed if any(t["ts"] <= o["ts"] < t["ts"] + 7 * DAY for o in paid)]
    row["touch_response_rate_7d"] = len(answered) / len(closed) if closed else math.nan
    return row


def _stage(n: float, recency: float, rules: dict[str, int]) -> str:
    if n == 0:
        return "new"
    if recency > rules["dormant_days"]:
        return "lapsed"
    if recency > rules["active_days"]:
        return "dormant"
    if n >= rules["mature_min_orders"]:
        return "mature"
    if n >= rules["growing_min_orders"]:
        return "growing"
    return "new"


def _population_ranks(rows: dict[str, dict]) -> None:
    buyers = [cid for cid, r in rows.items() if r["n_orders"] > 0]
    scores = {
        "rfm_r_score": _rank_pct({cid: (-rows[cid]["recency_days"],) for cid in buyers}),
        "rfm_f_score": _rank_pct({cid: (rows[cid]["n_orders"],) for cid in buyers}),
        "rfm_m_score": _rank_pct({cid: (rows[cid]["total_net"],) for cid in buyers}),
    }
    spend = _rank_pct({cid: (-r["spend_365d"],) for cid, r in rows.items()})
    for cid, r in rows.items():
        for name, pct in scores.items():
            r[name] = _quintile(pct[cid]) if cid in pct else 0
        r["top20_value"] = int(spend[cid] <= 0.2 and r["spend_365d"] > 0)
        if r["spend_365d"] <= 0:
            r["value_tier"] = "none"
        elif spend[cid] <= 0.2:
            r["value_tier"] = "high"
        elif spend[cid] <= 0.5:
            r["value_tier"] = "mid"
        else:
            r["value_tier"] = "low"


def reference_labels(tables: dict[str, list[dict]], day: dt.date, churn_days: int) -> dict[str, dict]:
    """The three labels of every customer first seen before the cutoff."""
    c = cutoff_instant(day)
    out = {}
    for p in tables["customers"]:
        if not p["first_seen_ts"] < c:
            continue
        cid = p["customer_id"]
        paid = [o for o in tables["orders"] if o["customer_id"] == cid and o["status"] == "paid"]
        past = [o["ts"] for o in paid if o["ts"] < c]

        def bought(days: int, paid: list[dict] = paid) -> list[dict]:
            return [o for o in paid if c <= o["ts"] < c + days * DAY]

        active = bool(past) and max(past) >= c - 365 * DAY
        out[cid] = {
            "label_churn": float(not bought(churn_days)) if active else math.nan,
            "label_repurchase_7d": float(bool(bought(7))) if past else math.nan,
            "label_future_net_spend_365d": _money([o["net_amount"] for o in bought(365)]),
        }
    return out

"""Every figure of `siyu report` against an independent computation on the synthetic world.

The report is built once (module fixture) from a world on disk, batch scores made from the
generator's exact truth and experiment readouts; each test recomputes one section from the raw
tables with plain loops / groupbys (tests/serving/report_oracle.py) and compares with figures.json.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.assignment import DEFAULT_WEIGHTS
from experiments.readout import ReadoutConfig, campaign_outcomes, readout_campaign
from experiments.simulate import campaign_windows
from serving.report.run import build_report
from tests.serving.report_oracle import (
    DAY,
    lifecycle_stages,
    local_date,
    midnight,
    paid_before,
    plain_psi,
    repurchase,
    trimmed_mean,
    write_world_with_scores,
)

CUTOFF = dt.date(2024, 12, 1)
REFERENCE = dt.date(2024, 9, 1)
PREVIOUS = dt.date(2024, 11, 1)
SCORE_CUTOFFS = [dt.date(2023, 11, 1), REFERENCE, dt.date(2024, 11, 24), CUTOFF]
CHANNELS = ["tmall", "jd", "douyin", "miniprogram", "offline_store", "app", "wecom"]
STAGES = ["new", "growing", "mature", "dormant", "lapsed"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("report_world")
    data = write_world_with_scores(root / "data", customers=2000, seed=11, score_cutoffs=SCORE_CUTOFFS)
    tables = {n: pd.read_parquet(data / f"{n}.parquet") for n in ("customers", "orders", "events", "touches")}
    readouts = _readouts(data, tables, root / "readouts")
    out = build_report(
        data,
        CUTOFF,
        root / "report",
        scores=data / "scores.parquet",
        readouts=readouts,
        reference_cutoff=REFERENCE,
        log_mlflow=False,
    )
    figs = json.loads(out.figures_path.read_text(encoding="utf-8"))
    return {"data": data, "tables": tables, "figs": figs, "outcome": out, "readout_dir": readouts}


def _readouts(data: Path, tables: dict, out: Path) -> Path:
    """Readouts as `siyu experiment readout` writes them, for campaigns whose touches precede the cutoff."""
    touches, orders = tables["touches"], tables["orders"]
    last = touches.groupby("campaign_id")["ts"].max()
    windows = campaign_windows(data)
    frames, rois = [], {}
    for cid in sorted(last.index[last < midnight(CUTOFF) - 15 * DAY]):
        cfg = ReadoutConfig(window_days=windows.get(cid, 7.0))
        r = readout_campaign(campaign_outcomes(touches, orders, cfg, [cid]), DEFAULT_WEIGHTS, cfg, cid)
        frames.append(r.summary_frame())
        rois.update({(cid, x.arm): x for x in r.roi})
    out.mkdir(parents=True)
    pd.concat(frames).to_csv(out / "readout_summary.csv", index=False)
    pd.DataFrame(
        [
            {"campaign": c, "arm": a, "roi": x.roi, "cost": x.cost, "inc": x.incremental_revenue}
            for (c, a), x in rois.items()
        ]
    ).to_csv(out / "expected_roi.csv", index=False)
    return out


# ----------------------------------------------------------------------------- lifecycle


def test_lifecycle_distribution(built: dict) -> None:
    t, figs = built["tables"], built["figs"]
    stages = lifecycle_stages(t["customers"], t["orders"], CUTOFF)
    want = {s: sum(1 for v in stages.values() if v == s) for s in STAGES}
    assert figs["lifecycle"]["counts"] == want
    assert figs["lifecycle"]["total"] == len(stages)
    for s in STAGES:
        assert figs["lifecycle"]["shares"][s] == pytest.approx(want[s] / len(stages))
    assert figs["lifecycle"]["names_zh"] == {
        "new": "引入",
        "growing": "成长",
        "mature": "成熟",
        "dormant": "休眠",
        "lapsed": "流失",
    }


def test_lifecycle_transitions(built: dict) -> None:
    t, figs = built["tables"], built["figs"]
    before = lifecycle_stages(t["customers"], t["orders"], PREVIOUS)
    now = lifecycle_stages(t["customers"], t["orders"], CUTOFF)
    want: dict[str, dict[str, int]] = {r: dict.fromkeys(STAGES, 0) for r in ["not_acquired", *STAGES]}
    for cid, s in now.items():
        want[before.get(cid, "not_acquired")][s] += 1
    tr = figs["transitions"]
    assert (tr["from_cutoff"], tr["to_cutoff"]) == (PREVIOUS.isoformat(), CUTOFF.isoformat())
    assert tr["counts"] == want
    for r, row in want.items():
        n = sum(row.values())
        for s in STAGES:
            assert tr["row_shares"][r][s] == (pytest.approx(row[s] / n) if n else None)


# ----------------------------------------------------------------------------- KPIs


def _kpis_plain(t: dict, day: dt.date) -> dict:
    c = midnight(day)
    customers = int((t["customers"]["first_seen_ts"] < c).sum())
    paid = paid_before(t["orders"], c)
    active = len({cid for cid, ts in zip(paid["customer_id"], paid["ts"], strict=True) if ts >= c - 90 * DAY})
    period = [v for v, ts in zip(paid["net_amount"], paid["ts"], strict=True) if ts >= c - 90 * DAY]
    year: dict[str, int] = {}
    for cid, ts in zip(paid["customer_id"], paid["ts"], strict=True):
        if ts >= c - 365 * DAY:
            year[cid] = year.get(cid, 0) + 1
    rep = {d: repurchase(t["orders"], day, d, 90) for d in (7, 30, 90)}
    return {
        "customers": customers,
        "active_customers": active,
        "active_rate": active / customers,
        "period_orders": len(period),
        "net_revenue_period": sum(period),
        "aov": sum(period) / len(period),
        "frequency_buyers": len(year),
        "frequency_orders": sum(year.values()),
        "purchases_per_year": sum(year.values()) / len(year),
        "repurchase": rep,
    }


def _check_kpis(got: dict, want: dict) -> None:
    for k in ("customers", "active_customers", "period_orders", "frequency_buyers", "frequency_orders"):
        assert got[k] == want[k], k
    for k in ("active_rate", "net_revenue_period", "aov", "purchases_per_year"):
        assert got[k] == pytest.approx(want[k], rel=1e-9), k
    for r in got["repurchase"]:
        n, k = want["repurchase"][r["days"]]
        assert (r["cohort_size"], r["repeaters"]) == (n, k)
        assert r["rate"] == pytest.approx(k / n)


def test_headline_kpis(built: dict) -> None:
    _check_kpis(built["figs"]["kpis"], _kpis_plain(built["tables"], CUTOFF))


def test_kpi_trend_is_monthly_and_correct(built: dict) -> None:
    trend = built["figs"]["kpi_trend"]
    days = [dt.date.fromisoformat(k["cutoff"]) for k in trend]
    assert days == [(pd.Timestamp(CUTOFF) - pd.DateOffset(months=m)).date() for m in range(6, -1, -1)]
    for k in (trend[0], trend[-2]):
        _check_kpis(k, _kpis_plain(built["tables"], dt.date.fromisoformat(k["cutoff"])))


def test_cohort_ltv(built: dict) -> None:
    t = built["tables"]
    c = midnight(CUTOFF)
    cust = t["customers"][t["customers"]["first_seen_ts"] < c]
    paid = paid_before(t["orders"], c)
    spend: dict[str, float] = {}
    early: dict[str, float] = {}
    first_seen = dict(zip(cust["customer_id"], cust["first_seen_ts"], strict=True))
    for cid, ts, v in zip(paid["customer_id"], paid["ts"], paid["net_amount"], strict=True):
        spend[cid] = spend.get(cid, 0.0) + v
        if cid in first_seen and ts < first_seen[cid] + 180 * DAY:
            early[cid] = early.get(cid, 0.0) + v
    cells: dict[tuple[str, str], list[str]] = {}
    for cid, ts, ch in zip(
        cust["customer_id"], cust["first_seen_ts"], cust["acquisition_channel"], strict=True
    ):
        d = local_date(ts)
        cells.setdefault((f"{d.year}Q{(d.month - 1) // 3 + 1}", ch), []).append(cid)
    got = {(r["cohort"], r["channel"]): r for r in built["figs"]["cohort_ltv"]}
    assert set(got) == set(cells)
    for key, ids in cells.items():
        r = got[key]
        assert r["customers"] == len(ids)
        assert r["ltv_to_date"] == pytest.approx(sum(spend.get(i, 0.0) for i in ids) / len(ids), rel=1e-9)
        mature = all(first_seen[i] + 180 * DAY <= c for i in ids)
        if mature:
            assert r["ltv_at_age"] == pytest.approx(sum(early.get(i, 0.0) for i in ids) / len(ids), rel=1e-9)
        else:
            assert r["ltv_at_age"] is None
    assert any(r["ltv_at_age"] is not None for r in got.values())


def test_channel_contribution_and_overlap(built: dict) -> None:
    t = built["tables"]
    c = midnight(CUTOFF)
    paid = paid_before(t["orders"], c)
    period = paid[paid["ts"] >= c - 90 * DAY]
    total = period["net_amount"].sum()
    rows = {r["channel"]: r for r in built["figs"]["channel_shares"]}
    assert list(rows) == CHANNELS
    sets: dict[str, set[str]] = {ch: set() for ch in CHANNELS}
    for ch in CHANNELS:
        sub = period[period["channel"] == ch]
        sets[ch] = set(sub["customer_id"])
        assert rows[ch]["orders"] == len(sub)
        assert rows[ch]["buyers"] == len(sets[ch])
        assert rows[ch]["revenue"] == pytest.approx(sub["net_amount"].sum())
        assert rows[ch]["revenue_share"] == pytest.approx(sub["net_amount"].sum() / total)
        assert rows[ch]["order_share"] == pytest.approx(len(sub) / len(period))
    ov = built["figs"]["channel_overlap"]
    for a in CHANNELS:
        for b in CHANNELS:
            assert ov["buyers"][a][b] == len(sets[a] & sets[b])
    per_customer = period.groupby("customer_id")["channel"].nunique()
    assert ov["n_channels"] == {
        "1": int((per_customer == 1).sum()),
        "2": int((per_customer == 2).sum()),
        "3+": int((per_customer >= 3).sum()),
    }


# ----------------------------------------------------------------------------- monitoring


def test_feature_psi_matches_plain_psi(built: dict) -> None:
    from features.snapshot import compute_snapshot

    t = built["tables"]
    ref, cur = compute_snapshot(t, REFERENCE), compute_snapshot(t, CUTOFF)
    got = {r["name"]: r for r in built["figs"]["feature_drift"]}
    assert set(got) == {c for c in cur.columns if c not in ("customer_id", "cutoff")}
    for name in (
        "tenure_days",
        "recency_days",
        "aov",
        "ev_live_view_30d",
        "lifecycle_stage",
        "value_tier",
        "coupon_redeem_rate",
        "cutoff_month",
    ):
        want = plain_psi(ref[name].tolist(), cur[name].tolist())
        assert got[name]["psi"] == pytest.approx(want, rel=1e-9), name
        assert (got[name]["n_reference"], got[name]["n_current"]) == (len(ref), len(cur))


def test_score_psi_and_scores_by_stage(built: dict) -> None:
    scores = pd.read_parquet(built["data"] / "scores.parquet")
    day = scores["cutoff"].map(local_date)
    ref, cur = scores[day == REFERENCE], scores[day == CUTOFF]
    got = {r["name"]: r for r in built["figs"]["score_drift"]}
    assert set(got) == {"p_churn", "p_repurchase_7d", "clv_12m"}
    for name, r in got.items():
        assert r["reference_cutoff"] == REFERENCE.isoformat()
        assert r["psi"] == pytest.approx(plain_psi(ref[name].tolist(), cur[name].tolist()), rel=1e-9)
    t = built["tables"]
    stage = lifecycle_stages(t["customers"], t["orders"], CUTOFF)
    by = {s["stage"]: s for s in built["figs"]["stage_scores"]}
    cur_stage = cur.assign(stage=cur["customer_id"].map(stage))
    for s, g in cur_stage.groupby("stage"):
        assert by[s]["customers"] == len(g)
        for col in ("p_churn", "p_repurchase_7d", "clv_12m"):
            assert by[s]["means"][col] == pytest.approx(g[col].mean(), rel=1e-9)


def _realised(t: dict, s: dt.date, ids: list[str], label: str) -> dict[str, float]:
    c = midnight(s)
    paid = t["orders"][t["orders"]["status"] == "paid"]
    history: dict[str, list[tuple[pd.Timestamp, float]]] = {}
    for cid, ts, v in zip(paid["customer_id"], paid["ts"], paid["net_amount"], strict=True):
        history.setdefault(cid, []).append((ts, v))
    out = {}
    for cid in ids:
        h = history.get(cid, [])
        past = [ts for ts, _ in h if ts < c]
        if label == "label_churn":
            if any(ts >= c - 365 * DAY for ts in past):
                out[cid] = float(not any(c <= ts < c + 90 * DAY for ts, _ in h))
        elif label == "label_repurchase_7d":
            if past:
                out[cid] = float(any(c <= ts < c + 7 * DAY for ts, _ in h))
        else:
            out[cid] = float(sum(v for ts, v in h if c <= ts < c + 365 * DAY))
    return out


def test_calibration_of_latest_matured_cohort(built: dict) -> None:
    t = built["tables"]
    scores = pd.read_parquet(built["data"] / "scores.parquet")
    day = scores["cutoff"].map(local_date)
    cal = {c["score"]: c for c in built["figs"]["calibration"]}
    expected_cutoff = {
        "p_churn": REFERENCE,
        "p_repurchase_7d": dt.date(2024, 11, 24),
        "clv_12m": dt.date(2023, 11, 1),
    }
    assert set(cal) == set(expected_cutoff)
    for score, s in expected_cutoff.items():
        c = cal[score]
        assert c["scored_cutoff"] == s.isoformat()
        rows = scores[day == s]
        y = _realised(t, s, rows["customer_id"].tolist(), c["label"])
        pred = dict(zip(rows["customer_id"], rows[score], strict=True))
        ids = list(y)
        assert c["n"] == len(ids)
        assert c["mean_predicted"] == pytest.approx(np.mean([pred[i] for i in ids]), rel=1e-9)
        assert c["mean_realised"] == pytest.approx(np.mean([y[i] for i in ids]), rel=1e-9)
        if c["kind"] == "probability":
            assert c["brier"] == pytest.approx(np.mean([(pred[i] - y[i]) ** 2 for i in ids]), rel=1e-9)
            ece = 0.0
            for b in range(10):
                members = [i for i in ids if min(int(pred[i] * 10), 9) == b]
                if members:
                    ece += (
                        len(members)
                        / len(ids)
                        * abs(np.mean([pred[i] for i in members]) - np.mean([y[i] for i in members]))
                    )
            assert c["ece"] == pytest.approx(ece, rel=1e-9)
            # Scores are the generator's exact probabilities: they must be well calibrated.
            assert c["ece"] < 0.05
        else:
            ranked = sorted(ids, key=lambda i: (pred[i], i))
            for b, got in enumerate(c["bins"]):
                members = [i for pos, i in enumerate(ranked) if pos * 10 // len(ids) == b]
                assert got["n"] == len(members)
                assert got["mean_realised"] == pytest.approx(np.mean([y[i] for i in members]), rel=1e-9)


# ----------------------------------------------------------------------------- data checks


def test_row_counts_per_channel_per_day(built: dict) -> None:
    t = built["tables"]
    c = midnight(CUTOFF)
    first = CUTOFF - dt.timedelta(days=35)
    orders = t["orders"][(t["orders"]["ts"] < c) & (t["orders"]["ts"] >= midnight(first))]
    got = {(r["table"], r["group"]): r for r in built["figs"]["row_counts"]}
    assert set(got) == {("orders", ch) for ch in CHANNELS} | {("events", "all")}
    for ch in CHANNELS:
        days = [first + dt.timedelta(days=i) for i in range(35)]
        per_day = dict.fromkeys(days, 0)
        for ts in orders.loc[orders["channel"] == ch, "ts"]:
            per_day[local_date(ts)] += 1
        counts = [per_day[d] for d in days]
        r = got[("orders", ch)]
        assert r["days"] == [d.isoformat() for d in days]
        assert r["counts"] == counts
        base = counts[:28]
        mean = trimmed_mean([float(x) for x in base], 0.2)
        assert r["baseline_mean"] == pytest.approx(mean)
        disp = max(np.var(base, ddof=1) / np.mean(base), 1.0)
        assert r["dispersion"] == pytest.approx(disp)
        assert r["observed"] == sum(counts[28:])
        mu = 7 * mean
        p = (
            stats.poisson.cdf(r["observed"], mu)
            if disp == 1.0
            else sum(stats.nbinom.pmf(k, mu / (disp - 1), 1 / disp) for k in range(r["observed"] + 1))
        )
        assert r["p_value"] == pytest.approx(p, rel=1e-6)


def test_raw_and_snapshot_null_rates(built: dict) -> None:
    t = built["tables"]
    c = midnight(CUTOFF)
    got = {(r["source"], r["column"]): r for r in built["figs"]["raw_null_rates"]}
    o = t["orders"]
    recent = o[(o["ts"] >= c - 7 * DAY) & (o["ts"] < c)]
    base = o[(o["ts"] >= c - 35 * DAY) & (o["ts"] < c - 7 * DAY)]
    for col in ("coupon_id", "store_id", "channel"):
        daily: dict[dt.date, list[bool]] = {}
        for ts, v in zip(base["ts"], base[col], strict=True):
            daily.setdefault(local_date(ts), []).append(v is None or v != v)
        rates = [sum(v) / len(v) for v in daily.values()]
        r = got[("orders", col)]
        assert r["baseline_rate"] == pytest.approx(trimmed_mean(rates, 0.2))
        assert r["recent_rate"] == pytest.approx(recent[col].isna().mean())
        assert (r["baseline_rows"], r["recent_rows"]) == (len(base), len(recent))
    assert got[("orders", "store_id")]["recent_rate"] > 0.5  # online orders have no store
    from features.snapshot import compute_snapshot

    ref, cur = compute_snapshot(t, REFERENCE), compute_snapshot(t, CUTOFF)
    snap = {r["column"]: r for r in built["figs"]["snapshot_null_rates"]}
    for col in ("recency_days", "gap_mean_days", "coupon_redeem_rate", "n_orders"):
        assert snap[col]["baseline_rate"] == pytest.approx(ref[col].isna().mean())
        assert snap[col]["recent_rate"] == pytest.approx(cur[col].isna().mean())


# ----------------------------------------------------------------------------- campaigns


def test_campaign_roi_equals_the_readouts(built: dict) -> None:
    want = pd.read_csv(built["readout_dir"] / "expected_roi.csv")
    got = {(r["campaign"], r["arm"]): r for r in built["figs"]["campaign_roi"]}
    assert len(want) > 0 and set(got) == set(zip(want["campaign"], want["arm"], strict=True))
    assert built["figs"]["margin_rate"] == ReadoutConfig().margin_rate
    for _, w in want.iterrows():
        r = got[(w["campaign"], w["arm"])]
        assert r["cost"] == pytest.approx(w["cost"])
        assert r["incremental_revenue"] == pytest.approx(w["inc"], rel=1e-9)
        assert r["roi"] == pytest.approx(w["roi"], rel=1e-9)
        assert r["incremental_margin"] == pytest.approx(0.35 * w["inc"], rel=1e-9)
    summary = pd.read_csv(built["readout_dir"] / "readout_summary.csv")
    conv = summary[summary["metric"] == "conversion (CUPED)"].set_index(["campaign", "arm"])["abs_lift"]
    for key, r in got.items():
        assert r["conversion_lift"] == pytest.approx(conv[key])


def test_every_section_is_present_and_nothing_is_skipped(built: dict) -> None:
    figs = built["figs"]
    assert figs["notes"] == []
    assert figs["feature_drift"] and figs["score_drift"] and figs["calibration"] and figs["campaign_roi"]
    assert not any(
        isinstance(v, float) and math.isnan(v) for v in figs["kpis"].values() if isinstance(v, float)
    )

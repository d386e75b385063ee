"""The synthetic world: determinism, contract, oracles, campaign effects, calendar, events, identities."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.quality import validate_data_dir
from features.schema import BUSINESS_TZ, EVENT_TYPES
from features.synthetic import (
    CHANNEL_COSTS,
    SynthConfig,
    World,
    business_midnight,
    generate_world,
    load_truth,
    oracle_p_alive,
    oracle_p_purchase,
    oracle_uplift,
    season_multiplier,
    write_world,
)
from siyu.cli import app

N = 20_000


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(SynthConfig(customers=N, seed=11))


@pytest.fixture(scope="module")
def quiet_world() -> World:
    """No campaigns: the paid orders are a pure (seasonal) BG/NBD process."""
    return generate_world(SynthConfig(customers=N, seed=12, campaigns=False, events=False))


def _paid(w: World) -> pd.DataFrame:
    o = w.tables["orders"]
    return o[o["status"] == "paid"]


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    cfg = SynthConfig(customers=1_500, seed=5)
    for name in ("a", "b"):
        write_world(generate_world(cfg), tmp_path / name)
    write_world(generate_world(cfg.model_copy(update={"seed": 6})), tmp_path / "c")
    a, b, c = (_digests(tmp_path / n) for n in ("a", "b", "c"))
    assert len(a) == 5 + 6  # five tables, five truth tables and config.json
    assert a == b
    assert a["orders.parquet"] != c["orders.parquet"]


def test_written_world_passes_the_contract_and_reloads(tmp_path: Path, world: World) -> None:
    write_world(world, tmp_path)
    reports, missing = validate_data_dir(tmp_path)
    assert not missing
    assert all(r.ok for r in reports), "\n".join(r.summary() for r in reports)
    truth = load_truth(tmp_path)
    assert truth.config == world.truth.config
    pd.testing.assert_frame_equal(truth.persons, world.truth.persons)


def test_tables_look_like_a_shop(world: World) -> None:
    o = world.tables["orders"]
    start, end = business_midnight(date(2023, 1, 1)), business_midnight(date(2025, 1, 1))
    for name in ("orders", "events", "touches"):
        ts = world.tables[name]["ts"]
        assert ts.min() >= start and ts.max() < end, name
    share = o["status"].value_counts(normalize=True)
    assert 0.85 < share["paid"] < 0.97 and share["refunded"] > 0.02 and share["cancelled"] > 0.01
    assert (o.loc[o["status"] != "paid", "net_amount"].abs() < 1e-6).all()
    paid = _paid(world)
    assert 0.01 < (paid["refund_amount"] > 0).mean() < 0.1  # partial refunds stay "paid"
    assert ((paid["channel"] == "offline_store") == paid["store_id"].notna()).all()
    assert set(paid["channel"]) == {"tmall", "jd", "douyin", "miniprogram", "offline_store", "app", "wecom"}
    assert paid["coupon_id"].notna().mean() > 0.05
    # first_seen_ts is the first paid order
    first = paid.groupby("customer_id")["ts"].min()
    cust = world.tables["customers"].set_index("customer_id")
    pd.testing.assert_series_equal(first, cust["first_seen_ts"].loc[first.index], check_names=False)
    assert set(world.tables["events"]["event_type"]) <= set(EVENT_TYPES)
    assert len(set(world.tables["events"]["event_type"])) >= 10


def test_mean_spend_is_the_true_mean_net_spend(world: World) -> None:
    paid = _paid(world)
    truth = world.truth.persons.set_index("customer_id")["mean_spend"]
    expected = truth.loc[paid["customer_id"]].to_numpy()
    net = paid["net_amount"].to_numpy()
    se = np.std(net - expected) / np.sqrt(net.size)
    assert abs(net.mean() - expected.mean()) < 4 * se


def test_oracle_p_purchase_is_calibrated(quiet_world: World) -> None:
    paid = _paid(quiet_world)
    preds, outcomes = [], []
    for cutoff in ("2023-06-10", "2023-11-01", "2024-02-01", "2024-06-12", "2024-11-04", "2024-12-10"):
        p = oracle_p_purchase(quiet_world.truth, cutoff, 7)
        c = business_midnight(cutoff)
        window = paid[(paid["ts"] >= c) & (paid["ts"] < c + pd.Timedelta(days=7))]
        preds.append(p.to_numpy())
        outcomes.append(p.index.isin(window["customer_id"]).astype(float))
    pred, y = np.concatenate(preds), np.concatenate(outcomes)
    bins = np.digitize(pred, [0.001, 0.02, 0.05, 0.1, 0.2, 0.4])
    for b in np.unique(bins):
        m = bins == b
        mp, my = pred[m].mean(), y[m].mean()
        se = np.sqrt(max(mp * (1 - mp), 1e-4) / m.sum())
        assert abs(mp - my) < 4 * se + 0.002, (b, m.sum(), mp, my)
    assert pred[bins == 0].max() < 0.001 and y[bins == 0].mean() < 0.001  # dead people do not buy


def test_oracle_p_alive_matches_generated_purchases(quiet_world: World) -> None:
    cutoff = "2024-03-01"
    alive = oracle_p_alive(quiet_world.truth, cutoff)
    assert set(alive.unique()) == {0.0, 1.0}
    paid = _paid(quiet_world)
    later = paid.loc[paid["ts"] >= business_midnight(cutoff), "customer_id"].unique()
    assert alive.loc[alive.index.isin(later)].eq(1.0).all()  # nobody buys after dropping out
    assert 0.3 < alive.mean() < 0.95
    with pytest.raises(ValueError, match="after the observed period"):
        oracle_p_alive(quiet_world.truth, "2026-01-01")


def _realised_conversion(w: World) -> pd.DataFrame:
    """Conversion per campaign row recomputed from the generated orders (not from the truth)."""
    eff = w.truth.campaign_effects.merge(w.truth.campaigns[["campaign_id", "window_days"]], on="campaign_id")
    paid = _paid(w)[["customer_id", "ts"]]
    j = eff[["campaign_id", "customer_id", "touch_ts", "window_days"]].merge(paid, on="customer_id")
    hit = (j["ts"] >= j["touch_ts"]) & (j["ts"] < j["touch_ts"] + pd.to_timedelta(j["window_days"], "D"))
    bought = j[hit].groupby(["campaign_id", "customer_id"]).size()
    key = pd.MultiIndex.from_frame(eff[["campaign_id", "customer_id"]])
    return eff.assign(bought=key.isin(bought.index))


def test_treatment_lifts_persuadables_and_not_lost_causes(world: World) -> None:
    eff = _realised_conversion(world)
    assert (eff["bought"] == eff["converted"]).all()

    def rates(seg: str) -> tuple[float, float, float]:
        s = eff[eff["segment"] == seg]
        t, c = s[s["arm"] == "treatment"]["bought"], s[s["arm"] == "control"]["bought"]
        se = np.sqrt(t.var() / len(t) + c.var() / len(c))
        return t.mean(), c.mean(), se

    t, c, se = rates("persuadable")
    assert t - c > 4 * se and t - c > 0.03
    true = eff[(eff["segment"] == "persuadable") & (eff["arm"] == "treatment")]["true_uplift"].mean()
    assert abs((t - c) - true) < 4 * se
    dead = eff[~eff["alive"]]
    assert dead["bought"].sum() == 0 and (dead["true_uplift"] == 0).all()
    sure = eff[eff["segment"] == "sure_thing"]
    assert (sure["true_uplift"] == 0).all() and sure["base_p"].mean() > 0.2
    dogs = eff[(eff["segment"] == "sleeping_dog")]
    assert (dogs["true_uplift"] <= 0).all() and dogs["true_uplift"].mean() < 0


def test_touches_arms_costs_and_holdout(world: World) -> None:
    touches = world.tables["touches"]
    treated = touches["arm"] == "treatment"
    assert (touches.loc[~treated, "cost"] == 0).all()
    assert (touches.loc[treated, "cost"] == touches.loc[treated, "channel"].map(CHANNEL_COSTS)).all()
    persons = world.truth.persons.set_index("customer_id")
    holdout = persons.loc[touches["customer_id"], "holdout"].to_numpy()
    assert (touches["arm"].eq("holdout").to_numpy() == holdout).all()
    assert 0.03 < persons["holdout"].mean() < 0.07
    assert set(touches["channel"]) == {"ai_call", "sms", "wecom_1v1", "coupon", "template_msg"}


def test_oracle_uplift_segments(world: World) -> None:
    up = oracle_uplift(world.truth, "2024-09-01", "ai_call", 14)
    assert (up.loc[~up["alive"], "uplift_p"] == 0).all()
    assert up.loc[up["segment"] == "persuadable", "uplift_p"].min() > 0
    assert (up.loc[up["segment"] == "sleeping_dog", "uplift_p"] < 0).all()
    assert (up.loc[up["segment"].isin(["sure_thing", "lost_cause"]), "uplift_p"] == 0).all()
    spend = world.truth.persons.set_index("customer_id")["mean_spend"].loc[up.index]
    np.testing.assert_allclose(up["uplift_value"], up["uplift_p"] * spend)
    wecom = oracle_uplift(world.truth, "2024-09-01", "wecom_1v1", 7)
    added = world.truth.persons.set_index("customer_id")["wecom_added_ts"].loc[wecom.index]
    assert (wecom.loc[~(added < business_midnight("2024-09-01")).to_numpy(), "uplift_p"] <= 0).all()
    with pytest.raises(ValueError, match="unknown channel"):
        oracle_uplift(world.truth, "2024-09-01", "carrier_pigeon", 7)


def test_season_peaks_visible_in_orders(world: World) -> None:
    local = _paid(world)["ts"].dt.tz_convert(BUSINESS_TZ).dt.strftime("%m-%d")
    per_day = local.value_counts() / 2  # two years
    typical = per_day.median()
    assert per_day["11-11"] > 2.5 * typical
    assert per_day["06-18"] > 1.8 * typical
    sf = _paid(world)["ts"].dt.tz_convert(BUSINESS_TZ).dt.date.astype(str)
    festival = ["2023-01-22", "2023-01-23", "2023-01-24", "2024-02-10", "2024-02-11", "2024-02-12"]
    festival_days = sf.isin(festival)
    assert festival_days.sum() / 6 < 0.7 * typical
    year = season_multiplier(pd.date_range("2024-01-01", "2024-12-31").date)
    assert abs(year.mean() - 1.0) < 1e-9 and year.argmax() == pd.Timestamp("2024-11-11").dayofyear - 1


def test_events_track_latent_rate_and_fade_before_dropout(world: World) -> None:
    ev = world.tables["events"]
    own = ev[ev["event_type"].isin(["miniprogram_visit", "live_view", "coupon_claim", "wecom_msg_in"])]
    persons = world.truth.persons.set_index("customer_id")
    counts = own.groupby("customer_id").size().reindex(persons.index, fill_value=0)
    assert np.corrcoef(np.log(persons["lam"]), np.log1p(counts))[0, 1] > 0.3
    drop = persons["dropout_ts"]
    gone = drop[(drop - persons["acquisition_ts"]) > pd.Timedelta(days=150)].dropna()
    e = own[own["customer_id"].isin(gone.index)]
    before = (e["customer_id"].map(gone) - e["ts"]).dt.total_seconds() / 86400
    recent = ((before > 0) & (before <= 14)).sum() / 14
    earlier = ((before > 90) & (before <= 150)).sum() / 60
    assert recent < 0.6 * earlier


def _components(ids: pd.DataFrame) -> pd.Series:
    """Connected fragments via shared keys (simple union-find, independent of features.identity)."""
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for col in ("phone_hash", "unionid", "member_id"):
        for rows in ids.groupby(col).indices.values():
            for r in rows[1:]:
                parent[find(int(r))] = find(int(rows[0]))
    return pd.Series([find(i) for i in range(len(ids))], index=ids.index)


def test_identity_fragments_link_each_person_with_traps(world: World) -> None:
    ids = world.tables["identities"]
    truth = world.truth.identity_truth
    assert (ids["customer_id"].to_numpy() == truth["person_id"].to_numpy()).all()
    assert ids.groupby("customer_id").size().mean() > 2.0
    assert (ids[["phone_hash", "unionid", "member_id"]].isna().mean() > 0.05).all()  # links go missing
    trap = truth["shared_key"].notna().to_numpy()
    desk = ids[truth["shared_key"].eq("front_desk_phone").to_numpy()]
    assert desk.groupby("phone_hash")["customer_id"].nunique().max() > 1
    placeholder = ids[truth["shared_key"].eq("placeholder_unionid").to_numpy()]
    assert placeholder["unionid"].nunique() == 1 and placeholder["customer_id"].nunique() > 1
    clean = ids[~trap]
    comp = _components(clean)
    per_person = comp.groupby(clean["customer_id"]).nunique()
    assert (per_person == 1).mean() > 0.995
    assert not ids.astype(str).apply(lambda s: s.str.fullmatch(r"1\d{10}")).any().any()  # no raw phones


def test_cli_synth_writes_a_valid_world(tmp_path: Path) -> None:
    out = tmp_path / "w"
    args = ["data", "synth", "--customers", "400", "--seed", "3", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "customers 400" in result.output and "alive at end" in result.output
    assert CliRunner().invoke(app, ["data", "validate", str(out)]).exit_code == 0
    assert load_truth(out).config.customers == 400
    bad = CliRunner().invoke(app, [*args, "--start", "2024-01-01", "--end", "2023-01-01"])
    assert bad.exit_code != 0

"""OneID: reconstruction of the synthetic persons, over-merging guards, stable and deterministic ids."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from features.identity import (
    OneIDConfig,
    OneIDResult,
    load_oneid_config,
    pairwise_precision_recall,
    resolve,
    score_against_truth,
)
from features.pii import hash_identifier, pii_key
from features.synthetic import SynthConfig, World, generate_world
from siyu.cli import app

N = 5_000
NO_GUARDS = OneIDConfig(max_accounts_per_source=None, max_component_size=10**9, blocked_patterns=())


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(SynthConfig(customers=N, seed=21, campaigns=False, events=False))


@pytest.fixture(scope="module")
def resolved(world: World) -> OneIDResult:
    with pytest.MonkeyPatch.context() as mp:  # module scope: the per-test key fixture is not active yet
        mp.setenv("SIYU_PII_KEY", "test-only-pii-key")
        return resolve(world.tables["identities"])


def _frag(
    source: str, uid: str, phone: str | None = None, union: str | None = None, member: str | None = None
):
    key = pii_key()
    return {
        "source": source,
        "source_user_id": uid,
        "phone_hash": hash_identifier(phone, key) if phone else None,
        "unionid": hash_identifier(union, key) if union else None,
        "member_id": member,
        "customer_id": None,
    }


def _ids(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["source", "source_user_id", "phone_hash", "unionid", "member_id", "customer_id"]
    )


def _mapping(result: OneIDResult) -> pd.Series:
    return result.identities.set_index(["source", "source_user_id"])["customer_id"]


# --- reconstruction -----------------------------------------------------------------------------


def test_oneid_reconstructs_the_synthetic_persons(world: World, resolved: OneIDResult) -> None:
    scores = score_against_truth(resolved.identities, world.truth.identity_truth)
    assert scores["precision"] >= 0.99 and scores["recall"] >= 0.99, scores
    assert scores["true_persons"] == N
    assert abs(scores["resolved_persons"] - N) / N < 0.01
    # the input's customer_id column (the generator's truth) is not what OneID returns
    assert not resolved.identities["customer_id"].isin(world.tables["identities"]["customer_id"]).any()


def test_without_guards_the_traps_would_over_merge(world: World) -> None:
    naive = resolve(world.tables["identities"], NO_GUARDS)
    p, r = pairwise_precision_recall(
        naive.identities["customer_id"],
        naive.identities.merge(world.truth.identity_truth, on=["source", "source_user_id"])["person_id"],
    )
    assert p < 0.99 <= r  # the front-desk phones and placeholder unionids glue strangers together


def test_guards_report_what_they_blocked(resolved: OneIDResult, world: World) -> None:
    rep = resolved.report
    assert rep.keys_blocked["shared_within_source"] >= 2  # the placeholder unionid and front-desk phones
    assert {b.kind for b in rep.blocked} == {"phone_hash", "unionid"}
    assert (
        rep.fragments
        == len(world.tables["identities"])
        == sum(int(size) * n for size, n in rep.component_sizes.items())
    )
    assert rep.persons == resolved.identities["customer_id"].nunique()


def test_pairwise_scores_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    pred, truth = rng.integers(0, 8, 60), rng.integers(0, 10, 60)
    pairs = list(itertools.combinations(range(60), 2))
    together = [(pred[i] == pred[j], truth[i] == truth[j]) for i, j in pairs]
    tp = sum(a and b for a, b in together)
    precision = tp / sum(a for a, _ in together)
    recall = tp / sum(b for _, b in together)
    assert pairwise_precision_recall(pred, truth) == pytest.approx((precision, recall))


# --- over-merging guards ------------------------------------------------------------------------


def _front_desk_strangers() -> pd.DataFrame:
    """Two strangers whose store cards both carry the store's front-desk phone."""
    return _ids(
        [
            _frag("tmall", "nick-a", phone="13800000001", member="M001"),
            _frag("offline_store", "CARD-A", phone="front-desk-S001", member="M001"),
            _frag("tmall", "nick-b", phone="13800000002"),
            _frag("app", "APP-B", phone="13800000002", member="M002"),
            _frag("offline_store", "CARD-B", phone="front-desk-S001", member="M002"),
        ]
    )


def test_a_shared_front_desk_phone_does_not_merge_strangers() -> None:
    ids = _front_desk_strangers()
    m = _mapping(resolve(ids))
    a = {m["tmall", "nick-a"], m["offline_store", "CARD-A"]}
    b = {m["tmall", "nick-b"], m["app", "APP-B"], m["offline_store", "CARD-B"]}
    assert len(a) == 1 and len(b) == 1 and a != b
    # the same through the block-list alone (raw phone, hashed with the key like the stored ones)
    cfg = OneIDConfig(max_accounts_per_source=None, blocked_raw_values={"phone_hash": ["front-desk-S001"]})
    result = resolve(ids, cfg)
    assert result.identities["customer_id"].nunique() == 2
    assert result.report.keys_blocked["block_list"] == 1 and result.report.blocked[0].fragments == 2
    # and it is the guard that prevents the merge
    assert resolve(ids, NO_GUARDS).identities["customer_id"].nunique() == 1


def test_placeholder_values_are_blocked_by_pattern() -> None:
    ids = _ids(
        [
            _frag("tmall", "a", member="M00000000"),
            _frag("jd", "b", member="M00000000"),
            _frag("app", "c", member="00000000"),
            _frag("miniprogram", "d", member="NULL"),
        ]
    )
    result = resolve(ids)
    assert result.identities["customer_id"].nunique() == 4
    assert result.report.keys_blocked["block_list"] == 3


def test_an_oversized_component_is_split_at_its_hub_key_and_reported() -> None:
    rows = []
    for i in range(12):  # 12 persons × 2 accounts; every tmall account carries one broken unionid
        rows.append(_frag("tmall", f"t{i}", phone=f"1390000{i:04d}", union="broken-integration"))
        rows.append(_frag("jd", f"j{i}", phone=f"1390000{i:04d}"))
    ids = _ids(rows)
    cfg = OneIDConfig(max_accounts_per_source=None, max_component_size=10)
    result = resolve(ids, cfg)
    m = _mapping(result)
    assert result.identities["customer_id"].nunique() == 12
    assert all(m["tmall", f"t{i}"] == m["jd", f"j{i}"] for i in range(12))
    rep = result.report
    assert rep.components_split == 1 and rep.keys_blocked["component_too_large"] == 1
    (split,) = rep.splits
    assert split.size_before == 24 and split.sizes_after == [2] * 12
    assert [(k.kind, k.fragments) for k in split.keys_dropped] == [("unionid", 12)]
    assert max(int(s) for s in rep.component_sizes) <= 10
    assert "broken-integration" not in json.dumps(rep.model_dump())


def test_config_refuses_unknown_key_kinds(tmp_path: Path) -> None:
    (tmp_path / "oneid.yaml").write_text("blocked_values: {email: [x]}\nmax_component_size: 1\n")
    with pytest.raises(ValueError, match="email") as err:
        load_oneid_config(tmp_path / "oneid.yaml")
    assert "max_component_size" in str(err.value)


# --- stable, deterministic ids ------------------------------------------------------------------


def _unrelated(n: int) -> pd.DataFrame:
    return _ids(
        [
            _frag("douyin", f"new-{i}", phone=f"new-phone-{i}", union=None, member=f"NEW{i:05d}")
            for i in range(n)
        ]
        + [_frag("app", f"NEWAPP{i}", phone=f"new-phone-{i}") for i in range(n)]
    )


def test_ids_do_not_change_when_unrelated_records_arrive(world: World, resolved: OneIDResult) -> None:
    before = _mapping(resolved)
    grown = resolve(pd.concat([world.tables["identities"], _unrelated(200)], ignore_index=True))
    after = _mapping(grown)
    assert (after.reindex(before.index) == before).all()
    new = after.drop(before.index)
    assert new.nunique() == 200 and not new.isin(before).any()


def test_previous_ids_are_carried_forward_when_a_person_gains_an_account(
    world: World, resolved: OneIDResult
) -> None:
    ids = world.tables["identities"]
    before = _mapping(resolved)
    # every person with a phone-bound account opens a new Douyin account bound to the same phone
    bound = ids.dropna(subset=["phone_hash"])
    no_douyin = bound.groupby("phone_hash")["source"].agg(lambda s: "douyin" not in set(s))
    phones = pd.DataFrame({"phone_hash": no_douyin.index[no_douyin.to_numpy()][:300]})
    extra = pd.DataFrame(
        {
            "source": "douyin",
            "source_user_id": [f"fresh-{i}" for i in range(len(phones))],
            "phone_hash": phones["phone_hash"].to_numpy(),
            "unionid": None,
            "member_id": None,
            "customer_id": None,
        }
    )
    grown_ids = pd.concat([ids, extra], ignore_index=True)
    fresh = _mapping(resolve(grown_ids))
    carried = resolve(grown_ids, previous=resolved.identities)
    kept = _mapping(carried)
    assert (kept.reindex(before.index) == before).all()
    assert carried.report.ids_retired == 0 and carried.report.ids_new == 0
    # without the previous mapping the smallest-digest rule renames some of them (why `previous` exists)
    assert (fresh.reindex(before.index) != before).any()


def test_carry_forward_on_split_and_merge() -> None:
    a = _frag("tmall", "a", phone="p-a")
    b = _frag("jd", "b", phone="p-b", member="M-b")
    c = _frag("app", "c", phone="p-b", member="M-b")
    prev = _ids([a, b, c]).assign(customer_id=["U-old", "U-old", "U-old"])  # once one person
    split = resolve(_ids([a, b, c]), previous=prev)
    m = _mapping(split)
    assert m["jd", "b"] == m["app", "c"] == "U-old"  # the larger part keeps the id
    assert m["tmall", "a"] not in {"U-old"} and split.report.ids_new == 1
    prev2 = _ids([a, b, c]).assign(customer_id=["U-1", "U-2", "U-2"])
    merged = resolve(_ids([a | {"member_id": "M-b"}, b, c]), previous=prev2)
    assert set(merged.identities["customer_id"]) == {"U-2"}  # most fragments held U-2
    assert merged.report.ids_retired == 1


def test_resolution_is_deterministic_and_independent_of_row_order(
    world: World, resolved: OneIDResult
) -> None:
    shuffled = world.tables["identities"].sample(frac=1.0, random_state=5)
    again = resolve(shuffled)
    pd.testing.assert_frame_equal(again.identities, resolved.identities)
    assert again.report == resolved.report
    other_key = resolve(world.tables["identities"], key="another-key")
    assert not other_key.identities["customer_id"].isin(resolved.identities["customer_id"]).any()
    same_partition = pairwise_precision_recall(
        other_key.identities["customer_id"], resolved.identities["customer_id"]
    )
    assert same_partition == (1.0, 1.0)


# --- union-find properties (hypothesis) ---------------------------------------------------------

SOURCES = ["tmall", "jd", "douyin", "app"]
fragments = st.lists(
    st.tuples(
        st.sampled_from(SOURCES),
        st.one_of(st.none(), st.integers(0, 6)),
        st.one_of(st.none(), st.integers(0, 6)),
        st.one_of(st.none(), st.integers(0, 6)),
    ),
    min_size=1,
    max_size=30,
)


def _graph(spec: list[tuple], prefix: str = "") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": [s for s, *_ in spec],
            "source_user_id": [f"{prefix}u{i}" for i in range(len(spec))],
            "phone_hash": [None if p is None else f"{prefix}ph{p}" for _, p, _, _ in spec],
            "unionid": [None if u is None else f"{prefix}un{u}" for _, _, u, _ in spec],
            "member_id": [None if m is None else f"{prefix}M{m}" for *_, m in spec],
            "customer_id": None,
        }
    )


def _reference_components(df: pd.DataFrame) -> list[int]:
    """A plain union-find, independent of features.identity."""
    parent = list(range(len(df)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for col in ("phone_hash", "unionid", "member_id"):
        for rows in df.groupby(col).indices.values():
            for r in rows[1:]:
                parent[find(int(r))] = find(int(rows[0]))
    return [find(i) for i in range(len(df))]


hyp = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@hyp
@given(spec=fragments, seed=st.integers(0, 2**16))
def test_property_components_equal_union_find_whatever_the_order(spec: list[tuple], seed: int) -> None:
    df = _graph(spec)
    got = resolve(df, NO_GUARDS, key="k")
    ref = pd.Series(_reference_components(df), index=df["source_user_id"])
    ids = got.identities.set_index("source_user_id")["customer_id"].reindex(ref.index)
    assert pairwise_precision_recall(ids, ref) == (1.0, 1.0)
    assert ids.nunique() == ref.nunique()
    shuffled = resolve(df.sample(frac=1.0, random_state=seed), NO_GUARDS, key="k")
    pd.testing.assert_frame_equal(shuffled.identities, got.identities)


@hyp
@given(spec=fragments, more=fragments)
def test_property_unrelated_records_leave_ids_alone(spec: list[tuple], more: list[tuple]) -> None:
    base = _graph(spec)
    grown = pd.concat([base, _graph(more, prefix="x")], ignore_index=True)  # disjoint keys and ids
    before = _mapping(resolve(base, NO_GUARDS, key="k"))
    after = _mapping(resolve(grown, NO_GUARDS, key="k"))
    assert (after.reindex(before.index) == before).all()


@hyp
@given(spec=fragments, limit=st.integers(2, 6))
def test_property_no_component_exceeds_the_limit(spec: list[tuple], limit: int) -> None:
    cfg = OneIDConfig(max_accounts_per_source=None, max_component_size=limit, blocked_patterns=())
    result = resolve(_graph(spec), cfg, key="k")
    assert result.identities.groupby("customer_id").size().max() <= limit
    assert result.report.components_split == len(result.report.splits)


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_oneid_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "w"
    assert (
        runner.invoke(
            app, ["data", "synth", "--customers", "600", "--seed", "2", "--out", str(data)]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["data", "oneid", "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "against the synthetic truth: pairwise precision" in result.output
    report = json.loads((data / "oneid" / "oneid_report.json").read_text())
    assert report["against_truth"]["precision"] >= 0.99 and report["against_truth"]["recall"] >= 0.99
    first = pd.read_parquet(data / "oneid" / "identities.parquet")
    again = runner.invoke(
        app,
        ["data", "oneid", "--data", str(data), "--out", str(tmp_path / "o2"),
         "--previous", str(data / "oneid" / "identities.parquet")],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert f"ids carried forward {first['customer_id'].nunique():,}, new 0, retired 0" in again.output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "o2" / "identities.parquet"), first)


def test_cli_oneid_missing_table_is_one_clear_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "oneid", "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert "identities" in result.output and "Traceback" not in result.output

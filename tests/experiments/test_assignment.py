"""Hash assignment: determinism, stability under new customers, the global holdout, stratification."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.assignment import (
    HOLDOUT_ARM,
    ExperimentDesign,
    arm_counts,
    assign,
    design_weights_from_log,
    global_holdout_mask,
    hash_uniform,
    hash_uniform_reference,
    log_assignment,
    read_assignment_log,
)


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"C{i:07d}" for i in range(start, start + n)]


def test_hash_uniform_matches_an_independent_sha256_computation() -> None:
    ids = ["C0000001", "会员-42", "x"]
    expected = [int(hashlib.sha256(f"exp-1:{c}".encode()).hexdigest()[:16], 16) / 2**64 for c in ids]
    assert hash_uniform(ids, "exp-1") == pytest.approx(expected, abs=0, rel=0)


def test_vectorised_hash_equals_hashlib_bit_for_bit_on_many_ids() -> None:
    rng = np.random.default_rng(0)
    alphabet = list("ABCxyz0123456789-_会员客户 ")
    ids = ["".join(rng.choice(alphabet, size=rng.integers(1, 40))) for _ in range(5000)] + _ids(5000)
    assert np.array_equal(hash_uniform(ids, "g-holdout"), hash_uniform_reference(ids, "g-holdout"))
    assert hash_uniform([], "s").shape == (0,)


def test_non_string_ids_are_named_with_their_rows() -> None:
    with pytest.raises(TypeError, match=r"2 customer ids are not strings \(rows \[0, 2\]\)"):
        hash_uniform([7, "a", 3.5], "s")


def test_hash_uniform_is_uniform() -> None:
    u = hash_uniform(_ids(20_000), "salt-a")
    assert ((u >= 0) & (u < 1)).all()
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_assignment_is_deterministic_and_follows_weights() -> None:
    design = ExperimentDesign(experiment_id="spring-recall", weights={"treatment": 3, "control": 1})
    ids = _ids(20_000)
    a, b = assign(ids, design), assign(list(reversed(ids)), design)
    merged = a.merge(b, on="customer_id", suffixes=("_a", "_b"))
    assert (merged["arm_a"] == merged["arm_b"]).all()
    counts = arm_counts(a)
    eligible = counts["treatment"] + counts["control"]
    assert stats.binomtest(counts["treatment"], eligible, 0.75).pvalue > 1e-3
    assert stats.binomtest(counts[HOLDOUT_ARM], len(ids), 0.05).pvalue > 1e-3


def test_different_salts_give_independent_assignments() -> None:
    ids = _ids(10_000)
    a = assign(ids, ExperimentDesign(experiment_id="e1", weights={"treatment": 1, "control": 1}))
    b = assign(ids, ExperimentDesign(experiment_id="e2", weights={"treatment": 1, "control": 1}))
    both = (a["arm"] != HOLDOUT_ARM) & (b["arm"] != HOLDOUT_ARM)
    table = pd.crosstab(a.loc[both, "arm"], b.loc[both, "arm"])
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_existing_customers_keep_their_arm_when_new_customers_arrive() -> None:
    design = ExperimentDesign(experiment_id="e", weights={"treatment": 0.5, "sms": 0.3, "control": 0.2})
    before = assign(_ids(5_000), design)
    after = assign(_ids(5_000) + _ids(3_000, start=90_000), design)
    merged = before.merge(after, on="customer_id", suffixes=("_before", "_after"))
    assert len(merged) == 5_000
    assert (merged["arm_before"] == merged["arm_after"]).all()
    holdout_before = global_holdout_mask(_ids(5_000))
    holdout_after = global_holdout_mask(_ids(5_000) + _ids(10, start=10**6))[:5_000]
    assert (holdout_before == holdout_after).all()


def test_global_holdout_never_in_a_treatment_arm_of_any_campaign() -> None:
    ids = _ids(20_000)
    holdout = global_holdout_mask(ids)
    assert 0.04 < holdout.mean() < 0.06
    for k in range(5):
        design = ExperimentDesign(experiment_id=f"campaign-{k}", weights={"treatment": 0.8, "control": 0.2})
        arms = assign(ids, design)["arm"].to_numpy()
        assert (arms[holdout] == HOLDOUT_ARM).all()
        assert not np.isin(arms[holdout], design.treatment_arms).any()
        assert (arms[~holdout] != HOLDOUT_ARM).all()
    stratified = ExperimentDesign(experiment_id="s", stratify_by="tier")
    frame = pd.DataFrame({"customer_id": ids, "tier": np.arange(len(ids)) % 4})
    arms = assign(frame, stratified)["arm"].to_numpy()
    assert (arms[holdout] == HOLDOUT_ARM).all()


def test_global_holdout_share_and_salt() -> None:
    ids = _ids(10_000)
    assert not global_holdout_mask(ids, share=0.0).any()
    small, big = global_holdout_mask(ids, share=0.02), global_holdout_mask(ids, share=0.10)
    assert (big[small]).all()  # a bigger holdout contains the smaller one: shares nest
    assert (global_holdout_mask(pd.Series(ids)) == global_holdout_mask(ids)).all()
    with pytest.raises(ValueError, match="share"):
        global_holdout_mask(ids, share=1.0)


def test_stratified_assignment_is_balanced_within_strata_and_stable() -> None:
    design = ExperimentDesign(
        experiment_id="tiered", weights={"treatment": 0.5, "control": 0.5}, stratify_by="tier"
    )
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"customer_id": _ids(3_001), "tier": rng.choice(["A", "B", "C"], 3_001)})
    first = assign(frame, design)
    assert first.equals(assign(frame, design))
    for _, grp in first[first["arm"] != HOLDOUT_ARM].groupby("tier"):
        counts = grp["arm"].value_counts()
        assert abs(counts["treatment"] - counts["control"]) <= 1

    newcomers = pd.DataFrame({"customer_id": _ids(999, start=50_000), "tier": rng.choice(["A", "B"], 999)})
    grown = assign(pd.concat([frame, newcomers]), design, previous=first)
    merged = first.merge(grown, on="customer_id", suffixes=("_1", "_2"))
    assert (merged["arm_1"] == merged["arm_2"]).all()
    for _, grp in grown[grown["arm"] != HOLDOUT_ARM].groupby("tier"):
        counts = grp["arm"].value_counts()
        assert abs(counts["treatment"] - counts["control"]) <= 1


def test_bad_input_lists_every_problem() -> None:
    with pytest.raises(ValueError, match=r"2 customer ids are missing or empty \(rows \[1, 3\]\)"):
        assign(["a", None, "b", ""], ExperimentDesign(experiment_id="e"))
    with pytest.raises(ValueError) as err:
        ExperimentDesign(experiment_id="e", weights={"treatment": -1, "holdout": 1})
    assert "reserved" in str(err.value) and "weight -1" in str(err.value)
    with pytest.raises(ValueError, match="stratifies by 'tier'"):
        assign(pd.DataFrame({"customer_id": ["a"]}), ExperimentDesign(experiment_id="e", stratify_by="tier"))


def test_assignment_log_round_trip(tmp_path) -> None:
    design = ExperimentDesign(experiment_id="e-log", weights={"treatment": 9, "control": 1})
    assignment = assign(_ids(1_000), design)
    log = tmp_path / "assignments.csv"
    log_assignment(assignment, design, log)
    log_assignment(assignment, design, log)
    table = read_assignment_log(log)
    assert len(table) == 2 and table["assignment_sha256"].nunique() == 1
    assert int(table.iloc[0]["n_customers"]) == 1_000
    assert design_weights_from_log(log, "e-log") == pytest.approx({"treatment": 0.9, "control": 0.1})
    assert design_weights_from_log(log, "unknown") is None
    assert "C0000001" not in log.read_text()

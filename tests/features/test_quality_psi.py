"""PSI (features.quality.psi) against hand-computed values and a plain-loop reimplementation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.quality import MISSING_BIN, PSI_EPS, psi


def test_psi_two_categories_matches_hand_computation() -> None:
    ref = pd.Series(["a"] * 50 + ["b"] * 50)
    cur = pd.Series(["a"] * 40 + ["b"] * 60)
    # (0.4 - 0.5) ln(0.4/0.5) + (0.6 - 0.5) ln(0.6/0.5) = 0.022314 + 0.018232
    assert psi(ref, cur).value == pytest.approx(0.0405465, abs=1e-6)


def test_psi_identical_is_zero_and_symmetric_formula() -> None:
    rng = np.random.default_rng(0)
    x = pd.Series(rng.normal(size=1000))
    assert psi(x, x).value == pytest.approx(0.0, abs=1e-12)
    y = pd.Series(rng.normal(0.5, 1, size=1000))
    assert psi(x, y).value > 0.1


def _plain_numeric_psi(ref: list[float], cur: list[float], bins: int) -> float:
    finite = sorted(v for v in ref if not math.isnan(v))
    edges = sorted(set(np.quantile(finite, [k / bins for k in range(1, bins)]).tolist()))

    def bin_of(v: float) -> int:
        if math.isnan(v):
            return len(edges) + 1
        for i, e in enumerate(edges):
            if v <= e:
                return i
        return len(edges)

    def shares(xs: list[float]) -> list[float]:
        counts = [0] * (len(edges) + 2)
        for v in xs:
            counts[bin_of(v)] += 1
        return [c / len(xs) for c in counts]

    total = 0.0
    for p, q in zip(shares(ref), shares(cur), strict=True):
        p, q = max(p, PSI_EPS), max(q, PSI_EPS)
        total += (q - p) * math.log(q / p)
    return total


def test_psi_numeric_with_ties_and_missing_matches_plain_loops() -> None:
    rng = np.random.default_rng(1)
    ref = np.where(rng.random(2000) < 0.6, 0.0, rng.poisson(3, 2000).astype(float))
    cur = np.where(rng.random(1500) < 0.5, 0.0, rng.poisson(4, 1500).astype(float))
    ref[rng.random(2000) < 0.05] = np.nan
    cur[rng.random(1500) < 0.15] = np.nan
    got = psi(pd.Series(ref), pd.Series(cur), bins=10)
    assert got.value == pytest.approx(_plain_numeric_psi(ref.tolist(), cur.tolist(), 10), rel=1e-12)
    assert got.bins[-1] == MISSING_BIN
    assert sum(got.reference_share) == pytest.approx(1.0)
    assert got.current_share[-1] == pytest.approx(np.isnan(cur).mean())


def test_psi_new_category_gets_floored_share() -> None:
    ref = pd.Series(["x"] * 100)
    cur = pd.Series(["x"] * 90 + ["y"] * 10)
    expected = (0.9 - 1.0) * math.log(0.9 / 1.0) + (0.1 - PSI_EPS) * math.log(0.1 / PSI_EPS)
    assert psi(ref, cur).value == pytest.approx(expected, rel=1e-12)


def test_psi_refuses_empty_side() -> None:
    with pytest.raises(ValueError, match="both sides"):
        psi(pd.Series([], dtype=float), pd.Series([1.0]))

"""A snapshot is finished without copying the engine's result (memory discipline at scale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.as_of import cutoff_ts
from features.engine import Engine
from features.schema import BUSINESS_TZ
from features.snapshot import (
    SNAPSHOT_DTYPES,
    _days_to_next_sale,
    compute_snapshot,
    finish_snapshot,
    snapshot_expr,
)
from features.synthetic import SynthConfig, generate_world, write_world

CUTOFF = "2024-03-01"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("snapmem") / "data"
    write_world(generate_world(SynthConfig(customers=300, seed=8)), out)
    return out


def _engine_result(world: Path) -> pd.DataFrame:
    with Engine() as eng:
        h = eng.histories(world)
        return eng.execute_at(("snapshot", None), lambda cut: snapshot_expr(h, cut), CUTOFF)


def test_finished_snapshot_shares_the_engine_buffers(world: Path) -> None:
    raw = _engine_result(world)
    kept = raw.copy()
    snap = finish_snapshot(raw, CUTOFF)
    assert list(snap.columns) == list(SNAPSHOT_DTYPES)
    assert {c: str(t) for c, t in snap.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in SNAPSHOT_DTYPES.items()
    }
    for col in ("n_orders", "total_net", "customer_id", "lifecycle_stage"):
        assert np.shares_memory(snap[col].to_numpy(), raw[col].to_numpy()), col
    pd.testing.assert_frame_equal(raw, kept)  # finishing itself writes nothing into the engine's frame


def test_snapshot_values_equal_the_copying_path_and_stay_writable(world: Path) -> None:
    # The reference finishes an independent copy the way it was done before, every step copying.
    ref = _engine_result(world).reset_index(drop=True)
    c = cutoff_ts(CUTOFF)
    ref.insert(1, "cutoff", c)
    ref["cutoff_month"] = int(c.tz_convert(BUSINESS_TZ).month)
    ref["days_to_next_sale"] = _days_to_next_sale(c)
    ref = ref.astype(SNAPSHOT_DTYPES)[list(SNAPSHOT_DTYPES)]
    snap = compute_snapshot(world, CUTOFF)
    pd.testing.assert_frame_equal(snap, ref, check_exact=True)
    snap.loc[0, "n_orders"] = 123.0  # the shared buffers are ordinary writable numpy memory
    assert snap.loc[0, "n_orders"] == 123.0

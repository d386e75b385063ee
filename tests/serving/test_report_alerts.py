"""Data alerts of `siyu report`: injected faults raise exactly the right alerts, clean worlds do not.

* a shift injected into one feature of the scoring snapshot → a PSI alert on that feature only;
* a channel whose orders stop arriving for the last 10 days → a row-count alert on that channel only;
* resampled worlds without a fault (independent seeds) → the share of runs with any alert < 5%.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from features.io import read_table, write_table
from features.snapshot import compute_snapshot
from features.synthetic import SynthConfig, generate_world, write_world
from serving.report.alerts import AlertConfig, evaluate_alerts, load_alert_config
from serving.report.metrics import ReportConfig, compute_figures, months_before
from serving.report.run import build_report
from tests.serving.report_oracle import DAY, midnight

CUTOFF = dt.date(2024, 10, 1)
CUSTOMERS = 2000
#: Independent worlds of the false-alarm test (half of them judged at each cutoff).
RESAMPLES = 40
FALSE_ALARM_CUTOFFS = (dt.date(2024, 10, 1), dt.date(2024, 12, 1))


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("alerts") / "clean"
    write_world(generate_world(SynthConfig(customers=CUSTOMERS, seed=21)), out)
    return out


def _keys(data: Path, out: Path) -> list[str]:
    return sorted(a.key for a in build_report(data, CUTOFF, out, log_mlflow=False).alerts)


def test_clean_world_raises_no_alert(clean_world: Path, tmp_path: Path) -> None:
    assert _keys(clean_world, tmp_path / "report") == []


@pytest.mark.slow
def test_feature_shift_and_stopped_channel_raise_the_right_alerts(clean_world: Path, tmp_path: Path) -> None:
    data = tmp_path / "faulty"
    shutil.copytree(clean_world, data)
    orders = read_table(data, "orders")
    stopped = (orders["channel"] == "tmall") & (orders["ts"] >= midnight(CUTOFF) - 10 * DAY)
    assert stopped.sum() >= 15  # the channel was busy before it stopped
    write_table(orders[~stopped].reset_index(drop=True), data, "orders")
    tables = {n: read_table(data, n) for n in ("customers", "orders", "events", "touches")}

    # Only the channel stopped: exactly the row-count alert of that channel.
    assert _keys(data, tmp_path / "stop") == ["row_count:orders.tmall"]

    # Then the scoring snapshot (as the nightly job stored it) arrives with one feature shifted.
    snap = compute_snapshot(tables, CUTOFF)
    snap["aov"] = snap["aov"] * 1.5
    (data / "snapshots").mkdir()
    snap.to_parquet(data / "snapshots" / f"{CUTOFF}.parquet", index=False)
    assert _keys(data, tmp_path / "both") == ["psi:feature.aov", "row_count:orders.tmall"]


def alert_keys(seed: int, customers: int, cutoff: dt.date, cfg: AlertConfig) -> list[str]:
    """Alerts raised by the report on an unaltered synthetic world (one resample)."""
    world = generate_world(SynthConfig(customers=customers, seed=seed))
    cache: dict[dt.date, pd.DataFrame] = {}

    def snapshot_at(day: dt.date) -> pd.DataFrame:
        if day not in cache:
            cache[day] = compute_snapshot(world.tables, day)
        return cache[day]

    fig = compute_figures(
        world.tables,
        cutoff,
        months_before(cutoff, 1),
        snapshot_at,
        ReportConfig(),
        row_count_tables=[(m.table, m.by) for m in cfg.row_counts.monitor],
        null_rate_tables=list(cfg.null_rates.tables),
    )
    return [a.key for a in evaluate_alerts(fig, cfg)]


@pytest.mark.slow
def test_false_alarm_rate_over_resamples_without_a_shift() -> None:
    cfg = load_alert_config()
    runs = [alert_keys(1000 + i, CUSTOMERS, FALSE_ALARM_CUTOFFS[i % 2], cfg) for i in range(RESAMPLES)]
    with_alert = [r for r in runs if r]
    rate = len(with_alert) / RESAMPLES
    print(f"false-alarm rate: {len(with_alert)}/{RESAMPLES} runs = {rate:.1%}; alerts: {with_alert}")
    assert rate < 0.05


def test_packaged_thresholds_are_the_typed_defaults_and_typos_are_refused(tmp_path: Path) -> None:
    assert load_alert_config() == AlertConfig()
    bad = tmp_path / "alerts.yaml"
    bad.write_text("psi:\n  max_psi: 0.2\n  maxpsi: 0.3\n")
    with pytest.raises(ValueError, match="maxpsi"):
        load_alert_config(bad)

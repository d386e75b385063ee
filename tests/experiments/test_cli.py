"""`siyu experiment assign|readout|uplift|simulate` driven in-process through the root app."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.cli import EXIT_SRM, parse_weights
from siyu.cli import app

runner = CliRunner()


def _invoke(args: list[str]):
    return runner.invoke(app, ["experiment", *args], catch_exceptions=False)


def test_parse_weights_reports_bad_items() -> None:
    assert parse_weights("treatment=0.7, control=0.3") == {"treatment": 0.7, "control": 0.3}
    import typer

    with pytest.raises(typer.BadParameter, match="control"):
        parse_weights("treatment=0.7,control")


def test_assign_is_deterministic_and_logged(small_world, tmp_path) -> None:
    args = ["assign", "-e", "spring", "--data", str(small_world), "--out", str(tmp_path / "a.parquet")]
    first = _invoke(args)
    assert first.exit_code == 0, first.output
    a = pd.read_parquet(tmp_path / "a.parquet")
    assert _invoke(args).exit_code == 0
    assert pd.read_parquet(tmp_path / "a.parquet").equals(a)
    log = pd.read_csv(tmp_path / "assignments.csv")
    assert len(log) == 2 and log["assignment_sha256"].nunique() == 1
    assert set(a["arm"]) == {"treatment", "control", "holdout"}


def test_readout_writes_reports(small_world, tmp_path) -> None:
    out = tmp_path / "readouts"
    result = _invoke(
        ["readout", "--data", str(small_world), "--out", str(out), "-c", "CMP02-ai_call", "--no-mlflow"]
    )
    assert result.exit_code == 0, result.output
    assert "campaign CMP02-ai_call" in result.output and "conversion (CUPED)" in result.output
    assert (out / "CMP02-ai_call.png").read_bytes()[:4] == b"\x89PNG"
    assert "<table" in (out / "CMP02-ai_call.html").read_text()
    summary = pd.read_csv(out / "readout_summary.csv")
    assert set(summary["metric"]) == {"conversion", "revenue", "conversion (CUPED)", "revenue (CUPED)"}


def test_readout_blocks_on_sample_ratio_mismatch(small_world, tmp_path) -> None:
    # Copy the world and lose 40% of one campaign's control touches: the arms no longer match 70/30.
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small_world, broken)
    touches = pd.read_parquet(broken / "touches.parquet")
    ctrl = touches.index[(touches["campaign_id"] == "CMP07-ai_call") & (touches["arm"] == "control")]
    touches.drop(index=ctrl[: int(0.4 * len(ctrl))]).to_parquet(broken / "touches.parquet", index=False)
    result = runner.invoke(
        app, ["experiment", "readout", "--data", str(broken), "--out", str(tmp_path / "r"), "--no-mlflow"]
    )
    assert result.exit_code == EXIT_SRM
    assert "SAMPLE RATIO MISMATCH — READOUT BLOCKED" in result.output
    assert "READOUT BLOCKED for 1 campaign(s) by sample-ratio mismatch: CMP07-ai_call" in result.output
    assert not (tmp_path / "r" / "CMP07-ai_call.html").exists()
    assert (tmp_path / "r" / "CMP02-ai_call.html").exists()  # the healthy campaigns are still read out


@pytest.mark.slow
def test_readout_logs_to_mlflow(small_world, tmp_path) -> None:
    from training import tracking

    result = _invoke(["readout", "--data", str(small_world), "--out", str(tmp_path / "r"), "-c", "CMP01-sms"])
    assert result.exit_code == 0, result.output
    runs = tracking.client().search_runs(
        [tracking.get_or_create_experiment("siyu-experiments")],
        filter_string="attributes.run_name = 'readout'",
    )
    assert len(runs) == 1
    assert "CMP01-sms.treatment.conversion_cuped.abs_lift" in runs[0].data.metrics


@pytest.mark.slow
def test_uplift_writes_channel_table(small_world, tmp_path) -> None:
    from experiments.uplift import ChannelUpliftTable

    out = tmp_path / "uplift"
    result = _invoke(
        ["uplift", "--data", str(small_world), "--cutoff", "2024-06-01", "--out", str(out), "--no-mlflow"]
    )
    assert result.exit_code == 0, result.output
    table = ChannelUpliftTable.from_json(out / "channel_uplift.json")
    assert {"ai_call", "sms"} <= set(table.channels)
    assert table.channels["ai_call"].window_days == 14
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert set(metrics["evaluation"]) == {"t_learner", "x_learner", "channel_model"}
    assert (out / "qini.png").exists()


@pytest.mark.slow
def test_simulate_prints_table_and_json_last_line(small_world) -> None:
    result = _invoke(["simulate", "--data", str(small_world), "--budget", "500", "--no-feature-oracle"])
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert set(last["incremental_profit"]) == {"random", "churn_risk", "clv_x_risk", "uplift", "oracle"}
    assert last["share_of_oracle"]["oracle"] == 1.0
    assert "share_of_oracle" in result.output

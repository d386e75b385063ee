"""`siyu report` through the CLI: outputs, MLflow logging, exit codes and bad input."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.io import read_table, write_table
from serving.report.cli import EXIT_ALERT
from serving.report.render import FORMATTERS
from siyu.cli import app
from tests.serving.report_oracle import DAY, midnight, write_world_with_scores
from training import tracking

CUTOFF = dt.date(2024, 10, 1)
runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report_cli")
    return write_world_with_scores(
        root / "data",
        customers=1500,
        seed=31,
        score_cutoffs=[
            dt.date(2023, 9, 1),
            dt.date(2024, 6, 1),
            dt.date(2024, 9, 1),
            dt.date(2024, 9, 24),
            CUTOFF,
        ],
    )


def _run(*args: str) -> object:
    return runner.invoke(app, ["report", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def report(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report_out")
    r = _run(
        "--data",
        str(world),
        "--cutoff",
        str(CUTOFF),
        "--out",
        str(out),
        "--scores",
        str(world / "scores.parquet"),
        "--no-mlflow",
    )
    assert r.exit_code == 0, r.output
    return out


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self._in = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "td":
            self._in, self._buf = True, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._in:
            self.cells.append(self._buf.strip())
            self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self._buf += data


def _numbers(x: object) -> list[float]:
    if isinstance(x, dict):
        return [v for item in x.values() for v in _numbers(item)]
    if isinstance(x, list):
        return [v for item in x for v in _numbers(item)]
    if isinstance(x, bool):
        return []
    return [float(x)] if isinstance(x, int | float) else []


def test_every_number_in_the_html_tables_is_a_figure(report: Path) -> None:
    figs = json.loads((report / "figures.json").read_text(encoding="utf-8"))
    allowed = {f(v) for v in _numbers(figs) for f in FORMATTERS}
    parser = _Cells()
    parser.feed((report / "report.html").read_text(encoding="utf-8"))
    numeric = [c for c in parser.cells if re.fullmatch(r"-?[\d,]*\.?\d+(e[-+]?\d+)?%?", c)]
    assert len(numeric) > 300
    stray = sorted({c for c in numeric if c not in allowed})
    assert stray == []


def test_report_html_is_self_contained_with_every_plot(report: Path) -> None:
    html = (report / "report.html").read_text(encoding="utf-8")
    plots = re.findall(r'<img class="plot" id="plot-([a-z_]+)" alt="[^"]*" src="data:image/png;base64,', html)
    assert set(plots) == {"kpi_trend", "lifecycle", "ltv", "channels", "psi", "calibration", "row_counts"}
    assert not re.search(r'(src|href)="(http|/|file:)', html)
    assert "休眠" in html and "No alerts." in html
    assert sorted(p.name for p in (report / "plots").glob("*.png")) == sorted(f"{p}.png" for p in plots)


def test_report_logs_html_and_figures_to_mlflow(world: Path, tmp_path: Path) -> None:
    r = _run("--data", str(world), "--cutoff", str(CUTOFF), "--out", str(tmp_path / "rep"))
    assert r.exit_code == 0, r.output
    c = tracking.client()
    exp = c.get_experiment_by_name("siyu-report")
    (run,) = c.search_runs([exp.experiment_id])
    names = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"report.html", "figures.json", "figures"} <= names
    figs = {a.path for a in c.list_artifacts(run.info.run_id, "figures")}
    assert "figures/psi.png" in figs
    local = json.loads((tmp_path / "rep" / "figures.json").read_text())
    assert run.data.metrics["kpi.active_rate"] == pytest.approx(local["kpis"]["active_rate"])
    assert run.data.metrics["n_alerts"] == 0
    assert run.data.params["reference_cutoff"] == "2024-09-01"


def test_fail_on_alert_exits_non_zero_when_a_channel_stops(world: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(world, data)
    orders = read_table(data, "orders")
    gone = (orders["channel"] == "tmall") & (orders["ts"] >= midnight(CUTOFF) - 10 * DAY)
    write_table(orders[~gone].reset_index(drop=True), data, "orders")
    args = ["--data", str(data), "--cutoff", str(CUTOFF), "--no-mlflow"]
    plain = _run(*args, "--out", str(tmp_path / "a"))
    assert plain.exit_code == 0
    assert "ALERT row_count: orders.tmall" in plain.output
    strict = _run(*args, "--out", str(tmp_path / "b"), "--fail-on-alert")
    assert strict.exit_code == EXIT_ALERT
    html = (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    assert html.index("1 alert(s)") < html.index("Headline metrics")  # alerts at the top
    figs = json.loads((tmp_path / "b" / "figures.json").read_text())
    assert [a["key"] for a in figs["alerts"]] == ["row_count:orders.tmall"]


def test_bad_scores_are_reported_all_at_once(world: Path, tmp_path: Path) -> None:
    scores = pd.read_parquet(world / "scores.parquet")
    scores.loc[[3, 7], "p_churn"] = [1.5, -0.2]
    scores.loc[11, "clv_12m"] = -5.0
    bad = tmp_path / "bad_scores.parquet"
    scores.to_parquet(bad, index=False)
    r = _run(
        "--data",
        str(world),
        "--cutoff",
        str(CUTOFF),
        "--out",
        str(tmp_path / "o"),
        "--scores",
        str(bad),
        "--no-mlflow",
    )
    assert r.exit_code == 2
    assert "p_churn" in r.output and "[3, 7]" in r.output and "clv_12m" in r.output and "[11]" in r.output
    assert "Traceback" not in r.output


def test_bad_arguments_exit_2_with_a_message(world: Path, tmp_path: Path) -> None:
    r = _run("--data", str(world), "--cutoff", "2024-13-01", "--out", str(tmp_path / "o"), "--no-mlflow")
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.output
    yaml_path = tmp_path / "alerts.yaml"
    yaml_path.write_text("psi:\n  max_psi: 0.2\n  typo_key: 1\n")
    r = _run(
        "--data",
        str(world),
        "--cutoff",
        str(CUTOFF),
        "--out",
        str(tmp_path / "o"),
        "--alerts",
        str(yaml_path),
        "--no-mlflow",
    )
    assert r.exit_code == 2 and "typo_key" in r.output
    r = _run(
        "--data",
        str(tmp_path / "missing"),
        "--cutoff",
        str(CUTOFF),
        "--out",
        str(tmp_path / "o"),
        "--no-mlflow",
    )
    assert r.exit_code == 2 and "customers" in r.output
    r = _run(
        "--data",
        str(world),
        "--cutoff",
        str(CUTOFF),
        "--out",
        str(tmp_path / "o"),
        "--readouts",
        str(tmp_path),
        "--no-mlflow",
    )
    assert r.exit_code == 2 and "readout_summary.csv" in r.output


def test_missing_scores_and_readouts_are_skipped_with_notes(world: Path, tmp_path: Path) -> None:
    r = _run("--data", str(world), "--cutoff", str(CUTOFF), "--out", str(tmp_path / "o"), "--no-mlflow")
    assert r.exit_code == 0
    figs = json.loads((tmp_path / "o" / "figures.json").read_text())
    assert figs["score_drift"] == [] and figs["calibration"] == [] and figs["campaign_roi"] == []
    assert any("--scores" in n for n in figs["notes"]) and any("--readouts" in n for n in figs["notes"])
    html = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    assert "no scores file given" in html


def test_scores_with_batch_stamp_columns_are_accepted(tmp_path: Path) -> None:
    # `siyu score` stamps every row with model versions (strings); only score columns are range-checked.
    from serving.batch import STAMP_COLUMNS
    from serving.report.run import ReportInputError, load_scores

    scores = pd.DataFrame({"customer_id": ["a", "b"], "cutoff": ["2024-12-01"] * 2,
                           "p_churn": [0.2, 0.9], "clv_12m": [10.0, 0.0],
                           **{c: ["3", "3"] for c in STAMP_COLUMNS}})
    scores.to_parquet(tmp_path / "ok.parquet")
    assert len(load_scores(tmp_path / "ok.parquet")) == 2
    scores.assign(clv_12m=[-1.0, 0.0]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ReportInputError, match="clv_12m"):
        load_scores(tmp_path / "bad.parquet")

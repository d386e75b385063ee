"""The report renders in headless Chromium with every plot decoded, and a screenshot is produced.

Chromium comes from the system package (Debian ``chromium``); `.ci/run` installs it when missing. In
CI (``CI`` set) a missing browser fails this test; on a developer machine without it the test skips.
The screenshot is kept at ``$SIYU_SCREENSHOT_DIR/report.png`` when that variable is set.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.report.run import build_report
from tests.serving.report_oracle import write_world_with_scores

pytestmark = pytest.mark.e2e

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CUTOFF = dt.date(2024, 10, 1)
#: Tall enough for the whole page (long tables are folded), so the screenshot shows every plot.
HEIGHT = 10000


def chromium() -> str:
    found = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if found is None:
        message = "headless Chromium not found (apt-get install chromium; .ci/run does this in CI)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _flags(profile: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
    ]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = chromium()
    data = write_world_with_scores(
        tmp_path / "data",
        customers=1000,
        seed=41,
        score_cutoffs=[dt.date(2024, 6, 1), dt.date(2024, 9, 1), CUTOFF],
    )
    outcome = build_report(
        data, CUTOFF, tmp_path / "report", scores=data / "scores.parquet", log_mlflow=False
    )
    url = outcome.html_path.resolve().as_uri()
    n_plots = len(outcome.plot_paths)

    dom = _run([browser, *_flags(tmp_path / "p1"), "--virtual-time-budget=10000", "--dump-dom", url])
    marker = re.search(r'data-plots-decoded="(\d+)/(\d+)"', dom.stdout)
    assert marker, f"page did not finish loading: {dom.stderr[-2000:]}"
    assert (int(marker.group(1)), int(marker.group(2))) == (n_plots, n_plots)

    shot = tmp_path / "report.png"
    res = _run(
        [browser, *_flags(tmp_path / "p2"), f"--screenshot={shot}", f"--window-size=1280,{HEIGHT}", url]
    )
    assert shot.exists(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.shape[:2] == (HEIGHT, 1280)
    inked = np.flatnonzero((pixels < 235).any(axis=2).any(axis=1))
    assert inked.max() < HEIGHT - 50, "the page is longer than the screenshot: not every plot is in it"
    non_white = (pixels < 235).any(axis=2).mean()
    colourful = (pixels.max(axis=2) - pixels.min(axis=2) > 60).mean()  # plot colours, not just text
    assert non_white > 0.05 and colourful > 0.005, (non_white, colourful)
    keep = os.environ.get("SIYU_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")

"""`make demo`: the whole nightly job on the built-in synthetic world, step by step.

Each step is the same `siyu` sub-command a user or scheduler would run, executed in a child process so
the demo exercises exactly the public CLI. The demo stops at the first failing step with its name and
exit code, and ends with a table of wall times and the places to look.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    """One pipeline stage: a title and the `siyu` arguments that run it."""

    title: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class DemoPlan:
    """Where the demo writes and which cutoff it scores at."""

    out: Path
    customers: int
    seed: int
    start: dt.date
    end: dt.date

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def cutoff(self) -> dt.date:
        """Score the day after the last observed day: the nightly job's cutoff."""
        return self.end + dt.timedelta(days=1)

    @property
    def scores(self) -> Path:
        return self.out / "scores.parquet"

    @property
    def report(self) -> Path:
        return self.out / "report"

    @property
    def readouts(self) -> Path:
        return self.out / "readouts"


def steps(plan: DemoPlan) -> list[Step]:
    """The demo's stages in data-flow order."""
    data, cutoff = str(plan.data), plan.cutoff.isoformat()
    return [
        Step("generate the synthetic world", ("data", "synth", "--customers", str(plan.customers),
                                              "--seed", str(plan.seed), "--start", plan.start.isoformat(),
                                              "--end", plan.end.isoformat(), "--out", data)),
        Step("validate the data contract", ("data", "validate", data)),
        Step("build the feature snapshot", ("features", "build", "--data", data, "--cutoff", cutoff)),
        Step("train churn, repurchase_7d and CLV", ("train", "all", "--data", data)),
        Step("read out past campaigns", ("experiment", "readout", "--data", data,
                                         "--out", str(plan.readouts))),
        Step("batch score and plan outreach", ("score", "--data", data, "--cutoff", cutoff,
                                               "--out", str(plan.scores))),
        Step("operations report", ("report", "--data", data, "--cutoff", cutoff, "--out", str(plan.report),
                                   "--scores", str(plan.scores), "--readouts", str(plan.readouts))),
    ]


def run_step(step: Step, index: int, total: int) -> float:
    """Run one stage as `python -m siyu.cli ...`; return its wall time or exit with its code."""
    print(f"\n=== [{index}/{total}] {step.title}: siyu {' '.join(step.args)}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "siyu.cli", *step.args], check=False)
    seconds = time.perf_counter() - t0
    # `experiment readout` exits 3 when a sample-ratio mismatch blocks a campaign: loud, not fatal.
    if done.returncode not in (0, 3):
        print(f"\ndemo stopped: step '{step.title}' failed with exit code {done.returncode}", file=sys.stderr)
        raise SystemExit(done.returncode)
    return seconds


def where_to_look(plan: DemoPlan) -> str:
    """The closing message: every output and how to open it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db")
    snapshot = plan.data / "snapshots" / f"{plan.cutoff.isoformat()}.parquet"
    return "\n".join([
        "",
        "Where to look:",
        f"  data (contract tables + truth/)   {plan.data}",
        f"  feature snapshot                  {snapshot}",
        f"  scores + outreach plan            {plan.scores}",
        f"  campaign readouts (HTML/PNG)      {plan.readouts}",
        f"  operations report                 {plan.report / 'report.html'}",
        f"  MLflow runs and registry          {uri}  →  make mlflow-ui  (http://127.0.0.1:5000)",
        "  HTTP scoring service              make serve  (SIYU_API_TOKEN=… ; POST /score, /tier)",
    ])


def main(argv: list[str] | None = None) -> None:
    """Parse the demo's options and run every stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo"), help="Folder for every demo output.")
    parser.add_argument("--customers", type=int, default=20_000, help="Persons in the synthetic world.")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the synthetic world.")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 1, 1))
    parser.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2024, 12, 31))
    args = parser.parse_args(argv)
    plan = DemoPlan(args.out, args.customers, args.seed, args.start, args.end)
    stages = steps(plan)
    t0 = time.perf_counter()
    times = [run_step(s, i, len(stages)) for i, s in enumerate(stages, start=1)]
    print("\nWall time per stage:")
    for step, seconds in zip(stages, times, strict=True):
        print(f"  {step.title:40s} {seconds:7.1f} s")
    print(f"  {'total':40s} {time.perf_counter() - t0:7.1f} s")
    print(where_to_look(plan))


if __name__ == "__main__":
    main()

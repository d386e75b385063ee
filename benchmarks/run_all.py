"""`make bench`: run every benchmark at full size and rewrite benchmarks/RESULTS.md.

Each benchmark is a module of this folder whose last printed line is one JSON object holding its figures,
the baseline measured in the same run and the ratio to it. This runner executes each one in a child
process (so peak-RSS figures are per benchmark), records the command, the figures, the machine (cores,
memory) and the date, and replaces that benchmark's section of RESULTS.md; sections of benchmarks not run
this time are kept as they were.

    python -m benchmarks.run_all                 # everything at full size (long)
    python -m benchmarks.run_all --only features,btyd
    python -m benchmarks.run_all --list
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Rewritten by `make bench` (`python -m benchmarks.run_all`); one section per benchmark.\n"
)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark module, its full-size arguments and the goal its figures are read against."""

    name: str
    args: tuple[str, ...]
    goal: str

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", f"benchmarks.{self.name}", *self.args]

    @property
    def shown_command(self) -> str:
        return " ".join(["python -m", f"benchmarks.{self.name}", *self.args])


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("features", (), "one snapshot of 1M customers / 20M orders ≥3× faster than a pandas groupby"),
    Benchmark("btyd", (), "collapsed BG/NBD + Gamma-Gamma fit ≥5× lifetimes on raw rows; CLV ≥10× lifetimes"),
    Benchmark("batch_score", (), "1M customers features → 3 models → tiers → parquet in ≤60 s"),
    Benchmark("serve", (), "p99 ≤ 5 ms single customer; ≥4× mlflow models serve; ≥50,000 customers/s"),
    Benchmark("experiments_coverage", ("--experiments", "1000"), "95% intervals cover the truth 93–97%"),
    Benchmark("targeting_simulation", (), "uplift-ranked targeting's share of the oracle's profit"),
    Benchmark(
        "scale",
        (),
        "1M customers / 20M orders / 50M events: nightly score ≤60 s, training ≤10 min, never above 12 GiB",
    ),
)


def machine() -> str:
    """Cores, memory and platform of this machine, for every section."""
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def run(bench: Benchmark) -> tuple[dict[str, object], float]:
    """Run one benchmark in a child process; its last stdout line is its JSON result."""
    print(f"=== {bench.shown_command}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(bench.command, stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - t0
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"benchmark {bench.name} failed with exit code {done.returncode}")
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]), seconds
    except (IndexError, json.JSONDecodeError) as err:
        raise SystemExit(f"benchmark {bench.name}: the last printed line is not a JSON object") from err


def section(bench: Benchmark, figures: dict[str, object], seconds: float, when: dt.date) -> str:
    """One RESULTS.md section: command, machine, date, goal and every figure."""
    rows = "\n".join(f"| `{k}` | {_fmt(v)} |" for k, v in figures.items())
    return (
        f"<!-- bench:{bench.name} -->\n## {bench.name}\n\n"
        f"- command: `{bench.shown_command}`\n- machine: {machine()}\n- date: {when.isoformat()}\n"
        f"- wall time of the whole script: {seconds:.0f} s\n- goal: {bench.goal}\n\n"
        f"| figure | value |\n|---|---|\n{rows}\n<!-- /bench:{bench.name} -->\n"
    )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value, ensure_ascii=False)}`"
    return str(value)


def merge(text: str, sections: dict[str, str]) -> str:
    """Replace the named sections of ``text`` (or append them), keeping every other section."""
    out = text if text.strip() else HEADER
    for name, body in sections.items():
        pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->\n?", re.S)
        out = pattern.sub(lambda _m, b=body: b, out) if pattern.search(out) else f"{out.rstrip()}\n\n{body}"
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the selected benchmarks and update RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their goals")
    parser.add_argument("--results", type=Path, default=RESULTS, help="file to update")
    args = parser.parse_args(argv)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:22s} {b.goal}")
        return
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {b.name for b in BENCHMARKS}
    if unknown:
        raise SystemExit(f"unknown benchmarks {sorted(unknown)}; see --list")
    chosen = [b for b in BENCHMARKS if not wanted or b.name in wanted]
    today = dt.date.today()
    sections = {}
    for bench in chosen:
        figures, seconds = run(bench)
        sections[bench.name] = section(bench, figures, seconds, today)
        # Written after every benchmark so a long run that stops midway keeps what it measured.
        old = args.results.read_text() if args.results.exists() else ""
        args.results.write_text(merge(old, {bench.name: sections[bench.name]}))
    print(f"updated {args.results} ({', '.join(sections)})")


if __name__ == "__main__":
    main()

"""benchmarks/run_all.py: sections are replaced in place, others kept, figures come from the last line."""

from __future__ import annotations

import datetime as dt

from benchmarks.run_all import BENCHMARKS, Benchmark, merge, run, section


def test_merge_replaces_only_the_named_section() -> None:
    a = section(Benchmark("a", (), "goal a"), {"x": 1.0}, 1.0, dt.date(2026, 1, 1))
    b = section(Benchmark("b", (), "goal b"), {"y": 2}, 2.0, dt.date(2026, 1, 1))
    text = merge(merge("", {"a": a}), {"b": b})
    assert text.index("## a") < text.index("## b")
    a2 = section(Benchmark("a", (), "goal a"), {"x": 3.5}, 1.0, dt.date(2026, 2, 1))
    text2 = merge(text, {"a": a2})
    assert "| `x` | 3.5 |" in text2 and "| `x` | 1 |" not in text2
    assert b in text2 and text2.count("<!-- bench:a -->") == 1


def test_every_registered_benchmark_is_a_module_of_the_folder() -> None:
    from pathlib import Path

    folder = Path(__file__).parents[1] / "benchmarks"
    missing = [b.name for b in BENCHMARKS if not (folder / f"{b.name}.py").exists()]
    assert not missing


def test_run_reads_the_last_json_line_of_a_real_benchmark(tmp_path) -> None:
    bench = Benchmark("experiments_coverage", ("--experiments", "20", "--customers", "400"), "coverage")
    figures, seconds = run(bench)
    assert figures["experiments"] == 20 and seconds > 0
    text = merge("", {bench.name: section(bench, figures, seconds, dt.date.today())})
    assert "python -m benchmarks.experiments_coverage --experiments 20" in text and "cores" in text

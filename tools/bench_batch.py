"""Benchmark the nightly job against DuckDB computing the same outputs from the same Parquet.

    python -m tools.bench_batch [--sizes 10M,100M,600M:1] [--days 7] [--repeats 3] [--work DIR]

For each size: generates houses (datasets.generator) until the readings reach the
size, then times, side by side and alternating, the whole nightly job as
`spark-submit batch/nightly.py --from .. --to .. --no-write` (daily, hourly, totals,
appliance, zip and threshold outputs computed and counted; the JVM start included)
and `python -m tools.reference`, the same six outputs in DuckDB from the same Parquet.
Prints medians, the Spark/DuckDB ratio, and how time scales with size. `--work DIR`
keeps the generated data there and uses it again on the next run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smw import config



def parse_size(text: str) -> int:
    text = text.strip().upper()
    factor = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KMG")) * factor)


def parse_size_repeats(text: str, default_repeats: int) -> tuple[int, int]:
    """'600M:1' -> (600_000_000, 1); '10M' -> (10_000_000, default_repeats)."""
    size, _, repeats = text.partition(":")
    return parse_size(size), int(repeats) if repeats else default_repeats


def plan(readings: int, days: int, seed: int, sources=None):
    """The generator configuration with the fewest houses whose plans hold at least `readings` readings."""
    from datasets import generator

    sources = sources or generator.load_sources("synthetic", seed)
    shortest_day = min(len(day.ts_rel_s) for source in sources for day in source.days)
    upper = generator.Generator(generator.GeneratorConfig(
        houses=readings // (shortest_day * days) + 1, days=days, seed=seed), sources)
    total = houses = 0
    while total < readings:
        total += upper.source_readings(upper.plans[houses])
        houses += 1
    return generator.GeneratorConfig(houses=houses, days=days, seed=seed), sources


def generate(out: Path, readings: int, days: int, seed: int) -> tuple[int, str, str]:
    """Generate at least `readings` readings over `days` days, with the fewest houses that
    hold them (counted from the house plans); returns (readings, first day, last day).

    A dataset already in `out` from the same configuration (its manifest.json says so)
    is used as it is.
    """
    from dataclasses import asdict

    from datasets import generator

    cfg, sources = plan(readings, days, seed)
    first = dt.date.fromisoformat(cfg.start_date)
    span = first.isoformat(), (first + dt.timedelta(days=days - 1)).isoformat()
    manifest = out / "manifest.json"
    if manifest.exists():
        previous = json.loads(manifest.read_text(encoding="utf-8"))
        if previous.get("config") == json.loads(json.dumps(asdict(cfg))):
            print(f"using the data already in {out}", flush=True)
            return previous["summary"]["readings"], *span
        shutil.rmtree(out)
    summary = generator.generate(cfg, out, "parquet", sources=sources)
    return summary.readings, *span


def timed(command: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=config.ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - t0


def timed_or_failed(command: list[str], env: dict[str, str], engine: str) -> float:
    """Seconds, or NaN (reported) when the engine fails, e.g. out of memory at a large size:
    the other engine's time at that size still counts."""
    try:
        return timed(command, env)
    except RuntimeError as exc:
        last = [line for line in str(exc).splitlines() if line.strip()][-6:]
        print(f"  {engine} failed:\n    " + "\n    ".join(last), flush=True)
        return float("nan")


def median(values: list[float]) -> float:
    """The median of the runs that finished; NaN if none did."""
    done = [v for v in values if not math.isnan(v)]
    return statistics.median(done) if done else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10M,100M,600M:1",
                        help="comma-separated reading counts, each optionally with its own number of timed "
                             "runs after a colon (default 10M,100M,600M:1: the original system's scale once)")
    parser.add_argument("--days", type=int, default=7, help="days of data per size (default 7)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine and size (default 3)")
    parser.add_argument("--work", help="folder for generated data, kept; a size already generated there with the same "
                             "configuration is used again (default: a temporary folder, deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data (implied by --work)")
    args = parser.parse_args(argv)

    from smw import spark as spark_builder

    env = {**spark_builder.submit_env(), "SPARK_LOG_LEVEL": "ERROR"}
    work = Path(args.work or tempfile.mkdtemp(prefix="smw-bench-batch-"))
    rows = []
    try:
        for size, repeats in [parse_size_repeats(s, args.repeats) for s in args.sizes.split(",")]:
            out = work / f"n{size}"
            t0 = time.perf_counter()
            readings, first, last = generate(out, size, args.days, seed=size % 1000)
            print(f"{readings:,} readings ({first}..{last}) ready in {time.perf_counter() - t0:.0f} s", flush=True)
            inputs = ["--readings", str(out / "readings"), "--houses", str(out / "houses.parquet"),
                      "--from", first, "--to", last]
            spark_cmd = [spark_builder.spark_submit(), "batch/nightly.py", "--no-write", *inputs]
            duck_cmd = [sys.executable, "-m", "tools.reference", *inputs]
            spark_s, duck_s = [], []
            for run in range(repeats):
                spark_s.append(timed(spark_cmd, env))
                print(f"  run {run + 1}: spark {spark_s[-1]:.1f} s", flush=True)
                duck_s.append(timed_or_failed(duck_cmd, env, "duckdb"))
                print(f"  run {run + 1}: duckdb {duck_s[-1]:.1f} s", flush=True)
            rows.append((readings, median(spark_s), median(duck_s), repeats))
            if not (args.keep or args.work):
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'readings':>14} {'spark s':>9} {'duckdb s':>9} {'ratio':>6} {'spark readings/s':>17} {'runs':>5}")
    for readings, spark_med, duck_med, repeats in rows:
        print(f"{readings:>14,} {spark_med:>9.1f} {duck_med:>9.1f} {spark_med / duck_med:>6.2f} "
              f"{readings / spark_med:>17,.0f} {repeats:>5}")
    for (n0, s0, _, _), (n1, s1, _, _) in zip(rows, rows[1:]):
        print(f"scaling {n0:,} -> {n1:,}: data x{n1 / n0:.1f}, spark time x{s1 / s0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

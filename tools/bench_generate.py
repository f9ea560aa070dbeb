"""Benchmark: generation to Parquet at given sizes; prints readings/s, MB/s and peak RSS.

    python -m tools.bench_generate [--sizes 10M,100M] [--days 7] [--keep DIR]

Each size runs `python -m datasets.generate` in a child process, timed from start to
exit (source synthesis included); peak RSS is that child's own ru_maxrss from wait4().
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Readings per house-day of the default synthetic source (6 houses, 12-25 channels each),
# used only to choose the number of houses; the figures use the actual count.
READINGS_PER_HOUSE_DAY = 620_000


def parse_size(text: str) -> int:
    """'10M' -> 10_000_000, '1.5G' -> 1_500_000_000, '500k' -> 500_000."""
    units = {"k": 10**3, "m": 10**6, "g": 10**9}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def run_size(readings: int, days: int, seed: int, out: Path) -> dict:
    """Generate about `readings` readings into `out` in a child process and measure it."""
    houses = max(1, math.ceil(readings / (days * READINGS_PER_HOUSE_DAY)))
    command = [sys.executable, "-m", "datasets.generate", "--houses", str(houses), "--days", str(days),
               "--seed", str(seed), "--out", str(out), "--no-progress"]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed_s = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {child.returncode}")
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    return {
        "target": readings, "houses": houses, "days": days, "readings": summary["readings"],
        "bytes": summary["bytes"], "seconds": elapsed_s,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark sizes and print one line per size."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench_generate", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10M,100M", help="comma-separated reading counts (default 10M,100M)")
    parser.add_argument("--days", type=int, default=7, help="days per house (default 7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="write into this directory and keep the output (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    print(f"{'target':>10} {'houses':>7} {'readings':>13} {'seconds':>8} {'readings/s':>12} {'MB/s':>7} "
          f"{'out MB':>8} {'peak RSS MiB':>12}")
    for size in [parse_size(s) for s in args.sizes.split(",") if s.strip()]:
        root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="smw-bench-"))
        out = root / f"bench-{size}"
        shutil.rmtree(out, ignore_errors=True)
        try:
            result = run_size(size, args.days, args.seed, out)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        rate = result["readings"] / result["seconds"]
        print(f"{size:>10,} {result['houses']:>7} {result['readings']:>13,} {result['seconds']:>8.1f} {rate:>12,.0f} "
              f"{result['bytes'] / 1e6 / result['seconds']:>7.1f} {result['bytes'] / 1e6:>8.1f} "
              f"{result['peak_rss_bytes'] / 2**20:>12.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

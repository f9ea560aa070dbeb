"""Command line: generate a dataset of derived houses.

    python -m datasets.generate --houses 10 --days 7 --seed 1 --out var/data/generated \\
        [--format parquet|redd] [--spikes-per-house-day 0.5] [--source synthetic | redd:PATH]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from datasets.generator import DEFAULT_START_DATE, GeneratorConfig, generate


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the generator CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m datasets.generate",
        description="Derive N houses x D days of REDD-like readings with ground-truth spikes.",
    )
    parser.add_argument("--houses", type=int, required=True, help="number of derived houses")
    parser.add_argument("--days", type=int, required=True, help="days per house")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--format", choices=("parquet", "redd"), default="parquet",
                        help="parquet: raw zone partitioned by UTC date; redd: a low_freq/ tree (default parquet)")
    parser.add_argument("--spikes-per-house-day", type=float, default=0.5,
                        help="mean number of injected spikes per house-day (Poisson; default 0.5)")
    parser.add_argument("--source", default="synthetic",
                        help="redd:PATH (a REDD tree you have) or synthetic[:K[:DAYS]] (default synthetic = 6 houses x 6 days)")
    parser.add_argument("--start-date", default=DEFAULT_START_DATE,
                        help=f"first local day of every house, YYYY-MM-DD (default {DEFAULT_START_DATE})")
    parser.add_argument("--period-s", type=float,
                        help="one reading per channel and period: the mean power over it, like meters that "
                             "report once a minute (default: the source's own rates)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log source details")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the generator and print a closing summary."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.houses < 1 or args.days < 1:
        print("--houses and --days must be at least 1", file=sys.stderr)
        return 2
    if args.period_s is not None and args.period_s <= 0:
        print("--period-s must be positive", file=sys.stderr)
        return 2
    config = GeneratorConfig(houses=args.houses, days=args.days, seed=args.seed,
                             spikes_per_house_day=args.spikes_per_house_day,
                             start_date=args.start_date, source=args.source, period_s=args.period_s)
    started = time.perf_counter()
    try:
        summary = generate(config, args.out, args.format, progress=not args.no_progress)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    elapsed_s = time.perf_counter() - started
    print(
        f"houses {summary.houses:,} | house-days {summary.house_days:,} | readings {summary.readings:,} | "
        f"bytes {summary.bytes:,} ({summary.bytes / 2**20:,.1f} MiB in {summary.files:,} files) | "
        f"spikes {summary.spikes:,} | {elapsed_s:,.1f} s ({summary.readings / max(elapsed_s, 1e-9):,.0f} readings/s) "
        f"-> {summary.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

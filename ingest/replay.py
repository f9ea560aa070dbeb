"""Replay a dataset into Kafka: generated houses, a generated Parquet folder, or a REDD tree.

    python -m ingest.replay --source synthetic --houses 20 --days 1 --speed 60
    python -m ingest.replay --source parquet:var/gen/readings            # as fast as possible
    python -m ingest.replay --source redd:/data/redd/low_freq --speed 1  # real time

--speed 1 is real time, 60 is a minute per second, 0 (default) as fast as the broker
takes it. A paced synthetic replay interleaves its houses in event time, as live meters
would send; `--start-date yesterday --days 3 --from-hours-ago 2 --speed 60 --not-ahead` replays
the last two hours in two minutes, then goes on in real time (three days around today hold
every house's present, whatever its zone). Ctrl-C stops after flushing what was sent. Prints a progress bar and a
summary; rows that cannot be published go to a JSON-lines quarantine file.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from ingest import producer as producing
from smw import config, kafka_clients
from smw.init import topic_exists
from smw.jobs import quiet_logger
from smw.schema import NAMES

log = logging.getLogger(__name__)


DICTIONARY_COLUMNS = ["house_id", "label", "appliance"]


def parquet_batches(path: str, batch_rows: int = 200_000) -> Iterator[pa.RecordBatch]:
    """Readings of a Parquet dataset (e.g. a generator's readings/), file by file in path order.

    Paths sort by `date=YYYY-MM-DD` first, so each house's readings come in time order.
    Strings are read as dictionaries straight from Parquet's dictionary pages: the
    producer then never hashes a string per row.
    """
    file_format = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=DICTIONARY_COLUMNS))
    dataset = pads.dataset(path, format=file_format, partitioning="hive")
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        yield from fragment.to_batches(columns=list(NAMES), batch_size=batch_rows)


def generated_batches(houses: int, days: int, seed: int = 0, batch_rows: int = 200_000,
                      **options) -> Iterator[pa.RecordBatch]:
    """Houses generated on the fly (datasets.generator), a house-day at a time, strings as dictionaries."""
    from datasets import generator

    source = generator.Generator(generator.GeneratorConfig(houses, days, seed, **options))
    for house_day in source.iter_house_days():
        yield from source.to_table(house_day, dictionary=True).to_batches(max_chunksize=batch_rows)


def generated_in_time_order(houses: int, days: int, seed: int = 0, window_s: float = 60.0,
                            not_before_ts_s: float | None = None, **options) -> Iterator[pa.RecordBatch]:
    """Generated houses interleaved in event time, as live meters would send them (paced replays).

    All houses are generated first (a day of 50 REDD-rate houses is ~1 GB; use
    `period_s` for more), then each `window_s` of event time yields one slice per
    house, so readings go out in time order to within a window. Readings before
    `not_before_ts_s` are skipped (a live day joined in the middle).
    """
    from datasets import generator

    source = generator.Generator(generator.GeneratorConfig(houses, days, seed, **options))
    tables, times = [], []
    for plan in source.plans:
        parts = [source.to_table(source.house_day(plan, day), dictionary=True) for day in range(days)]
        table = pa.concat_tables(parts).combine_chunks()
        ts_s = table.column("ts_s").to_numpy()
        if not_before_ts_s is not None:
            first = int(np.searchsorted(ts_s, not_before_ts_s))
            table, ts_s = table.slice(first), ts_s[first:]
        if len(ts_s):
            tables.append(table)
            times.append(ts_s)
    if not tables:
        return
    start = min(float(t[0]) for t in times)
    end = max(float(t[-1]) for t in times)
    offsets = [0] * len(tables)
    edge = start + window_s
    while offsets and edge <= end + window_s:
        for i, (table, ts_s) in enumerate(zip(tables, times)):
            stop = int(np.searchsorted(ts_s, edge))
            if stop > offsets[i]:
                yield from table.slice(offsets[i], stop - offsets[i]).to_batches()
                offsets[i] = stop
        edge += window_s


def source_batches(spec: str, houses: int, days: int, seed: int, spikes_per_house_day: float,
                   speed: float = 0.0, start_date: str | None = None, period_s: float | None = None,
                   not_before_ts_s: float | None = None) -> tuple[Iterator[pa.RecordBatch], int | None]:
    """(batches, readings if known) for a --source spec."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        options = {"spikes_per_house_day": spikes_per_house_day, "period_s": period_s}
        if start_date:
            options["start_date"] = start_date
        if speed > 0 or not_before_ts_s is not None:
            # Paced: interleave houses so that every house is live at once.
            return generated_in_time_order(houses, days, seed, window_s=max(1.0, speed),
                                           not_before_ts_s=not_before_ts_s, **options), None
        return generated_batches(houses, days, seed, **options), None
    if start_date or period_s or not_before_ts_s is not None:
        raise ValueError("--start-date, --period-s and --from-hours-ago apply to --source synthetic only")
    if kind in ("parquet", "redd") and not Path(arg).exists():
        raise ValueError(f"--source {spec}: {arg} does not exist; write a dataset there with "
                         f"python -m datasets.generate --out DIR (readings in DIR/readings)")
    if kind == "parquet":
        total = pads.dataset(arg, format="parquet", partitioning="hive").count_rows()
        return parquet_batches(arg), total
    if kind == "redd":
        from datasets import redd

        return redd.iter_readings(arg), None
    raise ValueError(f"unknown source {spec!r}: use synthetic, parquet:PATH or redd:PATH")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="synthetic",
                        help="synthetic (generate on the fly), parquet:PATH or redd:PATH (default synthetic)")
    parser.add_argument("--houses", type=int, default=10, help="synthetic: houses (default 10)")
    parser.add_argument("--days", type=int, default=1, help="synthetic: days (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: seed (default 0)")
    parser.add_argument("--spikes-per-house-day", type=float, default=0.5, help="synthetic: spikes (default 0.5)")
    parser.add_argument("--start-date", help="synthetic: first local day, YYYY-MM-DD, 'today' or 'yesterday' (default "
                                             "2024-04-01); a live replay starts yesterday with --days 3, so that every "
                                             "house's own today is in it whatever its zone")
    parser.add_argument("--period-s", type=float,
                        help="synthetic: one mean reading per channel and period (default: REDD rates)")
    parser.add_argument("--from-hours-ago", type=float, metavar="H",
                        help="synthetic: skip readings older than H hours (0: join a live day at the present)")
    parser.add_argument("--not-ahead", action="store_true",
                        help="never send a reading before the wall clock reaches its time: a replay that starts "
                             "in the past runs at --speed until it catches up, then in real time")
    parser.add_argument("--speed", type=float, default=0.0,
                        help="1 = real time, 60 = accelerated 60x, 0 = as fast as possible (default)")
    parser.add_argument("--readings-per-message", type=int, default=producing.DEFAULT_READINGS_PER_MESSAGE,
                        help=f"most readings in one message (default {producing.DEFAULT_READINGS_PER_MESSAGE:,})")
    parser.add_argument("--lanes", type=int, default=producing.DEFAULT_LANES,
                        help=f"idempotent producers in parallel, houses spread over them (default {producing.DEFAULT_LANES})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quarantine", type=Path, help="quarantine file (default: DATA_DIR/quarantine/producer-*.jsonl)")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_topic", "data_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = config.from_args(args)
    if args.readings_per_message < 1 or args.lanes < 1 or args.speed < 0:
        parser.error("--readings-per-message and --lanes must be at least 1, --speed at least 0")
    try:
        named = {"today": dt.date.today(), "yesterday": dt.date.today() - dt.timedelta(days=1)}
        start_date = named[args.start_date].isoformat() if args.start_date in named else args.start_date
        if start_date:
            dt.date.fromisoformat(start_date)
        if args.period_s is not None and args.period_s <= 0:
            raise ValueError("--period-s must be positive")
        batches, total = source_batches(args.source, args.houses, args.days, args.seed, args.spikes_per_house_day,
                                        speed=args.speed, start_date=start_date, period_s=args.period_s,
                                        not_before_ts_s=None if args.from_hours_ago is None
                                        else time.time() - 3600 * args.from_hours_ago)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from kafka.errors import KafkaError
    from tqdm import tqdm

    stop = threading.Event()

    def interrupt(signum, _frame):
        log.info("signal %d: flushing what was sent, then stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            # kafka-python logs every failed attempt; the one line below says it.
            with quiet_logger("kafka"):
                kafka_producer = producing.make_lanes(settings, args.lanes)
        except kafka_clients.KafkaAuthError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KafkaError as exc:
            print(f"error: cannot reach Kafka at {settings.kafka_bootstrap} ({type(exc).__name__}); is it running "
                  "(make up) and is KAFKA_BOOTSTRAP right?", file=sys.stderr)
            return 1
        # The brokers do not create topics on first use: a producer would wait for the
        # topic's metadata with no word, for as long as it runs.
        try:
            with quiet_logger("kafka"):
                exists = topic_exists(settings, settings.kafka_topic)
        except (KafkaError, TimeoutError) as exc:
            kafka_producer.close()
            print(f"error: cannot list the topics of Kafka at {settings.kafka_bootstrap}: {exc}", file=sys.stderr)
            return 1
        if not exists:
            kafka_producer.close()
            print(f"error: Kafka topic {settings.kafka_topic!r} does not exist at {settings.kafka_bootstrap}; create "
                  "it with make init (it creates KAFKA_TOPIC), or give --kafka-topic an existing one", file=sys.stderr)
            return 1
        quarantine = producing.Quarantine(args.quarantine or producing.default_quarantine_path(settings))
        t0 = time.perf_counter()
        with tqdm(total=total, unit=" readings", unit_scale=True, desc=f"-> {settings.kafka_topic}",
                  disable=args.no_progress) as bar:
            try:
                stats = producing.publish(batches, kafka_producer, settings.kafka_topic,
                                          readings_per_message=args.readings_per_message, speed=args.speed,
                                          not_ahead=args.not_ahead, quarantine=quarantine, progress=bar, stop=stop,
                                          max_future_skew_s=float(settings.max_future_skew_s))
            finally:
                kafka_producer.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    seconds = time.perf_counter() - t0
    quarantined = sum(stats.quarantined.values())
    print(f"{stats.readings:,} readings in {stats.messages:,} messages ({stats.bytes / 2**20:.1f} MiB) "
          f"in {seconds:.1f} s = {stats.readings / max(seconds, 1e-9):,.0f} readings/s; delivered {stats.delivered:,}, "
          f"failed {stats.failed:,}, quarantined {quarantined:,} reading(s)"
          + (" (stopped early)" if stop.is_set() else "")
          + (f" -> {quarantine.path}" if quarantined else ""))
    return 1 if stats.failed else 0


if __name__ == "__main__":
    sys.exit(main())

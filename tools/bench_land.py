"""Benchmark the landing job: sustained readings/s from Kafka into the raw zone.

    python -m tools.bench_land [--readings 10000000] [--per-message 1000] [--repeats 3]

Fills a fresh topic once, then lands it `--repeats` times from scratch (new
checkpoint and output each time) with the available-now trigger, and prints each
run's readings/s (landing wall time, JVM start excluded) and the median. The topic
is deleted afterwards.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from ingest import producer as producing
from smw import config, kafka_clients, messages, zones
from smw.messages import Series

log = logging.getLogger(__name__)


def fill_topic(settings: config.Settings, readings: int, per_message: int, houses: int = 200, seed: int = 1) -> int:
    """Produce `readings` readings in messages of `per_message`; returns messages sent."""
    rng = np.random.default_rng(seed)
    t0 = 1303171200.0

    def records():
        for sent, start in enumerate(range(0, readings, per_message)):
            count = min(per_message, readings - start)
            ts_s = (t0 + (sent // houses) * per_message * 3.0 + np.arange(count) * 3.0).tolist()
            power_w = np.round(rng.gamma(2.0, 150.0, count), 3).tolist()
            yield messages.encode(f"h{sent % houses:05d}", [Series(3 + sent % 10, "lighting", "lighting", ts_s, power_w)])

    return producing.send_all(settings, records())


def land_once(spark, settings: config.Settings, max_offsets_per_trigger: int, files_per_trigger: int) -> float:
    """Land everything available with a fresh checkpoint; returns wall seconds."""
    from ingest import land

    t0 = time.perf_counter()
    query = land.start(spark, settings, once=True, trigger_interval="1 second",
                       max_offsets_per_trigger=max_offsets_per_trigger, files_per_trigger=files_per_trigger)
    query.awaitTermination()
    if query.exception():
        raise RuntimeError(f"landing failed: {query.exception()}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_land", description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=10_000_000, help="readings in the topic (default 10M)")
    parser.add_argument("--per-message", type=int, default=1000, help="readings per Kafka message (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="landing runs to take the median of (default 3)")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=20000)
    parser.add_argument("--files-per-trigger", type=int, default=2)
    config.add_arguments(parser, "kafka_bootstrap", "spark_master")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from smw import spark as spark_builder
    from smw.init import create_topics

    topic = f"bench-land-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="smw-bench-land-"))
    settings = config.from_args(args).replace(kafka_topic=topic)
    create_topics(settings, {topic: 4})
    try:
        t0 = time.perf_counter()
        sent = fill_topic(settings, args.readings, args.per_message)
        print(f"topic {topic}: {args.readings:,} readings in {sent:,} messages, "
              f"produced in {time.perf_counter() - t0:.1f} s")
        spark = spark_builder.session("smw-bench-land", settings, conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"})
        rates = []
        for run in range(args.repeats):
            run_settings = settings.replace(data_dir=str(work / f"run{run}"))
            seconds = land_once(spark, run_settings, args.max_offsets_per_trigger, args.files_per_trigger)
            landed = zones.read_raw(spark, run_settings).count()
            if landed != args.readings:
                raise RuntimeError(f"run {run}: landed {landed} readings, expected {args.readings}")
            rates.append(landed / seconds)
            print(f"run {run + 1}: {landed:,} readings landed in {seconds:.1f} s = {landed / seconds:,.0f} readings/s")
            shutil.rmtree(run_settings.data_dir, ignore_errors=True)
        print(f"landing median: {statistics.median(rates):,.0f} readings/s over {args.repeats} runs "
              f"(goal 500,000 readings/s)")
        spark.stop()
    finally:
        admin = kafka_clients.admin(settings)
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

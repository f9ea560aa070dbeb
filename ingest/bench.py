"""Benchmark the replay producer against kcat (librdkafka) on the local broker.

    python -m ingest.bench [--houses 4] [--days 1] [--repeats 5]

Generates the houses once into memory, then, alternating, `--repeats` times:

* producer: `ingest.producer.publish()` from the generator's batches (message
  cutting, orjson encoding, kafka-python with acks=all, idempotence, lz4) until
  every message is acknowledged;
* end to end: the same, with the generator producing the batches on the fly;
* kcat: the very same pre-serialised messages from a file, with acks=all,
  idempotence, lz4 and the same linger: the practical ceiling on this machine.

Each run writes to a fresh topic (deleted afterwards). Prints every run, the
medians, and producer / kcat.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ingest import producer as producing
from smw import config


def fresh_topic(settings: config.Settings, partitions: int) -> str:
    from smw.init import create_topics

    name = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    create_topics(settings, {name: partitions})
    return name


def delete_topics(settings: config.Settings, names: list[str]) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_list)
    try:
        admin.delete_topics(names)
    finally:
        admin.close()


def run_producer(settings: config.Settings, batches, topic: str) -> tuple[int, float]:
    kafka_producer = producing.make_producer(settings)
    t0 = time.perf_counter()
    try:
        stats = producing.publish(batches, kafka_producer, topic)
    finally:
        kafka_producer.close()
    seconds = time.perf_counter() - t0
    if stats.failed or stats.delivered != stats.messages:
        raise RuntimeError(f"{stats.failed} deliveries failed, {stats.delivered}/{stats.messages} acknowledged")
    return stats.readings, seconds


def run_kcat(settings: config.Settings, messages_file: Path, topic: str) -> float:
    command = [
        "kcat", "-P", "-b", settings.kafka_bootstrap, "-t", topic, "-K", "\t", "-l",
        "-X", "acks=all", "-X", "enable.idempotence=true", "-X", "linger.ms=20",
        "-X", "compression.codec=lz4", "-X", "batch.size=1048576", "-X", "message.max.bytes=8388608",
        str(messages_file),
    ]
    t0 = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"kcat failed: {result.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--houses", type=int, default=4, help="generated houses (default 4, ~2.9M readings/day)")
    parser.add_argument("--days", type=int, default=1, help="generated days (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side (default 5)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each fresh topic (default 4)")
    config.add_arguments(parser, "kafka_bootstrap")
    args = parser.parse_args(argv)
    if shutil.which("kcat") is None:
        print("error: kcat is not installed (Debian package kcat; `make bench-ingest` installs it)", file=sys.stderr)
        return 1
    import logging

    logging.basicConfig(level=logging.WARNING)
    from datasets import generator

    settings = config.from_args(args)
    batches = list(generator.iter_batches(args.houses, args.days, seed=1))
    readings = sum(b.num_rows for b in batches)
    work = Path(tempfile.mkdtemp(prefix="smw-bench-ingest-"))
    messages_file = work / "messages.tsv"
    stats = producing.PublishStats()
    with open(messages_file, "wb") as out:
        for batch in batches:
            for key, value, _, _ in producing.messages_from_batch(batch, 1000, producing.Quarantine(None), stats):
                out.write(key + b"\t" + value + b"\n")
    print(f"{readings:,} readings from {args.houses} house(s) x {args.days} day(s); "
          f"{messages_file.stat().st_size / 2**20:.0f} MiB of messages for kcat")

    topics: list[str] = []
    producer_rates, end_to_end_rates, kcat_rates = [], [], []
    try:
        for run in range(args.repeats):
            topics.append(fresh_topic(settings, args.partitions))
            sent, seconds = run_producer(settings, batches, topics[-1])
            producer_rates.append(sent / seconds)
            topics.append(fresh_topic(settings, args.partitions))
            sent, seconds = run_producer(settings, generator.iter_batches(args.houses, args.days, seed=1), topics[-1])
            end_to_end_rates.append(sent / seconds)
            topics.append(fresh_topic(settings, args.partitions))
            kcat_rates.append(readings / run_kcat(settings, messages_file, topics[-1]))
            print(f"run {run + 1}: producer {producer_rates[-1]:,.0f}, with generation {end_to_end_rates[-1]:,.0f}, "
                  f"kcat {kcat_rates[-1]:,.0f} readings/s", flush=True)
    finally:
        delete_topics(settings, topics)
        shutil.rmtree(work, ignore_errors=True)
    producer_median, kcat_median = statistics.median(producer_rates), statistics.median(kcat_rates)
    print(f"medians over {args.repeats} runs: producer {producer_median:,.0f} readings/s, "
          f"with generation {statistics.median(end_to_end_rates):,.0f}, kcat {kcat_median:,.0f}; "
          f"producer/kcat = {producer_median / kcat_median:.2f} (goals: 500,000 readings/s and 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the replay producer against kcat (librdkafka) on the local broker.

    python -m tools.bench_ingest [--houses 4] [--days 1] [--repeats 5] [--lanes 2] [--readings-per-message 10000]

Generates the houses once into memory (strings dictionary-encoded, as
`ingest.replay` reads them), serialises the messages once for kcat, then,
alternating, `--repeats` times, each into a fresh topic (deleted afterwards):

* producer: `ingest.producer.publish()` from the in-memory batches (message cutting,
  orjson encoding, kafka-python lanes with acks=all, idempotence, lz4) until every
  message is acknowledged;
* kcat: the very same pre-serialised messages from a file, with acks=all,
  idempotence and the same codec, linger and batch size: the practical ceiling;
* end to end (`--end-to-end`): the producer with the generator computing the
  houses on the fly (bounded by the generator's own speed).

Prints every run, the medians, and producer / kcat.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ingest import producer as producing
from ingest import replay
from smw import config, kafka_clients

log = logging.getLogger(__name__)


def fresh_topic(settings: config.Settings, partitions: int) -> str:
    from smw.init import create_topics

    name = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    create_topics(settings, {name: partitions})
    return name


def delete_topics(settings: config.Settings, names: list[str]) -> None:
    if not names:
        return
    admin = kafka_clients.admin(settings)
    try:
        admin.delete_topics(names)
    finally:
        admin.close()


def run_producer(settings: config.Settings, batches, topic: str, lanes: int, readings_per_message: int,
                 overrides: dict) -> tuple[int, float]:
    """(readings, seconds) of one publish run, connection set-up excluded, all acknowledged."""
    kafka_producer = producing.make_lanes(settings, lanes, **overrides)
    try:
        t0 = time.perf_counter()
        stats = producing.publish(batches, kafka_producer, topic, readings_per_message=readings_per_message)
        seconds = time.perf_counter() - t0
    finally:
        kafka_producer.close()
    if stats.failed or stats.delivered != stats.messages:
        raise RuntimeError(f"{stats.failed} deliveries failed, {stats.delivered}/{stats.messages} acknowledged")
    return stats.readings, seconds


def kcat_command(settings: config.Settings, topic: str, messages_file: Path, overrides: dict) -> list[str]:
    """kcat with the producer's delivery settings: acks=all, idempotence, codec, linger, batch size."""
    return [
        "kcat", "-P", "-b", settings.kafka_bootstrap, "-t", topic, "-K", "\t", "-l",
        "-X", "acks=all", "-X", "enable.idempotence=true",
        "-X", f"linger.ms={overrides['linger_ms']}",
        "-X", f"compression.codec={overrides['compression_type'] or 'none'}",
        "-X", f"batch.size={overrides['batch_size']}",
        "-X", f"message.max.bytes={overrides['max_request_size']}",
        *kcat_security(settings),
        str(messages_file),
    ]


def kcat_security(settings: config.Settings) -> list[str]:
    """The configured Kafka security (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*) as librdkafka properties."""
    kwargs = settings.kafka_client_kwargs()
    names = {"security_protocol": "security.protocol", "sasl_mechanism": "sasl.mechanisms",
             "sasl_plain_username": "sasl.username", "sasl_plain_password": "sasl.password"}
    return [item for key, value in kwargs.items() for item in ("-X", f"{names[key]}={value}")]


def run_kcat(command: list[str]) -> float:
    """Seconds kcat takes from start to its exit (it exits once every message is acknowledged)."""
    t0 = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"kcat failed: {result.stderr[-2000:]}")
    return seconds


def write_messages(batches, readings_per_message: int, path: Path) -> Path:
    """The producer's own messages, `key<TAB>value` a line, for kcat -K '\\t' -l."""
    stats = producing.PublishStats()
    with open(path, "wb") as out:
        for batch in batches:
            for key, value, _, _ in producing.messages_from_batch(batch, readings_per_message,
                                                                  producing.Quarantine(None), stats):
                out.write(key + b"\t" + value + b"\n")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--houses", type=int, default=4, help="generated houses (default 4, 2.6M readings a day)")
    parser.add_argument("--days", type=int, default=1, help="generated days (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side (default 5)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each fresh topic (default 4)")
    parser.add_argument("--lanes", type=int, default=producing.DEFAULT_LANES,
                        help=f"idempotent producers in parallel (default {producing.DEFAULT_LANES})")
    parser.add_argument("--readings-per-message", type=int, default=producing.DEFAULT_READINGS_PER_MESSAGE,
                        help=f"readings per message (default {producing.DEFAULT_READINGS_PER_MESSAGE})")
    parser.add_argument("--linger-ms", type=int, default=producing.PRODUCER_DEFAULTS["linger_ms"],
                        help="producer and kcat linger (default: the producer's)")
    parser.add_argument("--batch-size", type=int, default=producing.PRODUCER_DEFAULTS["batch_size"],
                        help="producer and kcat batch size in bytes (default: the producer's)")
    parser.add_argument("--compression", choices=["lz4", "gzip", "none"],
                        default=producing.PRODUCER_DEFAULTS["compression_type"] or "none",
                        help="codec of both sides (default: the producer's)")
    parser.add_argument("--kcat-reference", type=int, nargs="*", default=[1000],
                        help="kcat also sends messages of these sizes, to show its best (default 1000)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time the producer with the generator computing houses on the fly")
    config.add_arguments(parser, "kafka_bootstrap")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if shutil.which("kcat") is None:
        print("error: kcat is not installed (Debian package kcat; `make bench-ingest` installs it)", file=sys.stderr)
        return 1
    settings = config.from_args(args)
    overrides = {"linger_ms": args.linger_ms, "batch_size": args.batch_size,
                 "compression_type": None if args.compression == "none" else args.compression,
                 "max_request_size": producing.PRODUCER_DEFAULTS["max_request_size"]}
    batches = list(replay.generated_batches(args.houses, args.days, seed=1))
    readings = sum(b.num_rows for b in batches)
    work = Path(tempfile.mkdtemp(prefix="smw-bench-ingest-"))
    sizes = [args.readings_per_message] + [n for n in args.kcat_reference if n != args.readings_per_message]
    files = {size: write_messages(batches, size, work / f"messages-{size}.tsv") for size in sizes}
    print(f"{readings:,} readings from {args.houses} house(s) x {args.days} day(s) in "
          f"{files[args.readings_per_message].stat().st_size / 2**20:.0f} MiB of messages of "
          f"{args.readings_per_message:,} readings; acks=all, idempotence, {args.compression}, linger "
          f"{args.linger_ms} ms, batch {args.batch_size:,} B; producer lanes {args.lanes}", flush=True)

    topics: list[str] = []
    producer_rates, end_to_end_rates = [], []
    kcat_rates: dict[int, list[float]] = {size: [] for size in sizes}
    try:
        for run in range(args.repeats):
            topics.append(fresh_topic(settings, args.partitions))
            sent, seconds = run_producer(settings, batches, topics[-1], args.lanes, args.readings_per_message, overrides)
            producer_rates.append(sent / seconds)
            for size, path in files.items():
                topics.append(fresh_topic(settings, args.partitions))
                kcat_rates[size].append(readings / run_kcat(kcat_command(settings, topics[-1], path, overrides)))
            line = f"run {run + 1}: producer {producer_rates[-1]:,.0f}, kcat " + ", ".join(
                f"{rates[-1]:,.0f} ({size:,}/message)" for size, rates in kcat_rates.items())
            if args.end_to_end:
                topics.append(fresh_topic(settings, args.partitions))
                sent, seconds = run_producer(settings, replay.generated_batches(args.houses, args.days, seed=1),
                                             topics[-1], args.lanes, args.readings_per_message, overrides)
                end_to_end_rates.append(sent / seconds)
                line += f", producer with generation {end_to_end_rates[-1]:,.0f}"
            print(line + " readings/s", flush=True)
    finally:
        delete_topics(settings, topics)
        shutil.rmtree(work, ignore_errors=True)
    producer_median = statistics.median(producer_rates)
    kcat_medians = {size: statistics.median(rates) for size, rates in kcat_rates.items()}
    same = kcat_medians[args.readings_per_message]
    best_size = max(kcat_medians, key=kcat_medians.get)
    print(f"medians over {args.repeats} runs: producer {producer_median:,.0f} readings/s; kcat, same messages "
          f"{same:,.0f} readings/s: producer/kcat = {producer_median / same:.2f}")
    if best_size != args.readings_per_message:
        print(f"kcat's best here is {kcat_medians[best_size]:,.0f} readings/s with {best_size:,} readings/message: "
              f"producer/best kcat = {producer_median / kcat_medians[best_size]:.2f}")
    if end_to_end_rates:
        print(f"producer with the generator computing houses on the fly: {statistics.median(end_to_end_rates):,.0f} "
              f"readings/s (bounded by the generator)")
    print("goals: 500,000 readings/s and 0.5 x kcat")
    return 0


if __name__ == "__main__":
    sys.exit(main())

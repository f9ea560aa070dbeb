"""Benchmark the alert job: sustained readings/s and alert latency, produce time to RethinkDB changefeed.

    python -m tools.bench_stream [--rates 10000,40000,80000,160000] [--duration-s 30] [--warmup-s 10]
                                 [--scale-test 40000:4]

One alert job (local[2], `--trigger`) runs on a fresh topic for the whole run. For
each rate a producer process sends REDD-like houses (8 meters, 1 reading per meter
per second; houses = rate / 8) as one message per house every 2 s (two readings per
meter), and injects overshoots: 1,000 W on a meter whose threshold is 100 W for three
readings, so the third reading opens an episode. A changefeed on the RethinkDB
`alerts` table records when each alert arrives; latency = arrival - wall time at
which the message holding the opening reading was produced. Throughput is the
job's readings per second over the measured window (from its observed metrics),
with the backlog left when the window closes: a job that keeps up has none.

The scale test offers one rate twice: as above, then spread over N times as many
meters, each reporting every N seconds (same readings/s, same messages/s and message
size), and compares the median micro-batch time: a job whose cost followed the size of
the fleet rather than its readings would slow down by about N.
Works in its own keyspace and database (`--namespace`, default smw_bench).
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid

from smw import config, kafka_clients, messages
from smw.alert import RETHINKDB_TABLE
from smw.messages import Series

log = logging.getLogger("tools.bench_stream")

METERS = tuple(range(3, 11))
READINGS_PER_HOUSE_S = len(METERS)
SPIKE_W, BASE_W, THRESHOLD_W = 1000.0, 50.0, 100.0
# Every meter has a usual run length, so the job times its runs as it does a fridge's defrosts.
USUAL_RUN_S = 1800.0


def house_id(n: int) -> str:
    return f"b{n:05d}"


READINGS_PER_SERIES = 2  # readings of one meter per message


def producer(settings: config.Settings, houses: int, duration_s: float, reading_interval_s: float, spikes_per_s: float,
             seed: int, results) -> None:
    """Produce `houses` houses for `duration_s`, a reading per meter every `reading_interval_s`; puts
    {(house, meter, opening ts_s): produce wall time} and counts."""
    import random

    # Each run spikes other meters: a meter spiking again within the cooldown would continue
    # its earlier episode (same alert id) rather than open a new one.
    rng = random.Random(seed)
    client = kafka_clients.producer(settings, acks=1, linger_ms=5,
                                    batch_size=512 << 10, max_request_size=8 << 20)
    spiking: dict[tuple[int, int], float] = {}  # (house, meter) -> spike start ts_s
    opened_at: dict = {}
    sent_readings = 0
    start = time.time()
    tick = 0
    interval_s = READINGS_PER_SERIES * reading_interval_s
    spike_s = 3 * reading_interval_s  # three readings above: the third opens the episode
    # Each tick covers interval_s of every house; houses are spread over the tick.
    while time.time() - start < duration_s:
        tick_start = start + tick * interval_s
        window_ts = [tick_start + k * reading_interval_s for k in range(READINGS_PER_SERIES)]
        for _ in range(rng.randrange(0, 2 * max(1, int(spikes_per_s * interval_s)) + 1)):
            spiking.setdefault((rng.randrange(houses), rng.choice(METERS)), window_ts[0])
        for h in range(houses):
            due = tick_start + interval_s * h / houses
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            series = []
            for meter in METERS:
                spike_start = spiking.get((h, meter))
                powers = [SPIKE_W if spike_start is not None and 0 <= ts - spike_start < spike_s else BASE_W
                          for ts in window_ts]
                series.append(Series(meter, "heater", "heater", window_ts, powers))
            key, value = messages.encode(house_id(h), series)
            client.send(settings.kafka_topic, key=key, value=value)
            produced_s = time.time()
            sent_readings += READINGS_PER_HOUSE_S * len(window_ts)
            for meter in METERS:
                spike_start = spiking.get((h, meter))
                if spike_start is not None and spike_start + 2 * reading_interval_s in window_ts:
                    opened_at[(house_id(h), meter, spike_start)] = produced_s
                    del spiking[(h, meter)]
        tick += 1
    client.flush(timeout=60)
    client.close()
    results.put({"opened_at": opened_at, "readings": sent_readings, "seconds": time.time() - start})


class Changefeed(threading.Thread):
    """Records the arrival wall time of each new alert on the RethinkDB changefeed."""

    def __init__(self, settings: config.Settings):
        super().__init__(name="changefeed", daemon=True)
        self.settings = settings
        self.arrivals: dict = {}
        self.ready = threading.Event()

    def run(self) -> None:
        from smw import rethink

        conn = rethink.connect(self.settings)
        feed = rethink.r.table(RETHINKDB_TABLE).changes().run(conn)
        self.ready.set()
        for change in feed:
            doc = change.get("new_val")
            if doc and change.get("old_val") is None:
                self.arrivals.setdefault((doc["house_id"], doc["meter"], doc["start_ts_s"]), time.time())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_stream", description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10000,40000,80000,160000",
                        help="readings/s to offer, comma separated (default 10000,40000,80000,160000)")
    parser.add_argument("--scale-test", default="40000:4", metavar="RATE:N",
                        help="offer RATE readings/s over 1x and over N x the meters, compare the median batch "
                             "time (default 40000:4; 'none' skips it)")
    parser.add_argument("--duration-s", type=float, default=30.0, help="measured seconds per rate (default 30)")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="seconds per rate before measuring (default 10)")
    parser.add_argument("--spikes-per-s", type=float, default=2.0, help="overshoots injected per second (default 2)")
    parser.add_argument("--trigger", default="0 seconds", help="job trigger (default 0 seconds: back to back)")
    parser.add_argument("--namespace", default="smw_bench", help="Cassandra keyspace and RethinkDB db")
    config.add_arguments(parser, "kafka_bootstrap", "spark_master")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from smw import cql, init
    from smw import spark as spark_builder
    from streaming import alerts, episodes

    rates = [int(r) for r in args.rates.split(",") if r]
    runs = [(rate, 1) for rate in rates]
    if args.scale_test != "none":
        scale_rate, scale = (int(part) for part in args.scale_test.split(":"))
        runs += [(scale_rate, 1), (scale_rate, scale)]
    topic = f"bench-alerts-{uuid.uuid4().hex[:6]}"
    settings = config.from_args(args).replace(
        cassandra_keyspace=args.namespace, rethinkdb_db=args.namespace, kafka_topic=topic,
        data_dir=tempfile.mkdtemp(prefix="smw-bench-"), spark_master=args.spark_master or "local[2]")
    init.create_cassandra(settings)
    init.create_rethinkdb(settings)
    init.create_topics(settings, {topic: 4})
    houses_max = max(rate * scale for rate, scale in runs) // READINGS_PER_HOUSE_S
    handle, session = cql.connect(settings)
    from cassandra.concurrent import execute_concurrent_with_args

    insert = session.prepare("INSERT INTO thresholds (house_id, meter, appliance, threshold_w, min_run_s) "
                             "VALUES (?, ?, ?, ?, ?)")
    execute_concurrent_with_args(session, insert, [(house_id(h), m, "heater", THRESHOLD_W, USUAL_RUN_S)
                                                   for h in range(houses_max) for m in METERS], concurrency=64)
    handle.shutdown()

    feed = Changefeed(settings)
    feed.start()
    feed.ready.wait(10)
    spark = spark_builder.session("smw-bench-alerts", settings, conf={
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2",
        "spark.sql.streaming.numRecentProgressUpdates": "10000"})
    # The table is the output: Spark's and the Cassandra server's notices would cut through it.
    spark.sparkContext.setLogLevel("ERROR")
    logging.getLogger("cassandra").setLevel(logging.ERROR)
    rules = episodes.Rules(no_data_after_s=3600.0)
    alert_query, batches = alerts.start(spark, settings, rules, trigger_interval=args.trigger)
    print(f"{'offered/s':>10} {'meters':>8} {'sustained/s':>12} {'backlog':>9} {'alerts':>7} "
          f"{'p50 s':>7} {'p95 s':>7} {'p99 s':>7}  batches (median s)")
    ctx = multiprocessing.get_context("spawn")
    medians = []
    try:
        for run, (rate, scale) in enumerate(runs):
            houses = rate * scale // READINGS_PER_HOUSE_S
            results = ctx.Queue()
            proc = ctx.Process(target=producer, args=(settings, houses, args.warmup_s + args.duration_s,
                                                      float(scale), args.spikes_per_s, run, results))
            proc.start()
            time.sleep(args.warmup_s)
            window_start = time.time()
            time.sleep(args.duration_s)
            window_end = time.time()
            produced = results.get(timeout=120)
            proc.join()
            progress = [p for p in alert_query.recentProgress
                        if window_start <= _progress_time(p) <= window_end]
            processed = sum(p.get("observedMetrics", {}).get("readings", {}).get("readings", 0) for p in progress)
            durations = [p["durationMs"].get("triggerExecution", 0) / 1000 for p in progress]
            median_s = statistics.median(durations) if durations else float("nan")
            medians.append(median_s)
            # Let the job drain, then count what it still had to do when the window closed.
            time.sleep(5 * scale)
            later = [p for p in alert_query.recentProgress if _progress_time(p) > window_end]
            backlog = sum(p.get("observedMetrics", {}).get("readings", {}).get("readings", 0) for p in later)
            latencies = [feed.arrivals[k] - t for k, t in produced["opened_at"].items()
                         if k in feed.arrivals and window_start <= t <= window_end]
            missing = sum(1 for k, t in produced["opened_at"].items() if k not in feed.arrivals)
            print(f"{rate:>10,} {houses * len(METERS):>8,} {processed / args.duration_s:>12,.0f} {backlog:>9,} "
                  f"{len(latencies):>7} {percentile(latencies, 50):>7.2f} {percentile(latencies, 95):>7.2f} "
                  f"{percentile(latencies, 99):>7.2f}  {len(durations)} ({median_s:.2f})"
                  + (f"  [{missing} spikes without alert]" if missing else ""), flush=True)
        if args.scale_test != "none":
            print(f"scale test: {scale_rate:,} readings/s over {scale} x the meters: median batch "
                  f"{medians[-1]:.2f} s against {medians[-2]:.2f} s, ratio {medians[-1] / medians[-2]:.2f} "
                  f"(goal <= 1.3)")
    finally:
        alert_query.stop()
        alerts.close(batches)
        spark.stop()
        admin = kafka_clients.admin(settings)
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()
    return 0


def _progress_time(progress: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    raise SystemExit(main())

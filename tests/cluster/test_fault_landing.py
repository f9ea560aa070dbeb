"""A broker SIGKILLed while the replay produces and the landing job lands: nothing lost, nothing twice.

Generated houses are replayed into a fresh topic of the cluster (3 replicas, min.insync.replicas 2;
the replay's idempotent producers with acks=all, SASL/SCRAM) while the landing job runs on the
cluster's Spark master (its code and Python shipped, the raw zone outside the checkout, which the
workers cannot see). Mid-replay the broker that leads the most partitions being written is killed;
it is started again once the producers write to the new leaders. When the landing job has committed
every offset of the topic, its raw zone must hold exactly the readings `datasets.generate` wrote
for the same houses: as many, and the same multiset of rows.

Recovery figures: from the kill until the producers' writes reach each partition the dead broker
led, until the landing job has committed readings written to them after the kill, and the restart
until the broker is back in every partition's in-sync replicas.
"""
from __future__ import annotations

import statistics
import subprocess
import time
import uuid

import duckdb
import pytest

from smw import config, init
from tests.cluster import faults
from tools import cluster as cluster_tool

pytestmark = [pytest.mark.cluster, pytest.mark.disruptive]

# 12 houses x 1 day, a mean per channel every 10 s: ~1.9 M readings. The replay interleaves the
# houses in event time at SPEED x real time (~40 s for the ~27 h of event time the houses' zones
# span), as live meters would send them.
GENERATED = ["--houses", "12", "--days", "1", "--seed", "21", "--period-s", "10"]
SPEED = "2400"
PARTITIONS = 6
KILL_AFTER_S = 12.0  # after the first readings reach the topic
RESTART_AFTER_RECOVERY_S = 5.0  # the broker is started again this long after the producers recovered


def test_a_broker_killed_during_replay_and_landing_loses_and_duplicates_nothing(cluster, tmp_path_factory, figures,
                                                                                request):
    label = "broker killed during replay and landing"
    work = faults.outside_checkout(tmp_path_factory.mktemp("fault-landing"))
    generated = work / "generated"
    made = subprocess.run(faults.python_m("datasets.generate", *GENERATED, "--out", str(generated), "--no-progress"),
                          cwd=config.ROOT, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]

    topic = f"fault-landing-{uuid.uuid4().hex[:8]}"
    settings = faults.cluster_settings(cluster, kafka_topic=topic, data_dir=str(work / "data"))
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == ("3", "2")
    init.create_topics(settings, {topic: PARTITIONS})
    request.addfinalizer(lambda: init.delete_topic(settings, topic))  # after the cluster is whole again
    kafka = faults.Kafka(settings, topic)
    env = faults.job_env(settings, SPARK_MASTER=cluster.spark_master.url)
    checkpoint = work / "data" / "checkpoints" / "land"
    offsets = commits = None
    with faults.whole_again(cluster, figures, label), \
            faults.Job("land", faults.python_m("ingest.land", "--trigger", "2 seconds"), env, work / "land.log") as land:
        try:
            land.wait_for(r"landing topic", 300)
            offsets = faults.Sampler(kafka.end_offsets)
            commits = faults.Sampler(lambda: faults.committed_batches(checkpoint), interval_s=0.2)
            replay = faults.Job("replay", faults.python_m(
                "ingest.replay", "--source", "synthetic", *GENERATED, "--speed", SPEED, "--no-progress"),
                env, work / "replay.log")
            with replay:
                first = faults.wait_until(lambda: offsets.first(lambda o: sum(o.values()) > 0), 120,
                                          "the first readings reach the topic")
                time.sleep(max(0.0, first + KILL_AFTER_S - time.monotonic()))
                assert replay.running, f"the replay ended before the kill: raise GENERATED's size\n{replay.tail()}"

                # The broker leading the most partitions that received readings in the last 3 s.
                now = offsets.latest()
                before = offsets.at(time.monotonic() - 3.0)
                written = [p for p in now if now[p] > before[p]]
                leaders = {p: d["leader"] for p, d in kafka.describe().items()}
                victim = max(sorted(set(leaders.values())), key=lambda b: sum(leaders[p] == b for p in written))
                led = [p for p in written if leaders[p] == victim]
                assert led, f"no partition written to has a leader: {leaders}, written {written}"
                name = f"kafka-{victim}"
                at_kill = offsets.latest()
                killed = time.monotonic()
                cluster_tool.kill(name, cluster)

                produced = faults.wait_until(lambda: land.check() and offsets.first(
                    lambda o: all(o[p] > at_kill[p] for p in led), after=killed), 180,
                    f"the producers write to the partitions {name} led ({led})")
                assert replay.running, "the replay ended before its writes to the dead broker's partitions resumed"
                time.sleep(RESTART_AFTER_RECOVERY_S)
                restarted = time.monotonic()
                cluster_tool.start(name, cluster, timeout_s=300)
                answering = time.monotonic()
                in_sync = faults.wait_until(lambda: kafka.isr_holds(victim) and time.monotonic(), 300,
                                            f"{name} back in the in-sync replicas of every partition", interval_s=0.5)

                assert replay.finish(600) == 0, replay.tail()
            summary = replay.found(r"readings in .* messages")
            assert summary and ", failed 0," in summary[-1][1] and "quarantined 0 " in summary[-1][1], replay.tail()
            replayed = int(summary[-1][1].split(" readings in ")[0].split()[-1].replace(",", ""))

            # The landing job goes on until it has committed every offset of the topic.
            ends = kafka.end_offsets()
            caught_up = faults.wait_until(
                lambda: land.check() and any(batch.get(topic) == ends
                                             for batch in faults.committed_batches(checkpoint).values())
                and time.monotonic(), 300, f"the landing job commits the topic's end offsets {ends}", interval_s=0.5)
            landed = faults.wait_until(lambda: commits.first(lambda b: any(
                all(batch.get(topic, {}).get(p, 0) > at_kill[p] for p in led) for batch in b.values()),
                after=killed), 60, "the landing job commits readings written after the kill")
            assert land.stop() == 0, land.tail()
        finally:
            for sampler in (offsets, commits):
                if sampler is not None:
                    sampler.stop()
            kafka.close()

    # The raw zone against what was generated: every row once, nothing else.
    files = faults.sink_files(work / "data" / "landing")
    raw_files = [str(f) for f in files if "zone=raw" in f.parts]
    assert raw_files and not [f for f in files if "zone=quarantine" in f.parts], files
    db = duckdb.connect()
    db.execute("SET enable_progress_bar = false")
    for view, source in (("raw", raw_files), ("generated", str(generated / "readings" / "**" / "*.parquet"))):
        db.read_parquet(source, hive_partitioning=True).create_view(f"{view}_files")
        db.execute(f"CREATE VIEW {view} AS SELECT house_id, meter, label, appliance, ts_s, power_w, "
                   f"CAST(date AS VARCHAR) AS date FROM {view}_files")
    count = db.execute("SELECT (SELECT count(*) FROM generated), (SELECT count(*) FROM raw)").fetchone()
    lost = db.execute("SELECT count(*) FROM (SELECT * FROM generated EXCEPT ALL SELECT * FROM raw)").fetchone()[0]
    extra = db.execute("SELECT count(*) FROM (SELECT * FROM raw EXCEPT ALL SELECT * FROM generated)").fetchone()[0]
    twice = db.execute("SELECT count(*) FROM (SELECT house_id, meter, ts_s FROM raw GROUP BY ALL "
                       "HAVING count(*) > 1)").fetchone()[0]
    assert count[0] > 1_000_000
    assert (lost, extra, twice) == (0, 0, 0), f"{lost} generated readings not landed, {extra} landed rows not " \
                                              f"generated, {twice} keys landed more than once"
    assert count[1] == count[0] == replayed

    batch_times = sorted(t for t, _ in land.found(r"batch \d+: [1-9]\d* Kafka records"))
    intervals = [b - a for a, b in zip(batch_times, batch_times[1:])]
    retries = len(land.found(r"Error in attempt \d+ getting Kafka offsets"))
    figures(label, f"{count[0]:,} readings replayed at {SPEED}x, {name} (leader of {len(led)} of the "
                   f"{len(written)} partitions being written) SIGKILLed {killed - first:.1f} s after the first; "
                   f"writes reach its partitions' new leaders {produced - killed:.1f} s after the kill; the landing "
                   f"job commits readings written after it {landed - killed:.1f} s after the kill (median "
                   f"{statistics.median(intervals) if intervals else float('nan'):.1f} s between its batches; its "
                   f"Kafka offset lookup timed out and was retried {retries} time(s)); "
                   f"{name} restarted and answering in {answering - restarted:.1f} s, back in every ISR "
                   f"{in_sync - restarted:.1f} s after its start; every offset landed {caught_up - killed:.1f} s "
                   f"after the kill; raw zone = generated: {count[1]:,} rows, 0 lost, 0 twice")

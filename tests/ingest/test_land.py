"""Landing Kafka into the raw zone against the real broker: exact contents, crash safety."""
import collections
import random
import subprocess
import sys

import pytest
from kafka import KafkaProducer

from ingest import land
from smw import config, messages, zones
from smw.messages import Series

pytestmark = [pytest.mark.integration, pytest.mark.spark]

MALFORMED = [b"garbage", b'{"v": 2, "type": "readings"}', b"",
             b'{"v":1,"type":"readings","house_id":"h","series":[{"meter":1,"label":"a","appliance":"a",'
             b'"ts_s":[1e9,2e9],"power_w":[1.0]}]}']


def produce_readings(settings, houses=4, meters=3, messages_per_meter=5, per_message=20, malformed_every=0, seed=7):
    """Produce valid messages (and malformed ones interleaved); returns (expected readings, malformed values)."""
    rng = random.Random(seed)
    expected, bad = [], []
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_list, acks="all", linger_ms=5)
    sent = 0
    try:
        for batch in range(messages_per_meter):
            for h in range(houses):
                house = f"h{h:03d}"
                series = []
                for meter in range(1, meters + 1):
                    t0 = 1303171000.0 + batch * per_message * 3 + meter * 0.25
                    ts = [t0 + 3 * i for i in range(per_message)]
                    power = [round(rng.uniform(-5, 3000), 3) for _ in ts]
                    series.append(Series(meter, f"label{meter}", f"appliance{meter}", ts, power))
                    expected += [(house, meter, t, p) for t, p in zip(ts, power)]
                key, value = messages.encode(house, series)
                producer.send(settings.kafka_topic, key=key, value=value)
                sent += 1
                if malformed_every and sent % malformed_every == 0:
                    raw = MALFORMED[len(bad) % len(MALFORMED)]
                    producer.send(settings.kafka_topic, key=house.encode(), value=raw)
                    bad.append(raw)
        producer.flush(timeout=60)
    finally:
        producer.close()
    return expected, bad


def landed(spark, settings):
    raw = zones.read_raw(spark, settings)
    return collections.Counter(
        (r.house_id, r.meter, r.ts_s, r.power_w) for r in raw.select("house_id", "meter", "ts_s", "power_w").collect()
    )


def test_once_lands_exactly_the_valid_readings_and_quarantines_the_rest(spark, kafka_ready, topic, tmp_path):
    settings = kafka_ready.replace(kafka_topic=topic, data_dir=str(tmp_path / "data"))
    expected, bad = produce_readings(settings, malformed_every=3)
    assert bad
    query = land.start(spark, settings, once=True, trigger_interval="1 second",
                       max_offsets_per_trigger=7, files_per_trigger=2)
    query.awaitTermination(timeout=300)
    assert query.exception() is None

    assert landed(spark, settings) == collections.Counter(expected)
    quarantine = zones.read_quarantine(spark, settings).collect()
    assert sorted(row.value for row in quarantine) == sorted(bad)
    assert all(row.topic == topic and row.error for row in quarantine)
    assert len({(row.partition, row.offset) for row in quarantine}) == len(bad)

    # A second run finds nothing new: nothing is landed twice.
    land.start(spark, settings, once=True, trigger_interval="1 second",
               max_offsets_per_trigger=7, files_per_trigger=2).awaitTermination(timeout=300)
    assert landed(spark, settings) == collections.Counter(expected)


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(spark, kafka_ready, topic, tmp_path,
                                                                     sigkill_after_commits):
    settings = kafka_ready.replace(kafka_topic=topic, data_dir=str(tmp_path / "data"))
    expected, _ = produce_readings(settings, houses=6, messages_per_meter=20, per_message=50)
    command = [sys.executable, "-m", "ingest.land", "--trigger", "1 second", "--max-offsets-per-trigger", "3",
               "--kafka-topic", topic, "--data-dir", settings.data_dir, "--spark-master", "local[2]"]
    commits = zones.checkpoint(settings, land.QUERY_NAME) / "commits"
    # Kill it once a few batches are committed, while more are still to come.
    sigkill_after_commits(command, commits, 4, tmp_path / "land.log")
    partial = landed(spark, settings)
    assert 0 < sum(partial.values()) < len(expected)  # it really was killed mid-stream
    assert not partial - collections.Counter(expected)  # and what it landed is right

    restart = subprocess.run(command + ["--once"], capture_output=True, text=True, cwd=config.ROOT, timeout=600)
    assert restart.returncode == 0, restart.stdout[-3000:] + restart.stderr[-3000:]
    assert landed(spark, settings) == collections.Counter(expected)

"""SIGKILL the alert job mid-stream, restart it from its checkpoint: no duplicate, no missing alert."""
import math
import subprocess
import sys

import pandas as pd
import pytest

from smw import config, zones
from streaming import alerts, episodes

pytestmark = [pytest.mark.integration, pytest.mark.spark]

T0 = 1_711_962_000.0
HOUSES, METERS, MESSAGES = 4, 2, 40
READINGS_PER_MESSAGE = 10  # 30 s of one house per message, readings every 3 s


def power_w(house: int, meter: int, message: int, i: int) -> float:
    """Mostly 50 W, with 12-30 s spikes at 400 W on a few messages per meter."""
    spiky = (message + 3 * house + 5 * meter) % 7 == 0
    return 400.0 if spiky and 2 <= i <= 2 + 4 + (house + message) % 6 else 50.0


def dataset(prefix: str):
    """{message number: {house_id: [Series]}} and the same readings as one frame for the reference run."""
    from smw.messages import Series

    by_message, rows = [], []
    for message in range(MESSAGES):
        houses = {}
        for house in range(HOUSES):
            house_id = f"{prefix}{house}"
            series = []
            for meter in range(3, 3 + METERS):
                ts_s = [T0 + (message * READINGS_PER_MESSAGE + i) * 3.0 for i in range(READINGS_PER_MESSAGE)]
                powers = [power_w(house, meter, message, i) for i in range(READINGS_PER_MESSAGE)]
                series.append(Series(meter, "heater", "heater", ts_s, powers))
                rows += [(house_id, meter, "heater", t, p, 100.0, math.nan, math.nan) for t, p in zip(ts_s, powers)]
            houses[house_id] = series
        by_message.append(houses)
    frame = pd.DataFrame(rows, columns=["house_id", "meter", "appliance", "ts_s", "power_w", "threshold_w",
                                        "normal_peak_w", "min_run_s"])
    return by_message, frame


def test_sigkill_then_restart_from_checkpoint_neither_duplicates_nor_loses_alerts(
        spark, kafka_ready, rethinkdb_ready, cassandra_session, topic, tmp_path, house_prefix, alert_io,
        sigkill_after_commits):
    settings = kafka_ready.replace(kafka_topic=topic, data_dir=str(tmp_path / "data"))
    by_message, frame = dataset(house_prefix)
    for house in range(HOUSES):
        for meter in range(3, 3 + METERS):
            alert_io.set_threshold(cassandra_session, f"{house_prefix}{house}", meter, 100.0)
    for houses in by_message:
        alert_io.produce(settings, houses)

    # Reference: the same rules over all readings at once, without Spark.
    rules = episodes.Rules(cooldown_s=60.0)
    expected = {a["id"]: a for a in episodes.detect(episodes.MeterStates(), frame, 0.0, rules).alerts}
    assert len(expected) >= 10

    command = [sys.executable, "-m", "streaming.alerts", "--trigger", "1 second", "--max-offsets-per-trigger", "6",
               "--kafka-topic", topic, "--data-dir", settings.data_dir, "--spark-master", "local[2]",
               "--cassandra-keyspace", settings.cassandra_keyspace, "--rethinkdb-db", settings.rethinkdb_db,
               "--spark-shuffle-partitions", "2", "--cooldown-s", "60"]
    commits = zones.checkpoint(settings, alerts.QUERY_NAME) / "commits"
    sigkill_after_commits(command, commits, 6, tmp_path / "alerts.log")
    house_ids = [f"{house_prefix}{h}" for h in range(HOUSES)]
    partial = alert_io.rethink_alerts(settings, house_ids)
    assert 0 < len(partial) < len(expected)  # it really was killed mid-stream

    restart = subprocess.run(command + ["--once", "--max-offsets-per-trigger", "1000"], capture_output=True, text=True, cwd=config.ROOT, timeout=600)
    assert restart.returncode == 0, restart.stdout[-3000:] + restart.stderr[-3000:]

    docs = alert_io.rethink_alerts(settings, house_ids)
    assert sorted(d["id"] for d in docs) == sorted(expected)
    for doc in docs:
        want = expected[doc["id"]]
        assert (doc["state"], doc["start_ts_s"], doc["end_ts_s"], doc["peak_w"]) == (
            want["state"], want["start_ts_s"], want["end_ts_s"], want["peak_w"])
    rows = alert_io.cassandra_alerts(cassandra_session, house_ids)
    assert sorted(r.alert_id for r in rows) == sorted(expected)
    assert {r.alert_id: r.state for r in rows} == {i: a["state"] for i, a in expected.items()}

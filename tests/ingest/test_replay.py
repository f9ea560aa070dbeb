"""The replay CLI: Parquet sources read in time order, a real run into Kafka, Ctrl-C flushes."""
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import replay
from smw import config, messages
from smw.schema import READING_ARROW

T0 = 1711929600.0  # 2024-04-01T00:00:00Z
DAY_S = 86400.0


def write_raw_zone(root, houses=("h1", "h2"), days=2, per_day=50, bad_rows=0):
    """A generator-style raw zone: readings/date=YYYY-MM-DD/<house>.parquet."""
    for day in range(days):
        folder = root / "readings" / time.strftime("date=%Y-%m-%d", time.gmtime(T0 + day * DAY_S))
        folder.mkdir(parents=True)
        for house in houses:
            ts = [T0 + day * DAY_S + i * 60.0 for i in range(per_day)]
            power = [float(i) for i in range(per_day)]
            if day == 0 and bad_rows:
                power[:bad_rows] = [float("nan")] * bad_rows
            pq.write_table(pa.table({"house_id": [house] * per_day, "meter": pa.array([1 + i % 2 for i in range(per_day)], pa.int32()),
                                     "label": ["mains"] * per_day, "appliance": ["mains"] * per_day,
                                     "ts_s": ts, "power_w": power}, schema=READING_ARROW), folder / f"{house}.parquet")
    return root / "readings"


def test_parquet_source_reads_dictionary_strings_in_time_order_per_house(tmp_path):
    root = write_raw_zone(tmp_path, days=3)
    batches = list(replay.parquet_batches(str(root)))
    assert all(pa.types.is_dictionary(b.schema.field("label").type) for b in batches)
    ts_by_house = {}
    for batch in batches:
        for house, ts in zip(batch.column("house_id").to_pylist(), batch.column("ts_s").to_pylist()):
            ts_by_house.setdefault(house, []).append(ts)
    assert set(ts_by_house) == {"h1", "h2"}
    assert all(ts == sorted(ts) and len(ts) == 150 for ts in ts_by_house.values())


def test_unknown_source_is_a_usage_error():
    with pytest.raises(ValueError, match="unknown source"):
        replay.source_batches("csv:/x", 1, 1, 0, 0.0)


def readings_in(records):
    """How many readings these Kafka records (contract messages) carry."""
    return sum(len(s["ts_s"]) for record in records for s in messages.decode(record.value)["series"])


@pytest.mark.integration
def test_replay_cli_publishes_everything_and_quarantines_bad_rows(topic, read_topic, tmp_path, capsys):
    root = write_raw_zone(tmp_path, days=2, per_day=400, bad_rows=3)
    quarantine = tmp_path / "q.jsonl"
    code = replay.main(["--source", f"parquet:{root}", "--kafka-topic", topic, "--lanes", "2",
                        "--readings-per-message", "150", "--quarantine", str(quarantine), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1,594 readings" in out and "failed 0" in out and "quarantined 6" in out
    assert [json.loads(line)["reason"] for line in quarantine.read_text().splitlines()] == \
        ["non-finite timestamp or power"] * 6
    assert readings_in(read_topic(topic)) == 2 * 2 * 400 - 6


@pytest.mark.integration
def test_ctrl_c_stops_a_paced_replay_and_flushes_what_was_sent(kafka_ready, topic, read_topic, tmp_path):
    root = write_raw_zone(tmp_path, days=1, per_day=1000)  # 1000 minutes of data at 60x: ~17 min
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_ready.kafka_bootstrap, "PYTHONPATH": str(config.ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "ingest.replay", "--source", f"parquet:{root}", "--speed", "60",
                                "--kafka-topic", topic, "--no-progress", "--quarantine", str(tmp_path / "q.jsonl")],
                               cwd=config.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "(stopped early)" in out and "failed 0" in out, out
    sent = int(out.split(" readings in ")[0].replace(",", ""))
    assert 0 < sent < 2000
    assert readings_in(read_topic(topic)) == sent  # every reading reported sent was delivered


def test_paced_synthetic_replay_interleaves_houses_in_event_time():
    batches, _ = replay.source_batches("synthetic", 3, 1, 5, 0.5, speed=60.0, period_s=60.0)
    houses, ts = [], []
    for batch in batches:
        houses += batch.column("house_id").to_pylist()
        ts += batch.column("ts_s").to_pylist()
    assert len(set(houses)) == 3
    # in time order to within one window (max(1, speed) = 60 s), not house after house
    assert all(later >= earlier - 60.0 for earlier, later in zip(ts, ts[1:]))
    switches = sum(1 for a, b in zip(houses, houses[1:]) if a != b)
    assert switches > 100  # house after house would switch twice


def test_a_start_time_skips_what_is_already_past():
    import datetime as dt

    # Yesterday with three days holds the present in every house's own zone, at any hour of the run.
    now = time.time()
    options = dict(speed=10.0, period_s=60.0, start_date=dt.date.fromtimestamp(now - 86400).isoformat())
    unbounded, _ = replay.source_batches("synthetic", 2, 3, 5, 0.5, **options)
    everything = [t for b in unbounded for t in b.column("ts_s").to_pylist()]
    assert min(everything) < now < max(everything)
    batches, _ = replay.source_batches("synthetic", 2, 3, 5, 0.5, not_before_ts_s=now, **options)
    ts = [t for b in batches for t in b.column("ts_s").to_pylist()]
    assert ts and min(ts) >= now
    assert len(ts) == sum(1 for t in everything if t >= now)


def test_generator_options_are_refused_for_other_sources():
    with pytest.raises(ValueError, match="synthetic only"):
        replay.source_batches("parquet:/x", 1, 1, 0, 0.0, period_s=60.0)


def test_not_ahead_pacing_catches_up_then_keeps_to_the_wall_clock():
    from ingest.producer import Pacer

    now = time.time()
    pacer = Pacer(speed=1000.0, not_ahead=True)
    started = time.monotonic()
    pacer.wait(now - 100.0)  # the origin, in the past
    pacer.wait(now - 50.0)   # accelerated: 50 s of event time in 0.05 s
    caught_up = time.monotonic() - started
    pacer.wait(now + 0.4)    # the future waits for the wall clock, not 0.1 s
    waited = time.monotonic() - started
    assert caught_up < 0.3
    assert waited >= 0.35


def test_not_ahead_holds_at_full_speed_too(monkeypatch):
    """--speed 0 (as fast as possible) with --not-ahead sends the past at once and waits for
    each future reading's time: a live replay must not send the rest of the day up front."""
    from ingest import producer

    slept = []
    monkeypatch.setattr(producer.time, "sleep", slept.append)
    now = time.time()
    pacer = producer.Pacer(speed=0.0, not_ahead=True)
    pacer.wait(now - 3600.0)
    pacer.wait(now - 1.0)
    assert slept == []
    pacer.wait(now + 120.0)
    assert len(slept) == 1 and 115.0 < slept[0] <= 120.0
    producer.Pacer(speed=0.0).wait(now + 120.0)  # without --not-ahead: no wait
    assert len(slept) == 1


def test_a_stop_ends_a_wait_for_the_wall_clock():
    """Ctrl-C during a live replay's wait for its next reading (up to a period) stops it then."""
    import threading

    from ingest import producer

    stop = threading.Event()
    pacer = producer.Pacer(speed=0.0, not_ahead=True, stop=stop)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    pacer.wait(time.time() + 60.0)
    assert stop.is_set() and time.monotonic() - started < 30.0

"""Pulse events from the serial ingester to Cassandra pulse_points, read back by the pulse-meter API."""
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from ingest import pulse_store
from ingest.devices import Event
from ingest.devices.pulse import PulseMeter
from ingest.serial import SerialIngester, event_message
from smw import config


def test_pulse_event_becomes_a_point_in_its_utc_day():
    found = pulse_store.point(json.dumps({"v": 1, "type": "pulse", "house_id": "h1", "ts_s": 1700000000.1234,
                                          "meter": 2, "ms": 3600}).encode())
    assert found == pulse_store.Point("h1-2", __import__("datetime").date(2023, 11, 14), 1700000000123, 3600)


@pytest.mark.parametrize("value, reason", [
    (b"{", "not JSON"),
    (b"[1]", "not a JSON object"),
    (b'{"type": "pulse", "meter": 1, "ts_s": 1.7e9, "ms": 5}', "house_id missing"),
    (b'{"type": "pulse", "house_id": "h", "meter": -1, "ts_s": 1.7e9, "ms": 5}', "meter must be a non-negative integer"),
    (b'{"type": "pulse", "house_id": "h", "meter": 1, "ts_s": "x", "ms": 5}', "ts_s must be epoch seconds"),
    (b'{"type": "pulse", "house_id": "h", "meter": 1, "ts_s": 1.7e9, "ms": 0}', "ms must be a positive integer"),
    (b'{"type": "pulse", "house_id": "' + b"h" * 65 + b'", "meter": 1, "ts_s": 1.7e9, "ms": 5}',
     "house_id longer than 64 characters"),
])
def test_bad_pulse_events_give_a_reason(value, reason):
    assert pulse_store.point(value) == reason


def test_other_event_types_are_skipped():
    assert pulse_store.point(b'{"type": "price", "house_id": "h", "ts_s": 1.7e9}') is None


def test_serial_pulse_blinks_are_also_pulse_events():
    events = []
    ingester = SerialIngester("loop://", PulseMeter(), 9600, "h-p", lambda table: None, events.append)
    ingester.clock = lambda: 1700000000.0
    ingester.handle(b"3600\n2 1800\nINFO x\n")
    assert events == [Event("pulse", 1700000000.0, {"meter": 1, "ms": 3600}),
                      Event("pulse", 1700000000.0, {"meter": 2, "ms": 1800})]


@pytest.mark.integration
def test_store_writes_points_that_the_pulse_api_serves(kafka_ready, topic, cassandra_session, tmp_path):
    from kafka import KafkaProducer

    from tools.server import make_user
    from webapp import create_app

    settings = kafka_ready.replace(kafka_events_topic=topic, cassandra_keyspace=cassandra_session.keyspace)
    house = f"hp{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_list, acks="all")
    t0 = 1700000000.0
    for i, ms in enumerate([3600, 1800, 1200]):
        key, value = event_message(house, Event("pulse", t0 + i, {"meter": 1, "ms": ms}))
        producer.send(topic, key=key, value=value)
    producer.send(topic, key=b"x", value=b"garbage")
    producer.send(topic, key=b"x", value=event_message(house, Event("price", t0, {"price_per_kwh": 0.1}))[1])
    producer.flush()
    producer.close()

    store = pulse_store.PulseStore(settings, f"g-{uuid.uuid4().hex[:6]}", tmp_path / "q.jsonl")
    counts = store.run(once=True, poll_ms=300)
    assert (counts.stored, counts.skipped, counts.quarantined) == (3, 1, 1)
    assert json.loads((tmp_path / "q.jsonl").read_text())["reason"] == "not JSON"
    minute = int(t0 * 1000) - int(t0 * 1000) % 60_000
    assert figures(cassandra_session, "pulse_minutes", "day", f"{house}-1", dt.date(2023, 11, 14), "minute_ms") == [
        (minute, 3, 6600, 1200, 3600)]

    app = create_app({"TESTING": True, "SMW_SETTINGS": settings})
    _name, token = make_user(settings, "household", houses=[house])  # the house's household reads its meter
    response = app.test_client().get(f"/since/{house}-1/{int(t0 * 1000) - 1}",
                                     headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.get_json() == [[int(t0 * 1000) + 1000 * i, ms] for i, ms in enumerate([3600, 1800, 1200])]


def send_all(settings, topic, values):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_list, acks="all", max_request_size=2**20)
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def pulse(house, ts_s, ms, meter=1):
    return event_message(house, Event("pulse", ts_s, {"meter": meter, "ms": ms}))


@pytest.mark.integration
def test_poison_record_is_quarantined_committed_and_not_seen_again(kafka_ready, topic, cassandra_session, tmp_path):
    settings = kafka_ready.replace(kafka_events_topic=topic, cassandra_keyspace=cassandra_session.keyspace)
    house = f"hp{uuid.uuid4().hex[:8]}"
    t0 = 1700000000.0
    poison = pulse("x" * 70_000, t0, 1000)  # a key component Cassandra cannot take (> 65,535 bytes)
    send_all(settings, topic, [pulse(house, t0, 3600), (house.encode(), poison[1]), pulse(house, t0 + 1, 1800)])
    group, quarantine = f"g-{uuid.uuid4().hex[:6]}", tmp_path / "q.jsonl"

    counts = pulse_store.PulseStore(settings, group, quarantine).run(once=True, poll_ms=300)
    assert (counts.stored, counts.quarantined) == (2, 1)
    (line,) = quarantine.read_text().splitlines()
    bad = json.loads(line)
    assert bad["reason"] == "house_id longer than 64 characters" and bad["value_bytes"] > 70_000
    rows = cassandra_session.execute("SELECT stamp_ms, ms FROM pulse_points WHERE meter_id = %s AND day = %s",
                                     (f"{house}-1", dt.date(2023, 11, 14)))
    assert [(r.stamp_ms, r.ms) for r in rows] == [(1700000000000, 3600), (1700000001000, 1800)]

    again = pulse_store.PulseStore(settings, group, quarantine).run(once=True, poll_ms=300)
    assert (again.stored, again.skipped, again.quarantined) == (0, 0, 0)  # the offsets were committed
    assert len(quarantine.read_text().splitlines()) == 1


def record(value: bytes, offset: int) -> ConsumerRecord:
    return ConsumerRecord("t", 0, -1, offset, 0, 0, b"k", value, [], None, 1, len(value), 0)


@pytest.mark.integration
def test_a_row_cassandra_rejects_is_quarantined_and_the_others_written(kafka_ready, cassandra_session, tmp_path):
    """Past the up-front checks, a write Cassandra (or its driver) refuses is the record's fault: quarantined."""
    settings = kafka_ready.replace(cassandra_keyspace=cassandra_session.keyspace)
    store = pulse_store.PulseStore(settings, "unused", tmp_path / "q.jsonl")
    store.prepare(cassandra_session)
    meter = f"hp{uuid.uuid4().hex[:8]}-1"
    day = dt.date(2023, 11, 14)
    parsed = [(record(b"good", 1), pulse_store.Point(meter, day, 1700000000000, 3600)),
              (record(b"poison", 2), pulse_store.Point("y" * 70_000, day, 1700000000500, 10)),
              (record(b"good too", 3), pulse_store.Point(meter, day, 1700000001000, 1800))]
    assert store.write(cassandra_session, parsed)
    assert (store.counts.stored, store.counts.quarantined) == (2, 1)
    bad = json.loads((tmp_path / "q.jsonl").read_text())
    assert bad["offset"] == 2 and bad["reason"].startswith("rejected by Cassandra")
    rows = cassandra_session.execute("SELECT stamp_ms FROM pulse_points WHERE meter_id = %s AND day = %s",
                                     (meter, day))
    assert [r.stamp_ms for r in rows] == [1700000000000, 1700000001000]
    assert [r.day for r in cassandra_session.execute("SELECT day FROM pulse_days WHERE meter_id = %s", (meter,))]


@pytest.mark.integration
def test_unreachable_cassandra_is_one_line_and_quarantines_nothing(kafka_ready, topic, tmp_path):
    from smw import config

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "ingest.pulse_store", "--once", "--kafka-events-topic", topic,
                             "--kafka-bootstrap", kafka_ready.kafka_bootstrap, "--cassandra-hosts", "127.0.0.1",
                             "--cassandra-port", str(port), "--quarantine", str(tmp_path / "q.jsonl")],
                            cwd=config.ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert "Cassandra is unreachable" in line and "Traceback" not in result.stderr
    assert not (tmp_path / "q.jsonl").exists()


class Relay:
    """A TCP relay to the real Cassandra that can be cut and restored, as a network partition would be."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.passing = True
        self.sockets: list = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.passing:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for end in (src, dst):
            end.close()

    def cut(self):
        self.passing = False
        with self.lock:
            for end in self.sockets:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.sockets.clear()

    def close(self):
        self.cut()
        self.listener.close()


@pytest.mark.integration
def test_cassandra_going_away_is_waited_out_not_quarantined(kafka_ready, topic, cassandra_session, tmp_path):
    settings = kafka_ready.replace(kafka_events_topic=topic, cassandra_keyspace=cassandra_session.keyspace)
    relay = Relay(settings.cassandra_host_list[0], int(settings.cassandra_port))
    house, t0 = f"hp{uuid.uuid4().hex[:8]}", 1700000000.0
    group, quarantine = f"g-{uuid.uuid4().hex[:6]}", tmp_path / "q.jsonl"
    store = pulse_store.PulseStore(settings.replace(cassandra_hosts="127.0.0.1", cassandra_port=str(relay.port)),
                                   group, quarantine, max_backoff_s=1.0)
    thread = threading.Thread(target=store.run, kwargs={"poll_ms": 200}, daemon=True)

    def wait_for(condition, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not condition():
            time.sleep(0.05)
        return condition()

    try:
        send_all(settings, topic, [pulse(house, t0, 3600)])
        thread.start()
        assert wait_for(lambda: store.counts.stored == 1)
        relay.cut()
        send_all(settings, topic, [pulse(house, t0 + 1, 1800)])
        time.sleep(4.0)  # polled, written in vain, waited for
        assert (store.counts.stored, store.counts.quarantined) == (1, 0)
        relay.passing = True
        assert wait_for(lambda: store.counts.stored == 2), store.counts
    finally:
        store.stop.set()
        thread.join(30)
        relay.close()
    assert not quarantine.exists()
    rows = cassandra_session.execute("SELECT ms FROM pulse_points WHERE meter_id = %s AND day = %s",
                                     (f"{house}-1", dt.date(2023, 11, 14)))
    assert [r.ms for r in rows] == [3600, 1800]
    again = pulse_store.PulseStore(settings, group, quarantine).run(once=True, poll_ms=300)
    assert again.stored == 0  # committed once written



@pytest.mark.integration
def test_a_once_run_cassandra_stops_taking_ends_in_one_line_commits_nothing(kafka_ready, topic, cassandra_session,
                                                                           tmp_path):
    from ingest.events import CassandraDown

    settings = kafka_ready.replace(kafka_events_topic=topic, cassandra_keyspace=cassandra_session.keyspace)
    relay = Relay(settings.cassandra_host_list[0], int(settings.cassandra_port))

    class CassandraGoesAway(pulse_store.PulseStore):
        """Cassandra answers the start, then the network to it is cut."""

        def prepare(self, session):
            super().prepare(session)
            relay.cut()

    house, group, quarantine = f"hp{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:6]}", tmp_path / "q.jsonl"
    send_all(settings, topic, [pulse(house, 1700000000.0, 1200)])
    store = CassandraGoesAway(settings.replace(cassandra_hosts="127.0.0.1", cassandra_port=str(relay.port)), group,
                              quarantine)
    try:
        with pytest.raises(CassandraDown) as raised:
            store.run(once=True, poll_ms=300)
    finally:
        relay.close()
    assert "nothing committed" in str(raised.value) and "\n" not in str(raised.value)
    assert not quarantine.exists()
    again = pulse_store.PulseStore(settings, group, quarantine).run(once=True, poll_ms=300)
    assert again.stored == 1  # not committed: the next run writes it


def figures(session, table, key_column, meter_id, partition, start_column):
    rows = session.execute(f"SELECT {start_column}, blinks, sum_ms, min_ms, max_ms FROM {table} "
                           f"WHERE meter_id = %s AND {key_column} = %s", (meter_id, partition))
    return [tuple(row) for row in rows]


@pytest.mark.integration
def test_minute_and_hour_figures_stay_exact_under_late_and_repeated_points(cassandra_session):
    meter = f"r{uuid.uuid4().hex[:8]}-1"
    hour = 1_700_002_800_000  # 2023-11-14 23:00 UTC: its minutes are in the day of 2023-11-14
    first = [(meter, hour + 1_000, 1000), (meter, hour + 2_000, 1500), (meter, hour + 61_000, 4000)]
    pulse_store.store_points(cassandra_session, first)
    late = [(meter, hour + 30_000, 500), (meter, hour + 2_000, 1500)]  # a late blink and a redelivered one
    pulse_store.store_points(cassandra_session, late)
    day, month = dt.date(2023, 11, 14), dt.date(2023, 11, 1)
    assert figures(cassandra_session, "pulse_minutes", "day", meter, day, "minute_ms") == [
        (hour, 3, 3000, 500, 1500), (hour + 60_000, 1, 4000, 4000, 4000)]
    assert figures(cassandra_session, "pulse_hours", "month", meter, month, "hour_ms") == [
        (hour, 4, 7000, 500, 4000)]


@pytest.mark.integration
def test_rebuild_recomputes_the_figures_of_points_written_without_them(cassandra_session, settings):
    meter = f"r{uuid.uuid4().hex[:8]}-1"
    start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
    insert = cassandra_session.prepare(pulse_store.INSERT_POINT)
    for i in range(5):
        cassandra_session.execute(insert, (meter, dt.date(2023, 11, 14), start + 20_000 * i, 1000 + i))
    cassandra_session.execute(cassandra_session.prepare(pulse_store.INSERT_DAY), (meter, dt.date(2023, 11, 14)))
    result = subprocess.run([sys.executable, "-m", "ingest.pulse_store", "--rebuild-rollups", "--meter", meter,
                             "--cassandra-keyspace", cassandra_session.keyspace], cwd=config.ROOT,
                            capture_output=True, text=True, timeout=120, env=dict(os.environ) | settings.environ())
    assert result.returncode == 0, result.stderr
    assert "1 meter-days from 5 points" in result.stdout
    assert figures(cassandra_session, "pulse_minutes", "day", meter, dt.date(2023, 11, 14), "minute_ms") == [
        (start, 3, 3003, 1000, 1002), (start + 60_000, 2, 2007, 1003, 1004)]
    assert figures(cassandra_session, "pulse_hours", "month", meter, dt.date(2023, 11, 1), "hour_ms") == [
        (start, 5, 5010, 1000, 1004)]

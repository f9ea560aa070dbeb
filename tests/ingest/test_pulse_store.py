"""Pulse events from the serial ingester to Cassandra pulse_points, read back by the pulse-meter API."""
import json
import uuid

import pytest

from ingest import pulse_store
from ingest.devices import Event
from ingest.devices.pulse import PulseMeter
from ingest.serial import SerialIngester, event_message


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
    assert (counts.points, counts.skipped, counts.quarantined) == (3, 1, 1)
    assert json.loads((tmp_path / "q.jsonl").read_text())["reason"] == "not JSON"

    client = create_app({"TESTING": True, "SMW_SETTINGS": settings}).test_client()
    response = client.get(f"/since/{house}-1/{int(t0 * 1000) - 1}")
    assert response.status_code == 200
    assert response.get_json() == [[int(t0 * 1000) + 1000 * i, ms] for i, ms in enumerate([3600, 1800, 1200])]

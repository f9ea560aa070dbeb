"""Cutting sources into contract messages, quarantining bad rows, and a real produce/consume round trip."""
import json

import numpy as np
import pyarrow as pa
import pytest
from kafka import KafkaConsumer

from ingest import producer as producing
from smw import messages
from smw.schema import READING_ARROW

T0 = 1303171200.0


def table(rows):
    return pa.Table.from_pylist(
        [dict(zip(("house_id", "meter", "label", "appliance", "ts_s", "power_w"), r)) for r in rows],
        schema=READING_ARROW,
    )


def interleaved(house, n, meters=(1, 2, 5)):
    return [(house, meters[i % len(meters)], f"l{meters[i % len(meters)]}", f"a{meters[i % len(meters)]}",
             T0 + i, float(i)) for i in range(n)]


def cut(rows, per_message=4, max_span_s=None, quarantine=None):
    stats = producing.PublishStats()
    out = list(producing.messages_from_batch(table(rows), per_message, quarantine or producing.Quarantine(None),
                                             stats, max_span_s))
    return out, stats


def test_messages_follow_the_contract_and_keep_every_reading_in_order():
    rows = interleaved("h1", 10) + interleaved("h2", 3)
    out, _ = cut(rows)
    assert [key for key, *_ in out] == [b"h1"] * 3 + [b"h2"]
    readings = []
    for key, value, count, last_ts in out:
        body = messages.decode(value)
        assert body["house_id"] == key.decode()
        assert count == sum(len(s["ts_s"]) for s in body["series"])
        for series in body["series"]:
            assert series["label"] == f"l{series['meter']}" and series["appliance"] == f"a{series['meter']}"
            readings += [(body["house_id"], series["meter"], t, p) for t, p in zip(series["ts_s"], series["power_w"])]
        assert last_ts == max(t for s in body["series"] for t in s["ts_s"])
    assert sorted(readings) == sorted((r[0], r[1], r[4], r[5]) for r in rows)


def test_max_span_cuts_messages_by_data_time():
    out, _ = cut(interleaved("h1", 10), per_message=1000, max_span_s=3.0)
    spans = [[t for s in messages.decode(v)["series"] for t in s["ts_s"]] for _, v, _, _ in out]
    assert [len(s) for s in spans] == [3, 3, 3, 1]
    assert all(max(s) - min(s) < 3.0 for s in spans)


def test_bad_rows_are_quarantined_not_published(tmp_path):
    rows = interleaved("h1", 6)
    rows[1] = ("h1", 1, "l1", "a1", T0 + 1, float("nan"))
    rows[2] = ("h1", 2, "l2", "a2", 12.0, 5.0)
    rows.append(("", 3, "x", "x", T0 + 50, 1.0))
    rows.append(("h1", 70000, "x", "x", T0 + 51, 1.0))
    quarantine = producing.Quarantine(tmp_path / "q.jsonl")
    out, stats = cut(rows, quarantine=quarantine)
    quarantine.close()
    published = sum(count for _, _, count, _ in out)
    assert published == 4
    assert sum(stats.quarantined.values()) == 4 and len(stats.quarantined) == 4
    lines = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert sorted(line["ts_s"] for line in lines) == sorted([T0 + 1, 12.0, T0 + 50, T0 + 51])
    assert {line["reason"] for line in lines} == set(stats.quarantined)


def test_pacer_follows_data_time_at_the_given_speed(monkeypatch):
    slept = []
    clock = iter([0.0, 0.0, 0.1])
    monkeypatch.setattr(producing.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(producing.time, "sleep", slept.append)
    pacer = producing.Pacer(speed=10.0)
    pacer.wait(T0)
    pacer.wait(T0 + 5)   # due 0.5 s after the start, now 0.0
    pacer.wait(T0 + 6)   # due 0.6 s, now 0.1
    assert slept == pytest.approx([0.5, 0.5])


@pytest.mark.integration
def test_publish_then_consume_exactly_n_in_order_per_house(kafka_ready, topic):
    rows = interleaved("h1", 2500) + interleaved("h2", 1800, meters=(1, 3)) + interleaved("h3", 700)
    kafka_producer = producing.make_producer(kafka_ready)
    try:
        stats = producing.publish([table(rows)], kafka_producer, topic, readings_per_message=300)
    finally:
        kafka_producer.close()
    assert (stats.readings, stats.delivered, stats.failed) == (len(rows), stats.messages, 0)

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_ready.kafka_bootstrap_list,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=10000)
    received = {}
    try:
        for record in consumer:
            body = messages.decode(record.value)
            assert record.key.decode() == body["house_id"]
            for series in body["series"]:
                received.setdefault((body["house_id"], series["meter"]), []).extend(series["ts_s"])
    finally:
        consumer.close()
    assert sum(len(v) for v in received.values()) == len(rows)
    for (house, meter), ts in received.items():
        assert ts == [r[4] for r in rows if r[0] == house and r[1] == meter]  # exactly, in order

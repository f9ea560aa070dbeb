"""Cutting sources into contract messages, quarantining bad rows, and a real produce/consume round trip."""
import json

import pyarrow as pa
import pytest

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


def test_readings_dated_in_the_future_are_quarantined_unless_the_replay_waits_for_them(tmp_path):
    import time

    rows = interleaved("h1", 4)
    rows[3] = ("h1", 2, "l2", "a2", 3_928_000_000.0, 7.0)  # a timestamp with one bit flipped: 2094
    rows.append(("h1", 3, "l3", "a3", time.time() + 60.0, 8.0))  # a minute ahead: within the skew
    out, stats = cut(rows, quarantine=producing.Quarantine(tmp_path / "q.jsonl"))
    assert sum(count for _, _, count, _ in out) == 4
    assert dict(stats.quarantined) == {"timestamp in the future (a clock ahead)": 1}
    # A replay that holds each message until its time (`not_ahead`) checks nothing ahead of time.
    held = list(producing.messages_from_batch(table(rows), 4, producing.Quarantine(None), producing.PublishStats(),
                                              None, None))
    assert sum(count for _, _, count, _ in held) == 5


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


def test_dictionary_columns_give_the_same_messages_as_plain_strings():
    plain = table(interleaved("h1", 9) + interleaved("h2", 4))
    dictionary = pa.Table.from_arrays(
        [c.dictionary_encode() if pa.types.is_string(c.type) else c for c in plain.columns], names=plain.column_names)
    stats = producing.PublishStats()
    assert (list(producing.messages_from_batch(dictionary, 4, producing.Quarantine(None), stats))
            == list(producing.messages_from_batch(plain, 4, producing.Quarantine(None), stats)))


def test_a_meter_that_changes_label_mid_message_becomes_two_series():
    rows = [("h1", 1, "lamp", "lighting", T0 + i, float(i)) for i in range(3)]
    rows += [("h1", 1, "fridge", "refrigerator", T0 + 3 + i, 10.0 + i) for i in range(2)]
    rows += [("h1", 2, "oven", "oven", T0 + 5, 7.0), ("h1", 1, "lamp", "lighting", T0 + 6, 3.0)]
    (message,), _ = cut(rows, per_message=100)
    series = messages.decode(message[1])["series"]
    assert [(s["meter"], s["label"], s["ts_s"]) for s in series] == [
        (1, "lamp", [T0, T0 + 1, T0 + 2, T0 + 6]), (1, "fridge", [T0 + 3, T0 + 4]), (2, "oven", [T0 + 5])]


class FakeFuture:
    def __init__(self):
        self.callbacks, self.errbacks = [], []

    def add_callback(self, f):
        self.callbacks.append(f)

    def add_errback(self, f):
        self.errbacks.append(f)


class FakeProducer:
    """Acknowledges (or fails) messages only when told to, from another thread."""

    def __init__(self, fail_every=0, timeouts=0):
        self.sent, self.futures, self.flushed = [], [], 0
        self.fail_every, self.timeouts = fail_every, timeouts

    def send(self, topic, key, value):
        from kafka.errors import KafkaTimeoutError

        if self.timeouts:
            self.timeouts -= 1
            raise KafkaTimeoutError("metadata not available")
        self.sent.append((key, value))
        future = FakeFuture()
        self.futures.append(future)
        return future

    def settle(self):
        for i, future in enumerate(self.futures):
            if self.fail_every and i % self.fail_every == 0:
                for f in future.errbacks:
                    f(RuntimeError("broker said no"))
            else:
                for f in future.callbacks:
                    f(None)
        self.futures = []

    def flush(self, timeout=None):
        self.flushed += 1
        self.settle()


def test_delivery_failures_are_counted_and_do_not_stop_publishing():
    fake = FakeProducer(fail_every=3)
    stats = producing.publish([table(interleaved("h1", 40))], fake, "t", readings_per_message=4)
    assert (stats.messages, stats.failed, stats.delivered) == (10, 4, 6)
    assert fake.flushed == 1


def test_send_timeouts_are_retried_not_fatal():
    fake = FakeProducer(timeouts=2)
    stats = producing.PublishStats()
    future = producing.send_with_retry(fake, "t", b"h1", b"{}", stats, backoff_s=0.01)
    assert future is not None and stats.send_timeouts == 2 and fake.sent == [(b"h1", b"{}")]


def test_in_flight_bytes_are_bounded_until_acknowledged():
    import threading

    fake = FakeProducer()
    rows = interleaved("h1", 60)
    one_message = len(next(iter(cut(rows[:3], per_message=3)[0]))[1])
    done = threading.Event()
    result = {}

    def run():
        result["stats"] = producing.publish([table(rows)], fake, "t", readings_per_message=3,
                                            max_in_flight_bytes=3 * one_message + 10)
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert not done.wait(0.5)          # blocked: three messages out, none acknowledged
    assert len(fake.sent) == 3
    while not done.wait(0.05):
        fake.settle()                  # each acknowledgement lets more through
    assert result["stats"].delivered == 20 and len(fake.sent) == 20


def test_lanes_pin_each_house_to_one_producer_and_spread_houses():
    lanes = producing.Lanes([FakeProducer(), FakeProducer()])
    for key in [b"h1", b"h2", b"h1", b"h3", b"h2", b"h1"]:
        lanes.send("t", key, b"{}")
    first, second = ([k for k, _ in p.sent] for p in lanes.producers)
    assert first == [b"h1", b"h1", b"h3", b"h1"] and second == [b"h2", b"h2"]


@pytest.mark.integration
@pytest.mark.parametrize("lanes", [1, 3])
def test_publish_then_consume_exactly_n_in_order_per_house(kafka_ready, topic, read_topic, lanes):
    rows = interleaved("h1", 2500) + interleaved("h2", 1800, meters=(1, 3)) + interleaved("h3", 700)
    rows += interleaved("h4", 900, meters=(2,)) + [("h2", 3, "l3", "a3", float("inf"), 1.0)]
    kafka_producer = producing.make_lanes(kafka_ready, lanes)
    try:
        stats = producing.publish([table(rows)], kafka_producer, topic, readings_per_message=300)
    finally:
        kafka_producer.close()
    good = rows[:-1]
    assert (stats.readings, stats.delivered, stats.failed) == (len(good), stats.messages, 0)
    assert dict(stats.quarantined) == {"non-finite timestamp or power": 1}

    received = {}
    partition_of = {}
    for record in read_topic(topic):
        body = messages.decode(record.value)
        assert record.key.decode() == body["house_id"]
        assert partition_of.setdefault(body["house_id"], record.partition) == record.partition
        for series in body["series"]:
            received.setdefault((body["house_id"], series["meter"]), []).extend(series["ts_s"])
    assert sum(len(v) for v in received.values()) == len(good)
    for (house, meter), ts in received.items():
        assert ts == [r[4] for r in good if r[0] == house and r[1] == meter]  # exactly, in order

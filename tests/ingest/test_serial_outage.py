"""The spool between the serial ingester and Kafka: bounded, ordered, durable, and exactly once
through a broker outage longer than the producer's own 120 s delivery timeout."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from ingest.devices import Event
from ingest.devices.emu2 import Y2K_EPOCH_S
from ingest.serial import event_message
from ingest.spool import Spool, SpoolBusy
from smw import config, messages
from smw.init import create_topics

from tests.ingest.conftest import read_all
from tests.ingest.test_serial import Device, emu2_demand, emu2_price

TOPIC = "readings"  # on a broker of the test's own: the product's topic name is harmless there


def test_spool_keeps_order_and_what_was_not_acknowledged_across_a_restart(tmp_path):
    path = tmp_path / "spool.db"
    spool = Spool(path, max_bytes=10_000)
    for i in range(5):
        assert spool.put("t", b"h1", b"m%d" % i, readings=i)
    batch = spool.peek(max_records=3)
    assert [r.value for r in batch] == [b"m0", b"m1", b"m2"]
    spool.remove(batch[:2])  # m2 was in flight, not acknowledged
    spool.close()

    again = Spool(path, max_bytes=10_000)
    try:
        assert [r.value for r in again.peek()] == [b"m2", b"m3", b"m4"]
        assert (again.stats.recovered.messages, again.stats.recovered.readings) == (3, 2 + 3 + 4)
        assert (again.records, again.readings, again.bytes) == (3, 9, 3 * len(b"h1m2"))
    finally:
        again.close()


def test_full_spool_drops_the_oldest_outside_the_batch_in_flight_and_counts_them(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_bytes=40)  # four 10-byte messages
    try:
        for i in range(4):
            assert spool.put("t", b"k", b"message%02d" % i, readings=2)
        in_flight = spool.peek(max_records=1)
        assert [r.value for r in in_flight] == [b"message00"]
        assert spool.put("t", b"k", b"message04", readings=2)  # drops message01, not the one in flight
        assert spool.put("t", b"k", b"message05", readings=2)  # drops message02
        assert (spool.stats.dropped.messages, spool.stats.dropped.readings) == (2, 4)
        assert not spool.put("t", b"k", b"x" * 41)  # larger than the bound itself
        assert spool.stats.refused.messages == 1 and spool.bytes == 40
        spool.remove(in_flight)
        assert [r.value for r in spool.peek()] == [b"message03", b"message04", b"message05"]
    finally:
        spool.close()


def test_one_spool_one_process(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    try:
        with pytest.raises(SpoolBusy):
            Spool(tmp_path / "spool.db")
    finally:
        spool.close()
    Spool(tmp_path / "spool.db").close()  # free again once closed


def test_spool_inspection_command(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    spool.put("readings", b"h1", b"x" * 100, readings=7)
    spool.put("meter-events", b"h1", b"y" * 50)
    try:
        out = subprocess.run([sys.executable, "-m", "ingest.spool", str(tmp_path / "spool.db")], cwd=config.ROOT,
                             capture_output=True, text=True, check=True).stdout
    finally:
        spool.close()
    assert "readings: 1 messages, 7 readings, 102 bytes" in out, out
    assert "meter-events: 1 messages, 0 readings, 52 bytes" in out, out


@pytest.mark.integration
def test_spool_left_by_an_earlier_run_is_sent_first(kafka_ready, topic, read_topic, tmp_path):
    stamp_s = time.time() - 600
    earlier = Event("summation", stamp_s, {"meter": 1, "delivered_kwh": 1.0, "received_kwh": 0.0, "energy_kwh": 1.0})
    spool = Spool(tmp_path / "spool.db")
    spool.put(topic, *event_message("h-restart", earlier))
    spool.close()
    device = Device(str(tmp_path / "ttyEMU"))
    device.plug()
    process = start_ingester(device, kafka_ready.kafka_bootstrap, tmp_path, "--kafka-events-topic", topic,
                             "--kafka-topic", topic, "--spool", str(tmp_path / "spool.db"), house="h-restart")
    try:
        time.sleep(2.5)
        device.write(emu2_demand(int(stamp_s) - Y2K_EPOCH_S + 1), chunk=64)
        time.sleep(1.0)
        out = stop_ingester(process)
    finally:
        device.unplug()
    assert "found at start 1 (0 readings)" in out and "0 messages (0 readings, 0 bytes) left" in out, out
    records = read_topic(topic)
    assert [json.loads(r.value)["type"] for r in records] == ["summation", "readings"]
    assert {r.key for r in records} == {b"h-restart"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ingester(device, bootstrap, tmp_path, *args, house="h-outage"):
    env = {**os.environ, "PYTHONPATH": str(config.ROOT), "DATA_DIR": str(tmp_path / "data")}
    return subprocess.Popen([sys.executable, "-m", "ingest.serial", "--device", device.link, "--type", "emu2",
                             "--house", house, "--kafka-bootstrap", bootstrap, *args],
                            cwd=config.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_ingester(process, timeout_s=60) -> str:
    try:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    return out


class Meter:
    """Writes demand frames (each with its own time and power) and, every tenth, a price frame."""

    def __init__(self, device, period_s=0.5):
        self.device, self.period_s = device, period_s
        self.readings, self.prices = [], []
        self.stop = threading.Event()
        self.base_stamp = int(time.time()) - Y2K_EPOCH_S - 3600
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop.is_set():
            stamp = self.base_stamp + i
            self.device.write(emu2_demand(stamp, b"0x%08x" % (i + 1)), chunk=64)
            self.readings.append((float(stamp + Y2K_EPOCH_S), float(i + 1)))
            if i % 10 == 0:
                self.device.write(emu2_price(TimeStamp=b"0x%08x" % stamp), chunk=64)
                self.prices.append(float(stamp + Y2K_EPOCH_S))
            i += 1
            self.stop.wait(self.period_s)


def spooled_messages(path) -> int:
    out = subprocess.run([sys.executable, "-m", "ingest.spool", str(path)], cwd=config.ROOT, capture_output=True,
                         text=True, check=True).stdout
    return sum(int(line.split(": ")[1].split()[0].replace(",", "")) for line in out.splitlines() if "messages" in line)


@pytest.mark.integration
def test_kafka_away_for_longer_than_two_minutes_every_reading_arrives_exactly_once(tmp_path):
    """A broker of the test's own (the shared one stays up): dead at the ingester's start, up, then
    stopped for 130 s while the meter keeps talking, then back. Nothing lost, nothing twice."""
    from tools import services

    settings = config.load().replace(
        kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=str(free_port()),
        var_dir=str(tmp_path / "var"), kafka_heap="256m", kafka_partitions="2")
    broker = services.Kafka(settings)
    device = Device(str(tmp_path / "ttyEMU"))
    device.plug()
    spool_path = tmp_path / "spool.db"
    process = start_ingester(device, settings.kafka_bootstrap, tmp_path, "--kafka-topic", TOPIC,
                             "--kafka-events-topic", "events", "--spool", str(spool_path), "--drain-s", "60")
    meter = Meter(device)
    try:
        time.sleep(2.5)  # the ingester opens the port in raw mode
        meter.thread.start()
        time.sleep(5)  # no broker at all yet: the ingester reads into the spool
        broker.wait_ready(broker.start(), 120)
        create_topics(settings, {TOPIC: 2, "events": 1})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not read_all(settings.kafka_bootstrap, TOPIC):
            time.sleep(1)
        assert read_all(settings.kafka_bootstrap, TOPIC), "nothing reached the broker once it was up"

        broker.stop(timeout_s=60)
        spooled_at_stop = spooled_messages(spool_path)
        written_at_stop = len(meter.readings) + len(meter.prices)
        time.sleep(130)  # longer than kafka-python's 120 s delivery timeout
        # The port was read all along: every frame written meanwhile is in the spool.
        written = len(meter.readings) + len(meter.prices) - written_at_stop
        assert spooled_messages(spool_path) - spooled_at_stop >= written - 4
        assert process.poll() is None

        broker.wait_ready(broker.start(), 120)
        time.sleep(3)
        meter.stop.set()
        meter.thread.join()
        expected = Counter(meter.readings)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and spooled_messages(spool_path):
            time.sleep(1)
        out = stop_ingester(process)
        got = Counter((ts, round(power, 6)) for record in read_all(settings.kafka_bootstrap, TOPIC)
                      for series in messages.decode(record.value)["series"]
                      for ts, power in zip(series["ts_s"], series["power_w"]))
        prices = Counter(json.loads(record.value)["ts_s"] for record in read_all(settings.kafka_bootstrap, "events"))
    finally:
        meter.stop.set()
        if process.poll() is None:
            process.kill()
        broker.stop(timeout_s=60)
    assert len(expected) > 250  # the meter talked all through the outage
    assert got == expected, (sorted((expected - got).items())[:5], sorted((got - expected).items())[:5])
    assert prices == Counter(meter.prices)
    assert "0 messages (0 readings, 0 bytes) left" in out and "dropped when full 0 (0 readings)" in out, out
    assert f"readings sent {len(expected)} " in out and f"delivered {len(expected)}," in out, out


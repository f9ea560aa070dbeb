"""The serial ingester against pseudo-terminals playing devices: splits, garbage, unplug and replug."""
import json
import os
import re
import threading
import time

import pytest

from ingest.devices.emu2 import Emu2
from ingest.devices.pulse import PulseMeter
from ingest.serial import SerialIngester, event_message
from smw import messages

FRAME = (b"<InstantaneousDemand><TimeStamp>0x1c6a2b3f</TimeStamp><Demand>0xfffffe0c</Demand>"
         b"<Multiplier>0x00000000</Multiplier><Divisor>0x000003e8</Divisor></InstantaneousDemand>\r\n")


class Device:
    """A pty whose slave side is reached through a stable symlink, like /dev/serial/by-id/..."""

    def __init__(self, link):
        self.link = link
        self.master = None

    def plug(self):
        self.master, slave = os.openpty()
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        if os.path.lexists(self.link):
            os.unlink(self.link)
        os.symlink(self.slave_name, self.link)

    def unplug(self):
        os.unlink(self.link)
        os.close(self.master)
        self.master = None

    def write(self, data, chunk=5):
        for i in range(0, len(data), chunk):
            os.write(self.master, data[i:i + chunk])
            time.sleep(0.002)


@pytest.fixture
def rig(tmp_path):
    device = Device(str(tmp_path / "ttyMETER"))
    device.plug()
    tables, events = [], []
    yield device, tables, events
    if device.master is not None:
        os.close(device.master)


def start(ingester):
    """Run the ingester in a thread; return once it has opened (and configured) the port."""
    thread = threading.Thread(target=ingester.run, daemon=True)
    thread.start()
    assert wait_for(lambda: ingester.counts["connections"] >= 1)
    time.sleep(0.1)  # bytes written before pyserial sets raw mode would be cooked by the tty
    return thread


def wait_for(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def readings(tables):
    return [row for table in tables for row in table.to_pylist()]


def test_emu2_split_fragments_garbage_negative_demand_zero_divisor(rig):
    device, tables, events = rig
    ingester = SerialIngester(device.link, Emu2(meter=1), 115200, "h-emu", tables.append, events.append,
                              max_backoff_s=0.2)
    thread = start(ingester)
    try:
        device.write(b"\xde\xad garbage \x00" + FRAME + b"<Instant<<<>>" + FRAME)
        assert wait_for(lambda: len(readings(tables)) == 2), ingester.counts
    finally:
        ingester.stop.set()
        thread.join(5)
    got = readings(tables)
    assert {r["power_w"] for r in got} == {-500.0}  # signed; a zero multiplier means 1
    assert got[0]["house_id"] == "h-emu" and got[0]["appliance"] == "mains"
    assert got[0]["ts_s"] == 0x1C6A2B3F + 946684800


def test_device_that_vanishes_and_returns_is_read_again(rig):
    device, tables, events = rig
    ingester = SerialIngester(device.link, PulseMeter(), 9600, "h-pulse", tables.append, events.append,
                              max_backoff_s=0.2)
    thread = start(ingester)
    try:
        device.write(b"CONNECTED\n3600\n")
        assert wait_for(lambda: len(readings(tables)) == 1)
        device.unplug()
        assert wait_for(lambda: ingester.counts["disconnects"] >= 1)
        time.sleep(0.5)  # a few failed reopen attempts while unplugged
        device.plug()
        assert wait_for(lambda: ingester.counts["connections"] >= 2), ingester.counts
        time.sleep(0.1)
        device.write(b"1800\nnot a number\n")
        assert wait_for(lambda: len(readings(tables)) == 2), ingester.counts
    finally:
        ingester.stop.set()
        thread.join(5)
    assert [r["power_w"] for r in readings(tables)] == [1000.0, 2000.0]
    assert ingester.counts["bad_frames"] == 1 and ingester.counts["ignored"] == 1, ingester.counts


def test_readings_tables_form_valid_messages(rig):
    from ingest import producer as producing

    device, tables, events = rig
    ingester = SerialIngester(device.link, PulseMeter(), 9600, "h-pulse", tables.append, events.append)
    ingester.clock = lambda: 1700000000.0
    ingester.handle(b"3600\n7200\n")
    (table,) = tables
    (message,) = producing.messages_from_batch(table, 1000, producing.Quarantine(None), producing.PublishStats())
    body = messages.decode(message[1])
    assert body["series"][0]["power_w"] == [1000.0, 500.0]


def test_event_messages_carry_version_type_and_house():
    from ingest.devices import Event
    import json

    key, value = event_message("h1", Event("price", 1.0e9, {"price_per_kwh": 0.12589, "currency": 840}))
    body = json.loads(value)
    assert key == b"h1" and body == {"v": 1, "type": "price", "house_id": "h1", "ts_s": 1.0e9,
                                     "price_per_kwh": 0.12589, "currency": 840}


@pytest.mark.integration
def test_serial_cli_publishes_demand_as_readings_and_price_as_events(kafka_ready, topic, read_topic, tmp_path):
    import signal
    import subprocess
    import sys
    import uuid

    from kafka import KafkaAdminClient

    from smw import config
    from smw.init import create_topics

    events_topic = f"test-events-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_ready, {events_topic: 1})
    device = Device(str(tmp_path / "ttyEMU"))
    device.plug()
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_ready.kafka_bootstrap, "PYTHONPATH": str(config.ROOT),
           "DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen([sys.executable, "-m", "ingest.serial", "--device", device.link, "--type", "emu2",
                                "--house", "h-cli", "--kafka-topic", topic, "--kafka-events-topic", events_topic],
                               cwd=config.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    price = (b"<PriceCluster><TimeStamp>0x1c6a2b3f</TimeStamp><Price>0x0000312d</Price><Currency>0x0348</Currency>"
             b"<TrailingDigits>0x05</TrailingDigits><Tier>0x01</Tier></PriceCluster>\r\n")
    try:
        time.sleep(2.5)  # interpreter start, Kafka connection, port opened in raw mode
        device.write(FRAME + b"\x00junk" + price + FRAME, chunk=64)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "readings sent 2" in out and "events sent 1 (delivered 1, failed 0)" in out, out

    powers = [p for r in read_topic(topic) for s in messages.decode(r.value)["series"] for p in s["power_w"]]
    assert powers == [-500.0, -500.0]
    admin = KafkaAdminClient(bootstrap_servers=kafka_ready.kafka_bootstrap_list)
    try:
        (event,) = read_topic(events_topic)
        admin.delete_topics([events_topic])
    finally:
        admin.close()
    body = json.loads(event.value)
    assert (event.key, body["type"], body["house_id"]) == (b"h-cli", "price", "h-cli")
    assert body["price_per_kwh"] == pytest.approx(0.12589)


def emu2_price(**fields):
    """A PriceCluster frame line; fields replace the defaults (hex values as bytes)."""
    values = {"TimeStamp": b"0x1c6a2b3f", "Price": b"0x0000312d", "Currency": b"0x0348", "TrailingDigits": b"0x05",
              "Tier": b"0x01", "Duration": b"0x003c", **fields}
    body = b"".join(b"<%s>%s</%s>" % (name.encode(), value, name.encode()) for name, value in values.items())
    return b"<PriceCluster>" + body + b"</PriceCluster>\r\n"


def emu2_demand(stamp: int, demand_hex: bytes = b"0x000001f4") -> bytes:
    return (b"<InstantaneousDemand><TimeStamp>0x%08x</TimeStamp><Demand>%s</Demand><Multiplier>0x00000001"
            b"</Multiplier><Divisor>0x000003e8</Divisor></InstantaneousDemand>\r\n" % (stamp, demand_hex))


# Garbled frames of every kind between good ones: the reason each is counted under.
BAD_FRAMES = [
    (emu2_price(Currency=b"0xFFFFFFFF"), "bad:Currency out of range"),
    (emu2_price(Tier=b"0x1FF"), "bad:Tier out of range"),
    (emu2_price(Duration=b"0xFFFFFFFFFF"), "bad:Duration out of range"),
    (emu2_price(TrailingDigits=b"0x" + b"9" * 24), "bad:TrailingDigits out of range"),
    (emu2_demand(0x1C6A2B40, b"0x" + b"a" * 40), "bad:Demand out of range"),
]
GOOD_STAMPS = [0x1C6A2B3F + i for i in range(3)]


def mixed_stream() -> bytes:
    """Good demand frames, the bad frames, noise, a cp1252 rate label and an element nobody knows."""
    return (b"\xde\xad\x00noise" + emu2_demand(GOOD_STAMPS[0]) + b"".join(frame for frame, _ in BAD_FRAMES)
            + b"<Instant<<>>" + emu2_price(RateLabel=b"Peak \x80") + emu2_demand(GOOD_STAMPS[1])
            + b"<FooCluster>\r\n  <Bar>0x01</Bar>\r\n</FooCluster>\r\n" + emu2_demand(GOOD_STAMPS[2]))


def test_bad_frames_are_counted_by_reason_and_a_failing_callback_costs_one_frame(rig):
    device, tables, events = rig

    def on_event(event):
        if event.fields.get("rate_label") == "Peak \u20ac" and not events:
            events.append(None)  # fail once, on the first good price event
            raise RuntimeError("sink exploded")
        events.append(event)

    ingester = SerialIngester(device.link, Emu2(meter=1), 115200, "h-emu", tables.append, on_event)
    thread = start(ingester)
    try:
        device.write(mixed_stream() + emu2_price(RateLabel=b"Caf\xe9"), chunk=48)
        assert wait_for(lambda: len(readings(tables)) == 3 and len(events) == 2), ingester.counts
        assert thread.is_alive()
    finally:
        ingester.stop.set()
        thread.join(5)
    assert [r["ts_s"] for r in readings(tables)] == [s + 946684800 for s in GOOD_STAMPS]
    assert events[1].fields["rate_label"] == "Caf\u00e9"
    counts = ingester.counts
    assert {reason: counts[reason] for _, reason in BAD_FRAMES} == {reason: 1 for _, reason in BAD_FRAMES}
    assert counts["bad_frames"] == len(BAD_FRAMES) and counts["frame_errors"] == 1, counts
    assert counts["unknown"] == 1 and counts["unknown:FooCluster"] == 1, counts


@pytest.mark.integration
def test_serial_cli_survives_garbled_frames_and_says_why_each_was_rejected(kafka_ready, topic, read_topic, tmp_path):
    import signal
    import subprocess
    import sys
    import uuid

    from smw import config
    from smw.init import create_topics, delete_topic

    events_topic = f"test-events-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_ready, {events_topic: 1})
    device = Device(str(tmp_path / "ttyEMU"))
    device.plug()
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_ready.kafka_bootstrap, "PYTHONPATH": str(config.ROOT),
           "DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen([sys.executable, "-m", "ingest.serial", "--device", device.link, "--type", "emu2",
                                "--house", "h-bad", "--kafka-topic", topic, "--kafka-events-topic", events_topic],
                               cwd=config.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)  # interpreter start, port opened in raw mode
        device.write(mixed_stream(), chunk=64)
        time.sleep(1.5)
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        (event,) = read_topic(events_topic)
    finally:
        if process.poll() is None:
            process.kill()
        delete_topic(kafka_ready, events_topic)
    assert process.returncode == 0, err
    counts = dict(re.findall(r"([a-z_]+(?::[^,;]+)?) (\d+)[,;]", out.removeprefix("stopped: ").split(";")[0] + ";"))
    assert {reason: counts.get(reason) for _, reason in BAD_FRAMES} == {reason: "1" for _, reason in BAD_FRAMES}
    assert (counts["bad_frames"], counts["unknown:FooCluster"], counts["readings"]) == (str(len(BAD_FRAMES)), "1", "3")
    assert "readings sent 3 " in out and "events sent 1 (delivered 1, failed 0)" in out, out
    assert "bad frame from" in err and "unknown element <FooCluster>" in err, err

    stamps = [t for r in read_topic(topic) for s in messages.decode(r.value)["series"] for t in s["ts_s"]]
    assert stamps == [s + 946684800 for s in GOOD_STAMPS]
    body = json.loads(event.value)
    assert (body["type"], body["rate_label"], body["currency"]) == ("price", "Peak \u20ac", 840)

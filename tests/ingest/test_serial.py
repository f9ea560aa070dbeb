"""The serial ingester against pseudo-terminals playing devices: splits, garbage, unplug and replug."""
import json
import os
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

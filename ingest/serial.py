"""Read a serial meter device and publish its readings (and events) to Kafka.

    python -m ingest.serial --device /dev/ttyACM0 --type emu2 --house H
    python -m ingest.serial --device /dev/ttyUSB0 --type pulse --house H --impulses-per-kwh 800

Readings go to the readings topic in the message contract of `smw.messages`;
EMU-2 summation and price messages go to the events topic (`KAFKA_EVENTS_TOPIC`).
Unplugging the device does not stop the ingester: it reconnects with backoff,
logging the first failure loudly and the repeats quietly. Frames it cannot parse
are counted and logged once per device, never fatal.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import orjson
import pyarrow as pa
import serial as pyserial

from ingest.devices import Event, Ignored, Reading
from ingest.devices.emu2 import Emu2
from ingest.devices.pulse import PulseMeter
from smw import config, messages
from smw.schema import READING_ARROW

log = logging.getLogger(__name__)
BAUD = {"emu2": 115200, "pulse": 9600}
LABELS = {"emu2": ("emu2", "mains"), "pulse": ("pulse_meter", "mains")}


class SerialIngester:
    """Reads frames from a port, parses them with a device, and hands results on."""

    def __init__(self, url: str, device, baudrate: int, house_id: str,
                 on_readings: Callable[[pa.Table], None], on_event: Callable[[Event], None],
                 clock: Callable[[], float] = time.time, max_backoff_s: float = 30.0):
        self.url, self.device, self.baudrate, self.house_id = url, device, baudrate, house_id
        self.on_readings, self.on_event, self.clock = on_readings, on_event, clock
        self.max_backoff_s = max_backoff_s
        self.counts: Counter = Counter()
        self.stop = threading.Event()
        self.label, self.appliance = LABELS[device.name]

    def _open(self):
        return pyserial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.2)

    def connections(self) -> Iterator[object]:
        """Open ports, one after another, with backoff between failed attempts."""
        failures, backoff_s = 0, 0.5
        while not self.stop.is_set():
            try:
                port = self._open()
            except (pyserial.SerialException, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.error("cannot open %s: %s; retrying with backoff (further failures logged at debug)",
                              self.url, exc)
                else:
                    log.debug("cannot open %s (attempt %d): %s", self.url, failures, exc)
                self.stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, self.max_backoff_s)
                continue
            if failures:
                log.info("%s is back after %d failed attempt(s)", self.url, failures)
            self.counts["connections"] += 1
            failures, backoff_s = 0, 0.5
            yield port

    def run(self) -> None:
        """Read until stop is set; survives the device vanishing and returning."""
        for port in self.connections():
            try:
                while not self.stop.is_set():
                    data = port.read(4096)
                    if data:
                        self.handle(data)
            except (pyserial.SerialException, OSError) as exc:
                self.counts["disconnects"] += 1
                log.warning("%s disconnected: %s; reconnecting", self.url, exc)
            finally:
                port.close()

    def handle(self, data: bytes) -> None:
        readings = []
        for frame in self.device.feed(data):
            result = self.device.parse(frame, self.clock())
            if isinstance(result, Reading):
                readings.append(result)
                if result.interval_ms is not None:  # a blink: also a point of the pulse-meter API
                    self.counts["events"] += 1
                    self.on_event(Event("pulse", result.ts_s, {"meter": result.meter, "ms": result.interval_ms}))
            elif isinstance(result, Event):
                self.counts["events"] += 1
                self.on_event(result)
            elif isinstance(result, Ignored):
                self.counts["ignored"] += 1
            else:
                self.counts["bad_frames"] += 1
                if self.counts["bad_frames"] == 1:
                    log.warning("unparseable frame from %s (counted; further ones logged at debug): %r",
                                self.url, frame[:120])
                else:
                    log.debug("unparseable frame: %r", frame[:120])
        if readings:
            self.counts["readings"] += len(readings)
            self.on_readings(pa.Table.from_pydict({
                "house_id": [self.house_id] * len(readings), "meter": [r.meter for r in readings],
                "label": [self.label] * len(readings), "appliance": [self.appliance] * len(readings),
                "ts_s": [r.ts_s for r in readings], "power_w": [r.power_w for r in readings],
            }, schema=READING_ARROW))


def event_message(house_id: str, event: Event) -> tuple[bytes, bytes]:
    """(key, value) of an events-topic message: {"v", "type", "house_id", "ts_s", ...fields}."""
    body = {"v": messages.SCHEMA_VERSION, "type": event.kind, "house_id": house_id, "ts_s": event.ts_s, **event.fields}
    return house_id.encode(), orjson.dumps(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.serial", description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True, help="serial port or pyserial URL, e.g. /dev/ttyACM0")
    parser.add_argument("--type", required=True, choices=["emu2", "pulse"], help="device protocol")
    parser.add_argument("--house", required=True, help="house id the readings belong to")
    parser.add_argument("--meter", type=int, default=1, help="meter number for single-meter devices (default 1)")
    parser.add_argument("--impulses-per-kwh", type=float, default=1000.0,
                        help="pulse meters: LED impulses per kWh printed on the meter (default 1000)")
    parser.add_argument("--baudrate", type=int, help="default: 115200 for emu2, 9600 for pulse")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_topic", "kafka_events_topic", "data_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        messages.validate({"v": 1, "type": "readings", "house_id": args.house,
                           "series": [{"meter": args.meter, "label": "x", "appliance": "x",
                                       "ts_s": [messages.MIN_TS_S], "power_w": [0.0]}]})
        device = Emu2(args.meter) if args.type == "emu2" else PulseMeter(args.impulses_per_kwh, args.meter)
    except (messages.InvalidMessage, ValueError) as exc:
        parser.error(str(exc))
    settings = config.from_args(args)

    from ingest import producer as producing

    # Devices send a reading every few seconds: a short linger keeps them live.
    kafka_producer = producing.make_producer(settings, linger_ms=5)
    quarantine = producing.Quarantine(producing.default_quarantine_path(settings))
    reading_stats, event_stats = producing.PublishStats(), producing.PublishStats()

    def send_readings(table: pa.Table) -> None:
        producing.publish([table], kafka_producer, settings.kafka_topic, quarantine=quarantine, flush=False,
                          stats=reading_stats, stop=ingester.stop,
                          max_future_skew_s=float(settings.max_future_skew_s))

    def send_event(event: Event) -> None:
        key, value = event_message(args.house, event)
        future = producing.send_with_retry(kafka_producer, settings.kafka_events_topic, key, value, event_stats,
                                           ingester.stop)
        if future is not None:
            event_stats.messages += 1
            future.add_callback(event_stats.on_delivered)
            future.add_errback(event_stats.on_failed)

    ingester = SerialIngester(args.device, device, args.baudrate or BAUD[args.type], args.house,
                              send_readings, send_event)
    signal.signal(signal.SIGINT, lambda *_: ingester.stop.set())
    signal.signal(signal.SIGTERM, lambda *_: ingester.stop.set())
    log.info("reading %s (%s) for house %s -> %s, events -> %s", args.device, args.type, args.house,
             settings.kafka_topic, settings.kafka_events_topic)
    try:
        ingester.run()
    finally:
        kafka_producer.flush()
        kafka_producer.close()
        quarantine.close()
        counts = ", ".join(f"{name} {count:,}" for name, count in sorted(ingester.counts.items()))
        quarantined = sum(reading_stats.quarantined.values())
        print(f"stopped: {counts or 'nothing read'}; readings sent {reading_stats.readings:,} in "
              f"{reading_stats.messages:,} messages (delivered {reading_stats.delivered:,}, failed "
              f"{reading_stats.failed:,}, quarantined {quarantined:,}); events sent {event_stats.messages:,} "
              f"(delivered {event_stats.delivered:,}, failed {event_stats.failed:,})")
    return 1 if reading_stats.failed or event_stats.failed else 0


if __name__ == "__main__":
    sys.exit(main())

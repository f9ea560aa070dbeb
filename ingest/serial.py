"""Read a serial meter device and publish its readings (and events) to Kafka.

    python -m ingest.serial --device /dev/ttyACM0 --type emu2 --house H
    python -m ingest.serial --device /dev/ttyUSB0 --type pulse --house H --impulses-per-kwh 800

Readings go to the readings topic in the message contract of `smw.messages`;
EMU-2 summation and price messages go to the events topic (`KAFKA_EVENTS_TOPIC`).
Every message is first written to a durable local spool (`ingest.spool`), which a
thread ships to Kafka: reading the port never waits on a broker, and an outage of
any length loses nothing up to the spool's bound. Unplugging the device does not
stop the ingester: it reconnects with backoff, logging the first failure loudly and
the repeats quietly. Frames it cannot use are counted by reason and logged once,
never fatal.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import serial as pyserial

from ingest.devices import Event, Ignored, Reading, Unknown
from ingest.devices.emu2 import Emu2
from ingest.devices.pulse import PulseMeter
from ingest.spool import DEFAULT_MAX_BYTES, Shipper, Spool, SpoolBusy, producer_options
from smw import config, messages
from smw.schema import READING_ARROW

log = logging.getLogger(__name__)
BAUD = {"emu2": 115200, "pulse": 9600}
LABELS = {"emu2": ("emu2", "mains"), "pulse": ("pulse_meter", "mains")}
MAX_NAMES = 100
SPOOL_ENV, SPOOL_MAX_MB_ENV = "SMW_SERIAL_SPOOL", "SMW_SERIAL_SPOOL_MAX_MB"
DEFAULT_SPOOL_MAX_MB = DEFAULT_MAX_BYTES >> 20


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
        self.unknown_names = 0

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
        """Frame and parse one read's bytes; no frame, however broken, stops the ingester."""
        readings = []
        for frame in self.device.feed(data):
            try:
                self._frame(frame, readings)
            except Exception as exc:  # noqa: BLE001 - a parser or callback bug costs one frame, not the run
                self._count_once("frame_errors", "frame from %s failed: %r (counted; further ones logged at debug): %r",
                                 self.url, exc, frame[:120], exc_info=True)
        if readings:
            try:
                self.on_readings(pa.Table.from_pydict({
                    "house_id": [self.house_id] * len(readings), "meter": [r.meter for r in readings],
                    "label": [self.label] * len(readings), "appliance": [self.appliance] * len(readings),
                    "ts_s": [r.ts_s for r in readings], "power_w": [r.power_w for r in readings],
                }, schema=READING_ARROW))
                self.counts["readings"] += len(readings)
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk under the spool: count, go on reading
                self.counts["readings_lost"] += len(readings)
                self._count_once("handoff_errors", "could not hand %d reading(s) on: %r (counted; further ones "
                                 "logged at debug)", len(readings), exc, exc_info=True)

    def _frame(self, frame: bytes, readings: list[Reading]) -> None:
        self.counts["frames"] += 1
        result = self.device.classify(frame, self.clock())
        if isinstance(result, Reading):
            readings.append(result)
            if result.interval_ms is not None:  # a blink: also a point of the pulse-meter API
                self.on_event(Event("pulse", result.ts_s, {"meter": result.meter, "ms": result.interval_ms}))
                self.counts["events"] += 1
        elif isinstance(result, Event):
            self.on_event(result)
            self.counts["events"] += 1
        elif isinstance(result, Ignored):
            self.counts["ignored"] += 1
        elif isinstance(result, Unknown):
            self.counts["unknown"] += 1
            # A garbled stream could invent tag names without end: past MAX_NAMES they share one counter.
            known = f"unknown:{result.tag}" in self.counts or self.unknown_names < MAX_NAMES
            name = f"unknown:{result.tag}" if known else "unknown:(other names)"
            if name not in self.counts:
                self.unknown_names += 1
                log.warning("unknown element <%s> from %s (counted per name; repeats not logged): %r",
                            result.tag, self.url, frame[:120])
            self.counts[name] += 1
        else:
            self.counts["bad_frames"] += 1
            self.counts[f"bad:{result.reason}"] += 1
            if self.counts["bad_frames"] == 1:
                log.warning("bad frame from %s: %s (counted by reason; further ones logged at debug): %r",
                            self.url, result.reason, frame[:120])
            else:
                log.debug("bad frame (%s): %r", result.reason, frame[:120])

    def _count_once(self, name: str, message: str, *args, exc_info: bool = False) -> None:
        self.counts[name] += 1
        if self.counts[name] == 1:
            log.error(message, *args, exc_info=exc_info)
        else:
            log.debug(message, *args)


def event_message(house_id: str, event: Event) -> tuple[bytes, bytes]:
    """(key, value) of an events-topic message: {"v", "type", "house_id", "ts_s", ...fields}."""
    body = {"v": messages.SCHEMA_VERSION, "type": event.kind, "house_id": house_id, "ts_s": event.ts_s, **event.fields}
    return house_id.encode(), orjson.dumps(body)


def default_spool_path(settings: config.Settings, house_id: str, device_type: str, meter: int) -> Path:
    """DATA_DIR/spool/serial-<house>-<type>-<meter>.db: the same file after a restart or a replug."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"serial-{house_id}-{device_type}-{meter}")
    return Path(settings.data_dir) / "spool" / f"{name}.db"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.serial", description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True, help="serial port or pyserial URL, e.g. /dev/ttyACM0")
    parser.add_argument("--type", required=True, choices=["emu2", "pulse"], help="device protocol")
    parser.add_argument("--house", required=True, help="house id the readings belong to")
    parser.add_argument("--meter", type=int, default=1, help="meter number for single-meter devices (default 1)")
    parser.add_argument("--impulses-per-kwh", type=float, default=1000.0,
                        help="pulse meters: LED impulses per kWh printed on the meter (default 1000)")
    parser.add_argument("--baudrate", type=int, help="default: 115200 for emu2, 9600 for pulse")
    spool_env = os.environ.get(SPOOL_ENV, "")
    max_mb_env = os.environ.get(SPOOL_MAX_MB_ENV, "")
    parser.add_argument("--spool", default=spool_env or None,
                        help=f"spool file (SQLite) every message goes through on its way to Kafka (env {SPOOL_ENV}; "
                             f"now {spool_env or 'DATA_DIR/spool/serial-<house>-<type>-<meter>.db'!r})")
    parser.add_argument("--spool-max-mb", type=float, default=max_mb_env or str(DEFAULT_SPOOL_MAX_MB),
                        help=f"bound of the spool in MiB of messages; when full the oldest are dropped, counted and "
                             f"logged (env {SPOOL_MAX_MB_ENV}; now {max_mb_env or DEFAULT_SPOOL_MAX_MB})")
    parser.add_argument("--drain-s", type=float, default=10.0,
                        help="on stop, seconds to go on shipping the spool to Kafka; the rest waits in the spool "
                             "for the next start (default 10)")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_topic", "kafka_events_topic", "data_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every refused connection while a broker is away; the shipper says it once.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        messages.validate({"v": 1, "type": "readings", "house_id": args.house,
                           "series": [{"meter": args.meter, "label": "x", "appliance": "x",
                                       "ts_s": [messages.MIN_TS_S], "power_w": [0.0]}]})
        device = Emu2(args.meter) if args.type == "emu2" else PulseMeter(args.impulses_per_kwh, args.meter)
        if args.spool_max_mb <= 0:
            raise ValueError("--spool-max-mb must be positive")
    except (messages.InvalidMessage, ValueError) as exc:
        parser.error(str(exc))
    settings = config.from_args(args)
    spool_path = Path(args.spool) if args.spool else default_spool_path(settings, args.house, args.type, args.meter)
    try:
        spool = Spool(spool_path, int(args.spool_max_mb * (1 << 20)))
    except (SpoolBusy, OSError, sqlite3.Error) as exc:
        print(f"error: cannot open the spool {spool_path}: {exc}", file=sys.stderr)
        return 2

    from ingest import producer as producing

    quarantine = producing.Quarantine(producing.default_quarantine_path(settings))
    reading_stats = producing.PublishStats()
    max_future_skew_s = float(settings.max_future_skew_s)

    def spool_readings(table: pa.Table) -> None:
        for key, value, count, _ in producing.messages_from_batch(
                table, producing.DEFAULT_READINGS_PER_MESSAGE, quarantine, reading_stats,
                max_future_skew_s=max_future_skew_s):
            spool.put(settings.kafka_topic, key, value, count)

    def spool_event(event: Event) -> None:
        key, value = event_message(args.house, event)
        spool.put(settings.kafka_events_topic, key, value)

    shipper = Shipper(spool, lambda: producing.make_producer(settings, **producer_options()),
                      rejected_path=Path(settings.data_dir) / "quarantine" / f"{spool_path.stem}-rejected.jsonl")
    ingester = SerialIngester(args.device, device, args.baudrate or BAUD[args.type], args.house,
                              spool_readings, spool_event)
    signal.signal(signal.SIGINT, lambda *_: ingester.stop.set())
    signal.signal(signal.SIGTERM, lambda *_: ingester.stop.set())
    if spool.records:
        log.info("%s holds %d message(s) (%d readings) from an earlier run: they are sent first",
                 spool_path, spool.records, spool.readings)
    log.info("reading %s (%s) for house %s -> spool %s -> %s, events -> %s", args.device, args.type, args.house,
             spool_path, settings.kafka_topic, settings.kafka_events_topic)
    shipper.start()
    try:
        ingester.run()
    finally:
        shipper.close(args.drain_s)
        quarantine.close()
        counts = ", ".join(f"{name} {count:,}" for name, count in sorted(ingester.counts.items()))
        readings, events = shipper.stats(settings.kafka_topic), shipper.stats(settings.kafka_events_topic)
        print(f"stopped: {counts or 'nothing read'}; readings sent {readings.sent.readings:,} in "
              f"{readings.sent.messages:,} messages (delivered {readings.delivered.readings:,}, failed "
              f"{readings.failed.readings:,}, quarantined {sum(reading_stats.quarantined.values()):,}); events sent "
              f"{events.sent.messages:,} (delivered {events.delivered.messages:,}, failed {events.failed.messages:,}); "
              f"{spool.summary()}" + (f"; sender errors {shipper.errors:,}" if shipper.errors else ""))
        spool.close()
    lost = shipper.rejected + spool.stats.dropped.messages + spool.stats.refused.messages
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())

"""Store pulse-meter blinks from the events topic in Cassandra, for the pulse-meter API.

    python -m ingest.pulse_store [--group smw-pulse-store] [--once]

`python -m ingest.serial --type pulse` publishes every blink as a `pulse` event
(`{"type": "pulse", "house_id", "ts_s", "meter", "ms"}`) beside its power reading.
This consumer writes each one to `pulse_points` ((meter_id, UTC day), stamp_ms) and
`pulse_days`, which `/last`, `/since`, `/aggregate`, `/hourly` and `/blip` read. The
meter id is `<house>-<meter>`. Offsets are committed after the rows are written
(at least once; the rows are upserts, so a redelivery writes the same rows). Other
event types are skipped; a pulse event that breaks the contract is counted, logged
and appended to a JSON-lines quarantine file, and the consumer goes on.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from smw import config, cql

log = logging.getLogger("ingest.pulse_store")

INSERT_POINT = "INSERT INTO pulse_points (meter_id, day, stamp_ms, ms) VALUES (?, ?, ?, ?)"
INSERT_DAY = "INSERT INTO pulse_days (meter_id, day) VALUES (?, ?)"
MAX_MS = 10**12


@dataclass(frozen=True)
class Point:
    meter_id: str
    day: dt.date
    stamp_ms: int
    ms: int


@dataclass
class Counts:
    points: int = 0
    skipped: int = 0
    quarantined: int = 0
    reasons: dict = field(default_factory=dict)


def meter_id(house_id: str, meter: int) -> str:
    return f"{house_id}-{meter}"


def point(value: bytes) -> Point | None | str:
    """The Point of a pulse event; None for other event types; a reason string for a bad pulse event."""
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    if not isinstance(body, dict):
        return "not a JSON object"
    if body.get("type") != "pulse":
        return None
    house_id, meter, ts_s, ms = body.get("house_id"), body.get("meter"), body.get("ts_s"), body.get("ms")
    if not isinstance(house_id, str) or not house_id:
        return "house_id missing"
    if isinstance(meter, bool) or not isinstance(meter, int) or meter < 0:
        return "meter must be a non-negative integer"
    if isinstance(ts_s, bool) or not isinstance(ts_s, (int, float)) or not 0 < ts_s < 4.1e9:
        return "ts_s must be epoch seconds"
    if isinstance(ms, bool) or not isinstance(ms, int) or not 0 < ms < MAX_MS:
        return "ms must be a positive integer"
    stamp_ms = int(round(ts_s * 1000))
    day = dt.datetime.fromtimestamp(stamp_ms / 1000, dt.timezone.utc).date()
    return Point(meter_id(house_id, meter), day, stamp_ms, ms)


class PulseStore:
    """Consume the events topic; write pulse points; commit after each written poll."""

    def __init__(self, settings: config.Settings, group: str, quarantine: Path):
        self.settings = settings
        self.group = group
        self.quarantine_path = quarantine
        self.counts = Counts()
        self.stop = threading.Event()

    def run(self, once: bool = False, poll_ms: int = 500) -> Counts:
        from cassandra.concurrent import execute_concurrent_with_args
        from kafka import KafkaConsumer

        handle, session = cql.connect(self.settings)
        insert_point, insert_day = session.prepare(INSERT_POINT), session.prepare(INSERT_DAY)
        consumer = KafkaConsumer(self.settings.kafka_events_topic, bootstrap_servers=self.settings.kafka_bootstrap_list,
                                 group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest",
                                 client_id="smw-pulse-store")
        days_written: set[tuple[str, dt.date]] = set()
        idle_polls = 0
        try:
            while not self.stop.is_set():
                polled = consumer.poll(timeout_ms=poll_ms, max_records=5000)
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    idle_polls += 1
                    if once and idle_polls >= 3:
                        break
                    continue
                idle_polls = 0
                points = []
                for record in records:
                    found = point(record.value)
                    if isinstance(found, Point):
                        points.append(found)
                    elif found is None:
                        self.counts.skipped += 1
                    else:
                        self.quarantine(record, found)
                if points:
                    execute_concurrent_with_args(session, insert_point,
                                                 [(p.meter_id, p.day, p.stamp_ms, p.ms) for p in points],
                                                 concurrency=32, raise_on_first_error=True)
                    new_days = {(p.meter_id, p.day) for p in points} - days_written
                    execute_concurrent_with_args(session, insert_day, list(new_days), concurrency=32,
                                                 raise_on_first_error=True)
                    days_written |= new_days
                    self.counts.points += len(points)
                consumer.commit()
        finally:
            consumer.close()
            handle.shutdown()
        return self.counts

    def quarantine(self, record, reason: str) -> None:
        self.counts.quarantined += 1
        self.counts.reasons[reason] = self.counts.reasons.get(reason, 0) + 1
        if self.counts.quarantined == 1:
            log.warning("bad pulse event (%s) at %s[%d]@%d; quarantined to %s (further ones logged at debug)",
                        reason, record.topic, record.partition, record.offset, self.quarantine_path)
        else:
            log.debug("bad pulse event (%s) at offset %d", reason, record.offset)
        self.quarantine_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.quarantine_path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"reason": reason, "topic": record.topic, "partition": record.partition,
                                  "offset": record.offset,
                                  "value": record.value.decode("utf-8", errors="replace")[:2000]}) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.pulse_store", description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="smw-pulse-store", help="Kafka consumer group (default smw-pulse-store)")
    parser.add_argument("--once", action="store_true", help="stop when the topic has nothing more (tests, backfills)")
    parser.add_argument("--quarantine", type=Path, help="bad events file (default DATA_DIR/quarantine/pulse-store.jsonl)")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_events_topic", "cassandra_hosts", "cassandra_keyspace",
                         "data_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.WARNING)
    settings = config.from_args(args)
    store = PulseStore(settings, args.group,
                       args.quarantine or Path(settings.data_dir) / "quarantine" / "pulse-store.jsonl")
    signal.signal(signal.SIGINT, lambda *_: store.stop.set())
    signal.signal(signal.SIGTERM, lambda *_: store.stop.set())
    log.info("storing pulse events from %s into %s.pulse_points", settings.kafka_events_topic,
             settings.cassandra_keyspace)
    try:
        counts = store.run(once=args.once)
    except Exception as exc:  # unreachable broker or Cassandra: a clear message, not a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"pulse points written {counts.points:,}; other events skipped {counts.skipped:,}; "
          f"quarantined {counts.quarantined:,}" + (f" ({counts.reasons})" if counts.reasons else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Store pulse-meter blinks from the events topic in Cassandra, for the pulse-meter API.

    python -m ingest.pulse_store [--group smw-pulse-store] [--once]

`python -m ingest.serial --type pulse` publishes every blink as a `pulse` event
(`{"type": "pulse", "house_id", "ts_s", "meter", "ms"}`) beside its power reading.
This consumer writes each one to `pulse_points` ((meter_id, UTC day), stamp_ms) and
`pulse_days`, which `/last`, `/since`, `/aggregate`, `/hourly` and `/blip` read. The
meter id is `<house>-<meter>`. Offsets are committed after the rows are written
(at least once; the rows are upserts, so a redelivery writes the same rows). Other
event types are skipped; a pulse event that breaks the contract (a house id over 64
characters included) or whose rows Cassandra rejects is counted, logged and appended
to a JSON-lines quarantine file, and the consumer goes on (`ingest.events`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from ingest.events import EventStore, Write, run_cli
from smw import config
from smw.messages import MAX_HOUSE_ID_LENGTH

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
    if len(house_id) > MAX_HOUSE_ID_LENGTH:  # a key Cassandra or the pulse API could not take
        return f"house_id longer than {MAX_HOUSE_ID_LENGTH} characters"
    if isinstance(meter, bool) or not isinstance(meter, int) or meter < 0:
        return "meter must be a non-negative integer"
    if isinstance(ts_s, bool) or not isinstance(ts_s, (int, float)) or not 0 < ts_s < 4.1e9:
        return "ts_s must be epoch seconds"
    if isinstance(ms, bool) or not isinstance(ms, int) or not 0 < ms < MAX_MS:
        return "ms must be a positive integer"
    stamp_ms = int(round(ts_s * 1000))
    day = dt.datetime.fromtimestamp(stamp_ms / 1000, dt.timezone.utc).date()
    return Point(meter_id(house_id, meter), day, stamp_ms, ms)


class PulseStore(EventStore):
    """Pulse events -> pulse_points and pulse_days rows."""

    kind = "pulse"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.days_written: set[tuple[str, dt.date]] = set()

    def prepare(self, session) -> None:
        self.insert_point, self.insert_day = session.prepare(INSERT_POINT), session.prepare(INSERT_DAY)

    def parse(self, value: bytes) -> Point | None | str:
        return point(value)

    def writes(self, items: list[Point]) -> list[Write]:
        rows = [Write(self.insert_point, (p.meter_id, p.day, p.stamp_ms, p.ms), (i,)) for i, p in enumerate(items)]
        days: dict[tuple[str, dt.date], list[int]] = {}
        for i, p in enumerate(items):
            if (p.meter_id, p.day) not in self.days_written:
                days.setdefault((p.meter_id, p.day), []).append(i)
        return rows + [Write(self.insert_day, key, tuple(owners)) for key, owners in days.items()]

    def written(self, items: list[Point]) -> None:
        self.days_written.update((p.meter_id, p.day) for p in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.pulse_store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", default="smw-pulse-store", help="Kafka consumer group (default smw-pulse-store)")
    parser.add_argument("--once", action="store_true", help="stop when the topic has nothing more (tests, backfills)")
    parser.add_argument("--quarantine", type=Path, help="bad events file (default DATA_DIR/quarantine/pulse-store.jsonl)")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_events_topic", "cassandra_hosts", "cassandra_port",
                         "cassandra_keyspace", "data_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = config.from_args(args)
    store = PulseStore(settings, args.group,
                       args.quarantine or Path(settings.data_dir) / "quarantine" / "pulse-store.jsonl")
    log.info("storing pulse events from %s into %s.pulse_points", settings.kafka_events_topic,
             settings.cassandra_keyspace)
    counts = run_cli(store, args.once)
    if counts is None:
        return 1
    print(f"pulse points written {counts.stored:,}; other events skipped {counts.skipped:,}; "
          f"quarantined {counts.quarantined:,}" + (f" ({counts.reasons})" if counts.reasons else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Store pulse-meter blinks from the events topic in Cassandra, for the pulse-meter API.

    python -m ingest.pulse_store [--group smw-pulse-store] [--once]

`python -m ingest.serial --type pulse` publishes every blink as a `pulse` event
(`{"type": "pulse", "house_id", "ts_s", "meter", "ms"}`) beside its power reading.
This consumer writes each one to `pulse_points` ((meter_id, UTC day), stamp_ms) and
`pulse_days`, which `/last`, `/since`, `/range`, `/aggregate` and `/blip` read, then
recomputes the minutes and hours the points fall in (`pulse_minutes`, `pulse_hours`),
which `/minutely`, `/hourly` and `/aggregate_hourly` read. The meter id is
`<house>-<meter>`. Offsets are committed after the rows are written (at least once; the
rows are upserts and the figures are recomputed, so a redelivery writes the same rows).
`--rebuild-rollups` recomputes every minute and hour from the points (a store whose
points were written without them). Other
event types are skipped; a pulse event that breaks the contract (a house id over 64
characters included) or whose rows Cassandra rejects is counted, logged and appended
to a JSON-lines quarantine file, and the consumer goes on (`ingest.events`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from ingest.events import EventStore, Write, event_body, run_cli
from smw import config

log = logging.getLogger("ingest.pulse_store")

INSERT_POINT = "INSERT INTO pulse_points (meter_id, day, stamp_ms, ms) VALUES (?, ?, ?, ?)"
INSERT_DAY = "INSERT INTO pulse_days (meter_id, day) VALUES (?, ?)"
MINUTE_FIGURES = ("SELECT count(*) AS blinks, sum(ms) AS sum_ms, min(ms) AS min_ms, max(ms) AS max_ms "
                  "FROM pulse_points WHERE meter_id = ? AND day = ? AND stamp_ms >= ? AND stamp_ms < ?")
INSERT_MINUTE = ("INSERT INTO pulse_minutes (meter_id, day, minute_ms, blinks, sum_ms, min_ms, max_ms) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)")
HOUR_MINUTES = ("SELECT blinks, sum_ms, min_ms, max_ms FROM pulse_minutes WHERE meter_id = ? AND day = ? "
                "AND minute_ms >= ? AND minute_ms < ?")
INSERT_HOUR = ("INSERT INTO pulse_hours (meter_id, month, hour_ms, blinks, sum_ms, min_ms, max_ms) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)")
MAX_MS = 10**12
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class Point:
    meter_id: str
    day: dt.date
    stamp_ms: int
    ms: int


def day_of(stamp_ms: int) -> dt.date:
    return EPOCH + dt.timedelta(days=stamp_ms // DAY_MS)


def month_of(day: dt.date) -> dt.date:
    return day.replace(day=1)


class Rollups:
    """Keeps pulse_minutes and pulse_hours exact for the points a writer has just written:
    each touched minute is recomputed from its points, then each touched hour from its minutes."""

    def __init__(self, session):
        self.session = session
        self.minute_figures, self.insert_minute = session.prepare(MINUTE_FIGURES), session.prepare(INSERT_MINUTE)
        self.hour_minutes, self.insert_hour = session.prepare(HOUR_MINUTES), session.prepare(INSERT_HOUR)

    def _run(self, statement, params: list[tuple]) -> list:
        """Rows of each query; raises the first error (the caller retries the whole refresh)."""
        from cassandra.concurrent import execute_concurrent_with_args

        results = execute_concurrent_with_args(self.session, statement, params, concurrency=64,
                                               raise_on_first_error=True)
        return [list(outcome) for _ok, outcome in results]

    def refresh(self, points: list[tuple[str, int]]) -> None:
        """Recompute the minutes and hours of (meter_id, stamp_ms) points."""
        minutes = sorted({(meter, stamp_ms - stamp_ms % MINUTE_MS) for meter, stamp_ms in points})
        figures = self._run(self.minute_figures, [(meter, day_of(start), start, start + MINUTE_MS)
                                                  for meter, start in minutes])
        self._run(self.insert_minute, [(meter, day_of(start), start, row.blinks, row.sum_ms, row.min_ms, row.max_ms)
                                       for (meter, start), (row,) in zip(minutes, figures) if row.blinks])
        self.refresh_hours(minutes)

    def refresh_hours(self, minutes: list[tuple[str, int]]) -> None:
        """Recompute the hours of (meter_id, minute_ms) minutes from their minute rows."""
        hours = sorted({(meter, start - start % HOUR_MS) for meter, start in minutes})
        found = self._run(self.hour_minutes, [(meter, day_of(start), start, start + HOUR_MS) for meter, start in hours])
        rows = []
        for (meter, start), minute_rows in zip(hours, found):
            if minute_rows:
                rows.append((meter, month_of(day_of(start)), start, sum(r.blinks for r in minute_rows),
                             sum(r.sum_ms for r in minute_rows), min(r.min_ms for r in minute_rows),
                             max(r.max_ms for r in minute_rows)))
        self._run(self.insert_hour, rows)

    def rebuild(self, meter_id: str, day: dt.date) -> int:
        """Recompute every minute and hour of one day partition from its points; the points read."""
        figures: dict[int, list[int]] = {}  # minute_ms -> [blinks, sum_ms, min_ms, max_ms], from the rows read
        points = 0
        for row in self.session.execute("SELECT stamp_ms, ms FROM pulse_points WHERE meter_id = %s AND day = %s",
                                        (meter_id, day)):
            points += 1
            found = figures.setdefault(row.stamp_ms - row.stamp_ms % MINUTE_MS, [0, 0, row.ms, row.ms])
            found[0] += 1
            found[1] += row.ms
            found[2], found[3] = min(found[2], row.ms), max(found[3], row.ms)
        if figures:
            self._run(self.insert_minute, [(meter_id, day, start, *values) for start, values in sorted(figures.items())])
            self.refresh_hours([(meter_id, start) for start in figures])
        return points


def store_points(session, points: list[tuple[str, int, int]]) -> None:
    """Write (meter_id, stamp_ms, ms) points, their days and their minutes and hours, as the
    store does (backfills and tests)."""
    from cassandra.concurrent import execute_concurrent_with_args

    execute_concurrent_with_args(session, session.prepare(INSERT_POINT),
                                 [(m, day_of(stamp_ms), stamp_ms, ms) for m, stamp_ms, ms in points],
                                 concurrency=100, raise_on_first_error=True)
    execute_concurrent_with_args(session, session.prepare(INSERT_DAY),
                                 sorted({(m, day_of(stamp_ms)) for m, stamp_ms, _ms in points}),
                                 concurrency=100, raise_on_first_error=True)
    Rollups(session).refresh([(m, stamp_ms) for m, stamp_ms, _ms in points])


def rebuild_rollups(session, meter_ids: list[str] | None = None) -> tuple[int, int]:
    """Recompute the minutes and hours of every day of the given meters (all meters by default);
    (day partitions, points read)."""
    from tqdm import tqdm

    rollups = Rollups(session)
    if meter_ids is None:
        meter_ids = sorted({row.meter_id for row in session.execute("SELECT DISTINCT meter_id FROM pulse_days")})
    days = [(m, row.day.date() if hasattr(row.day, "date") else row.day)
            for m in meter_ids for row in session.execute("SELECT day FROM pulse_days WHERE meter_id = %s", (m,))]
    points = 0
    for meter, day in tqdm(days, unit=" days", desc="rebuilding pulse minutes and hours", disable=not days):
        points += rollups.rebuild(meter, day)
    return len(days), points


def meter_id(house_id: str, meter: int) -> str:
    return f"{house_id}-{meter}"


def point(value: bytes) -> Point | None | str:
    """The Point of a pulse event; None for other event types; a reason string for a bad pulse event."""
    body = event_body(value, "pulse")
    if not isinstance(body, dict):
        return body
    house_id, meter, ts_s, ms = body["house_id"], body.get("meter"), body.get("ts_s"), body.get("ms")
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
        self.rollups = Rollups(session)

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
        self.kept = items

    def write(self, session, parsed: list[tuple[object, object]]) -> bool:
        """The points, then the minutes and hours of those written (quarantined ones left out),
        before the poll is committed: a refresh that fails is retried like a write."""
        self.kept: list[Point] = []
        if not super().write(session, parsed):
            return False
        points = [(p.meter_id, p.stamp_ms) for p in self.kept]
        return not points or self.retry(lambda: self.rollups.refresh(points), "minute and hour figures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.pulse_store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", default="smw-pulse-store", help="Kafka consumer group (default smw-pulse-store)")
    parser.add_argument("--once", action="store_true", help="stop when the topic has nothing more (tests, backfills)")
    parser.add_argument("--quarantine", type=Path, help="bad events file (default DATA_DIR/quarantine/pulse-store.jsonl)")
    parser.add_argument("--rebuild-rollups", action="store_true",
                        help="recompute the minute and hour figures from the points (every meter's, or those "
                             "of --meter), then exit")
    parser.add_argument("--meter", action="append", metavar="METER_ID",
                        help="with --rebuild-rollups: only this meter id (<house>-<meter>; repeatable)")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_events_topic", "cassandra_hosts", "cassandra_port",
                         "cassandra_keyspace", "data_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = config.from_args(args)
    if args.meter and not args.rebuild_rollups:
        parser.error("--meter goes with --rebuild-rollups")
    if args.rebuild_rollups:
        return rebuild_cli(settings, args.meter)
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


def rebuild_cli(settings: config.Settings, meter_ids: list[str] | None) -> int:
    from smw import cql

    try:
        handle, session = cql.connect(settings)
    except cql.Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        days, points = rebuild_rollups(session, meter_ids)
    except Exception as exc:  # a Cassandra that stops answering: one line, not a traceback
        print(f"error: rebuilding stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        handle.shutdown()
    print(f"minute and hour figures rebuilt for {days:,} meter-days from {points:,} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())

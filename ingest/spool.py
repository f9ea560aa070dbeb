"""A durable, bounded, ordered queue of Kafka messages on local disk, and the thread that ships it.

    python -m ingest.spool var/data/spool/serial-h1-emu2-1.db    # what a spool holds

The serial ingester writes every message (readings and events, already encoded) to a
`Spool` before anything talks to Kafka, so reading a port never waits on a broker. A
`Shipper` thread sends the spooled messages to Kafka in spool order, one batch at a time,
and removes each one only after the broker acknowledged it; on the next start whatever
was left is sent first.

Storage: one SQLite database in WAL mode with `synchronous=FULL` (a put returns once the
message is on disk) and an autoincrement id that gives the order. SQLite does the
crash-safe bookkeeping (a half-written record, a delete that did not happen) that a
hand-made segment file would need a format and a recovery pass for, and it ships with
Python. The bound is on the payload bytes (key + value): when a message would not fit,
the oldest messages not in flight are dropped to make room (counted and logged), so a
very long outage keeps the most recent readings; a message that still cannot fit is
refused (counted and logged).

Delivery: the producer is idempotent with one request in flight and never expires a
queued message (`delivery_timeout_ms` at its maximum), so within one run a broker
outage of any length delivers every spooled message once, in order. A message is
removed only after its acknowledgement, so a process killed while a batch was in
flight sends that batch again on restart (at least once); the messages are
byte-identical, their content being fixed when spooled.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 << 20
BATCH_RECORDS = 500
BATCH_BYTES = 1 << 20
# The producer keeps retrying a queued message for this long (kafka-python's largest value,
# ~24.8 days) instead of its 120 s default: an outage longer than that must not expire it.
NEVER_EXPIRE_MS = 2**31 - 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    readings INTEGER NOT NULL,
    size INTEGER NOT NULL,
    spooled_s REAL NOT NULL
)
"""


class SpoolBusy(RuntimeError):
    """Another process has this spool open."""


@dataclass(frozen=True)
class Record:
    """One spooled message: where it goes, what it says, how many readings it carries."""

    id: int
    topic: str
    key: bytes | None
    value: bytes
    readings: int
    size: int


@dataclass
class Tally:
    """A count of messages and the readings in them."""

    messages: int = 0
    readings: int = 0

    def add(self, records: list[Record] | Record) -> None:
        records = records if isinstance(records, list) else [records]
        self.messages += len(records)
        self.readings += sum(r.readings for r in records)

    def __str__(self) -> str:
        return f"{self.messages:,} ({self.readings:,} readings)"


@dataclass
class SpoolStats:
    """What went into and out of the spool during this run."""

    recovered: Tally = field(default_factory=Tally)  # left by an earlier run, found at open
    spooled: Tally = field(default_factory=Tally)
    removed: Tally = field(default_factory=Tally)  # acknowledged by Kafka (or rejected by it)
    dropped: Tally = field(default_factory=Tally)  # oldest, evicted when full
    refused: Tally = field(default_factory=Tally)  # new, larger than the room the bound leaves


class Spool:
    """A bounded FIFO of Kafka messages in a SQLite file; safe to share between two threads."""

    def __init__(self, path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes <= 0:
            raise ValueError("the spool's bound must be positive")
        self.path, self.max_bytes = Path(path), max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Two ingesters shipping one spool would send every message twice.
        self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolBusy(f"{self.path} is in use by another process") from None
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA journal_size_limit = 4194304")
        self._db.execute(SCHEMA)
        self._cond = threading.Condition()
        self.stats = SpoolStats()
        self.records, self.bytes, readings = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(readings), 0) FROM messages").fetchone()
        self.stats.recovered = Tally(self.records, readings)
        self.readings = readings
        self.in_flight_through = 0  # ids up to this one are being sent: never evicted

    # -- writer side -----------------------------------------------------------
    def put(self, topic: str, key: bytes | None, value: bytes, readings: int = 0) -> bool:
        """Append a message durably; False if the bound refused it (counted and logged)."""
        size, readings = len(key or b"") + len(value), int(readings)  # int(): numpy counts would be stored as blobs
        with self._cond:
            need = self.bytes + size - self.max_bytes
            evicted = self._oldest_to_evict(need) if need > 0 else []
            if need > 0 and sum(r.size for r in evicted) < need:
                self.stats.refused.add(Record(0, topic, key, value, readings, size))
                self._warn(self.stats.refused.messages == 1, "spool %s full (%d bytes, bound %d) and nothing left to "
                           "drop: refused a message of %d bytes", self.path, self.bytes, self.max_bytes, size)
                return False
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if evicted:
                    self._db.execute("DELETE FROM messages WHERE id > ? AND id <= ?",
                                     (self.in_flight_through, evicted[-1].id))
                self._db.execute("INSERT INTO messages (topic, key, value, readings, size, spooled_s) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", (topic, key, value, readings, size, time.time()))
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
            if evicted:
                self._forget(evicted)
                first = self.stats.dropped.messages == 0
                self.stats.dropped.add(evicted)
                self._warn(first,
                           "spool %s full (bound %d bytes): dropped its %d oldest message(s) (%d readings) "
                           "to make room", self.path, self.max_bytes, len(evicted), sum(r.readings for r in evicted))
            self.records += 1
            self.bytes += size
            self.readings += readings
            self.stats.spooled.add(Record(0, topic, key, value, readings, size))
            self._cond.notify_all()
        return True

    def _oldest_to_evict(self, need: int) -> list[Record]:
        """The oldest messages past the batch in flight whose sizes add up to `need` (or all there are)."""
        evicted, freed = [], 0
        rows = self._db.execute("SELECT id, topic, readings, size FROM messages WHERE id > ? ORDER BY id",
                                (self.in_flight_through,))
        for record_id, topic, readings, size in rows:
            evicted.append(Record(record_id, topic, None, b"", readings, size))
            freed += size
            if freed >= need:
                break
        rows.close()
        return evicted

    @staticmethod
    def _warn(first: bool, message: str, *args) -> None:
        """The first of a kind as an error, the rest at debug (the stop line has the totals)."""
        if first:
            log.error(message + " (counted; repeats logged at debug)", *args)
        else:
            log.debug(message, *args)

    # -- sender side -------------------------------------------------------------
    def peek(self, max_records: int = BATCH_RECORDS, max_bytes: int = BATCH_BYTES,
             wait_s: float = 0.0) -> list[Record]:
        """The oldest messages (at least one if any, at most `max_records` and about `max_bytes`),
        waiting up to `wait_s` for one; they are in flight until `remove` or `release`."""
        with self._cond:
            if self.records == 0 and wait_s > 0:
                self._cond.wait(wait_s)
            batch, total = [], 0
            rows = self._db.execute("SELECT id, topic, key, value, readings, size FROM messages ORDER BY id LIMIT ?",
                                    (max_records,))
            for row in rows:
                record = Record(*row)
                if batch and total + record.size > max_bytes:
                    break
                batch.append(record)
                total += record.size
            rows.close()
            self.in_flight_through = batch[-1].id if batch else 0
            return batch

    def remove(self, records: list[Record]) -> None:
        """Forget messages Kafka acknowledged; ends the batch in flight."""
        with self._cond:
            ids = [r.id for r in records]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    # Some may have been dropped meanwhile; count only what this delete removed.
                    present = {row[0] for row in self._db.execute(
                        f"SELECT id FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk)}
                    self._db.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                    gone = [r for r in records[start:start + 500] if r.id in present]
                    self._forget(gone)
                    self.stats.removed.add(gone)
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
            self.in_flight_through = 0
            if self.records == 0:
                # Give the pages of a backlog back to the file system once it is shipped.
                self._db.execute("PRAGMA incremental_vacuum")

    def release(self) -> None:
        """End the batch in flight without removing anything (it is sent again)."""
        with self._cond:
            self.in_flight_through = 0

    def _forget(self, records: list[Record]) -> None:
        self.records -= len(records)
        self.bytes -= sum(r.size for r in records)
        self.readings -= sum(r.readings for r in records)

    def summary(self) -> str:
        """One line: what is left, where, and what the bound did."""
        stats = self.stats
        return (f"spool {self.path}: {self.records:,} messages ({self.readings:,} readings, {self.bytes:,} bytes) "
                f"left of a {self.max_bytes:,}-byte bound; found at start {stats.recovered}, spooled "
                f"{stats.spooled}, shipped {stats.removed}, dropped when full {stats.dropped}, refused "
                f"{stats.refused}")

    def close(self) -> None:
        with self._cond:
            self._db.close()
            self._lock_file.close()


@dataclass
class TopicStats:
    """The shipper's figures for one topic."""

    sent: Tally = field(default_factory=Tally)
    delivered: Tally = field(default_factory=Tally)
    failed: Tally = field(default_factory=Tally)


class Shipper:
    """Sends a spool's messages to Kafka in order, one batch in flight, removing each once acknowledged.

    `connect()` returns a producer (with `producer_options`); while it raises (no broker
    yet) the shipper retries with backoff, the first failure logged as an error, repeats at
    debug. A message the broker refuses for good (too large, invalid, not authorised) is
    appended to `rejected_path` with the error, counted and removed, so it cannot block the
    spool. Any other failure keeps the message: a new producer sends it again.
    """

    def __init__(self, spool: Spool, connect: Callable[[], object], rejected_path: Path | None = None,
                 max_backoff_s: float = 5.0):
        self.spool, self.connect, self.rejected_path = spool, connect, rejected_path
        self.max_backoff_s = max_backoff_s
        self.topics: dict[str, TopicStats] = {}
        self.connect_failures = 0
        self.send_timeouts = 0
        self.errors = 0
        self.stop = threading.Event()  # stop now, whatever is left
        self.draining = threading.Event()  # stop once the spool is empty
        self.producer = None
        self._in_flight: list = []  # (record, future) of a batch the stop left unsettled
        self._thread = threading.Thread(target=self.run, name="spool-shipper", daemon=True)

    def start(self) -> "Shipper":
        self._thread.start()
        return self

    def close(self, drain_s: float) -> None:
        """Ship what is left for up to `drain_s` seconds, then stop and close the producer."""
        self.draining.set()
        self._thread.join(drain_s)
        self.stop.set()
        self._thread.join()
        self._drop_producer(timeout_s=5)
        # A batch cut short by the stop may have been acknowledged while the producer closed.
        acked = [record for record, future in self._in_flight if future.succeeded()]
        for record in acked:
            self.stats(record.topic).delivered.add(record)
        if acked:
            self.spool.remove(acked)
        self._in_flight = []

    def stats(self, topic: str) -> TopicStats:
        return self.topics.setdefault(topic, TopicStats())

    @property
    def rejected(self) -> int:
        return sum(stats.failed.messages for stats in self.topics.values())

    def run(self) -> None:
        backoff_s = 0.5
        while not self.stop.is_set():
            try:
                if self.producer is None and not self._connect():
                    if self.draining.is_set() or self.stop.wait(backoff_s):
                        return  # stopping: what is spooled stays for the next run
                    backoff_s = min(backoff_s * 2, self.max_backoff_s)
                    continue
                backoff_s = 0.5
                batch = self.spool.peek(wait_s=0.2)
                if not batch:
                    if self.draining.is_set():
                        return
                    continue
                self._ship(batch)
            except Exception:  # noqa: BLE001 - the shipper must outlive anything; the spool keeps the data
                self.errors += 1
                log.log(logging.ERROR if self.errors == 1 else logging.DEBUG,
                        "spool shipper error (counted; the batch stays spooled and is sent again)", exc_info=True)
                self.spool.release()
                self._drop_producer(timeout_s=0)
                self.stop.wait(1.0)

    def _connect(self) -> bool:
        from kafka.errors import KafkaError

        try:
            self.producer = self.connect()
        except KafkaError as exc:
            self.connect_failures += 1
            if self.connect_failures == 1:
                log.error("Kafka unreachable: %s; messages wait in %s, retrying with backoff "
                          "(repeats logged at debug)", exc, self.spool.path)
            else:
                log.debug("Kafka still unreachable (attempt %d): %s", self.connect_failures, exc)
            return False
        if self.connect_failures:
            log.info("Kafka reachable after %d failed attempt(s); shipping %d spooled message(s)",
                     self.connect_failures, self.spool.records)
            self.connect_failures = 0
        return True

    def _drop_producer(self, timeout_s: float) -> None:
        from kafka.errors import KafkaError

        if self.producer is not None:
            producer, self.producer = self.producer, None
            try:
                producer.close(timeout=timeout_s)
            except KafkaError as exc:
                # Nothing unacknowledged has left the spool, so nothing is lost by not waiting.
                log.debug("producer closed with messages unacknowledged: %s", exc)

    def _send(self, record: Record):
        """The record's future; None if stopped, or the error if Kafka refused it before queueing."""
        from kafka.errors import KafkaTimeoutError

        while True:
            try:
                return self.producer.send(record.topic, key=record.key, value=record.value)
            except KafkaTimeoutError as exc:  # no metadata for the topic: broker away, topic missing
                self.send_timeouts += 1
                log.log(logging.ERROR if self.send_timeouts == 1 else logging.DEBUG,
                        "cannot queue a message for %s: %s; retrying (repeats logged at debug)", record.topic, exc)
                if self.stop.wait(1.0):
                    return None
            except REFUSED as exc:
                return exc

    def _ship(self, batch: list[Record]) -> None:
        sent, refused = [], []
        for record in batch:
            future = self._send(record)
            if future is None:
                break
            if isinstance(future, BaseException):
                refused.append((record, future))
                continue
            self.stats(record.topic).sent.add(record)
            sent.append((record, future))
        # One batch in flight: the next is cut only once this one is settled, so a retry
        # can never overtake a later message.
        while not all(future.is_done for _, future in sent) and not self.stop.wait(0.02):
            pass
        acked = [record for record, future in sent if future.succeeded()]
        failed = [(record, future.exception) for record, future in sent if future.failed()]
        self._in_flight = [(record, future) for record, future in sent if not future.is_done]
        refused += [(record, exc) for record, exc in failed if isinstance(exc, REFUSED)]
        for record in acked:
            self.stats(record.topic).delivered.add(record)
        for record, exc in refused:
            self._reject(record, exc)
        self.spool.remove(acked + [record for record, _ in refused])
        lost = [exc for _, exc in failed if not isinstance(exc, REFUSED)]
        if lost:
            # Kept in the spool; a fresh producer (new id and sequence numbers) sends them again.
            raise RuntimeError(f"{len(lost)} message(s) not acknowledged: {lost[0]!r}")

    def _reject(self, record: Record, exc: BaseException) -> None:
        self.stats(record.topic).failed.add(record)
        Spool._warn(self.rejected == 1, "Kafka refused a message for %s for good: %s; removed from the spool%s",
                    record.topic, exc, f" into {self.rejected_path}" if self.rejected_path else "")
        if self.rejected_path is not None:
            self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.rejected_path, "a", encoding="utf-8") as out:
                out.write(json.dumps({"reason": f"{type(exc).__name__}: {exc}", "topic": record.topic,
                                      "key": (record.key or b"").decode(errors="replace"),
                                      "value": record.value.decode(errors="replace")}) + "\n")


def _refused_errors() -> tuple[type[BaseException], ...]:
    """Errors after which sending the same message again cannot succeed."""
    from kafka import errors

    return (errors.MessageSizeTooLargeError, errors.RecordListTooLargeError, errors.InvalidTopicError,
            errors.TopicAuthorizationFailedError, errors.InvalidRecordError, errors.UnsupportedForMessageFormatError)


REFUSED = _refused_errors()


def producer_options() -> dict:
    """Overrides of the tuned producer defaults for shipping a spool."""
    return {
        "linger_ms": 5,  # a device sends a few readings a second: keep them live
        "delivery_timeout_ms": NEVER_EXPIRE_MS,
        "max_block_ms": 10000,  # a send without metadata gives up after 10 s and is retried
        "reconnect_backoff_max_ms": 5000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.spool", description="Show what a spool holds.")
    parser.add_argument("path", help="the spool file (python -m ingest.serial --help shows the default)")
    args = parser.parse_args(argv)
    if not Path(args.path).is_file():
        parser.error(f"no spool at {args.path}")
    # Read-only: works while an ingester has the spool open.
    db = sqlite3.connect(f"file:{args.path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT topic, count(*), sum(readings), sum(size), min(spooled_s), max(spooled_s) "
                          "FROM messages GROUP BY topic ORDER BY topic").fetchall()
    finally:
        db.close()
    if not rows:
        print(f"{args.path}: empty")
    for topic, count, readings, size, oldest_s, newest_s in rows:
        print(f"{topic}: {count:,} messages, {readings:,} readings, {size:,} bytes, spooled "
              f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(oldest_s))} .. "
              f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(newest_s))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

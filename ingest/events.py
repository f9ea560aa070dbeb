"""The consumer loop of the stores of device events: events topic (Kafka) -> Cassandra rows.

`ingest.pulse_store` and `ingest.price_store` are an `EventStore` each: `parse` turns a
record's value into an item (None: an event type the store does not keep; a string: why
the event is bad), `writes` turns items into rows. The loop gives both the same guarantees:

- at least once: offsets are committed after a poll's rows are written; rows are upserts,
  so a redelivered event writes the same rows again;
- a bad record never stops the store and is never retried for ever: an event that breaks
  the contract, or whose row Cassandra rejects (InvalidRequest, e.g. a key over 65,535 bytes,
  or a value the driver cannot even serialise), is counted, logged (the first of a run as a
  warning, the others at debug) and appended to a JSON-lines quarantine file;
- Cassandra not answering (no host, timeouts, unavailable replicas) is no record's fault:
  nothing is quarantined and nothing committed. A continuous run logs it once and writes
  the poll again with backoff (1 s to 30 s) until Cassandra takes it; a `--once` run stops
  with `CassandraDown`, a one-line message, and a rerun starts again from the last commit.
"""
from __future__ import annotations

import json
import logging
import signal
import struct
import sys
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from cassandra import DriverException, InvalidRequest
from cassandra.cluster import NoHostAvailable
from kafka.errors import KafkaError

from smw import config, cql, kafka_clients
from smw.messages import MAX_HOUSE_ID_LENGTH

log = logging.getLogger(__name__)

# An InvalidRequest that names the schema is the deployment's fault, not the record's: waiting
# (for make init) is right, quarantining every record would not be.
SCHEMA_ERRORS = ("unconfigured table", "keyspace", "undefined column", "unknown identifier")
QUARANTINED_VALUE_CHARS = 2000


def event_body(value: bytes, kind: str) -> dict | None | str:
    """The JSON object of an events-topic record of this type (`"type": kind`) with a usable
    house_id; None for another type; a reason string for a bad record."""
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    if not isinstance(body, dict):
        return "not a JSON object"
    if body.get("type") != kind:
        return None
    house_id = body.get("house_id")
    if not isinstance(house_id, str) or not house_id:
        return "house_id missing"
    if len(house_id) > MAX_HOUSE_ID_LENGTH:  # a key Cassandra or the web API could not take
        return f"house_id longer than {MAX_HOUSE_ID_LENGTH} characters"
    return body


class CassandraDown(RuntimeError):
    """Cassandra did not take a poll's writes; the message is one line."""


@dataclass(frozen=True)
class Write:
    """One row to write: a prepared statement, its values, and the polled items it stores."""

    statement: object
    values: tuple
    items: tuple[int, ...]


@dataclass
class Counts:
    stored: int = 0  # events whose rows were written
    skipped: int = 0  # other event types
    unchanged: int = 0  # events that repeat what is stored (a store may skip them)
    quarantined: int = 0
    reasons: dict = field(default_factory=dict)


def one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def rejects_record(exc: BaseException) -> bool:
    """True when a failed write is the record's own fault (it would fail again), False when
    Cassandra is not answering or its schema is missing."""
    if isinstance(exc, InvalidRequest):
        return not any(word in str(exc).lower() for word in SCHEMA_ERRORS)
    # Raised by the driver while serialising the values, before anything is sent.
    return isinstance(exc, (struct.error, TypeError, ValueError, OverflowError))


class EventStore(ABC):
    """Consume the events topic; write each poll's rows; commit after each written poll."""

    kind = "event"  # what the logs and the quarantine call a record

    def __init__(self, settings: config.Settings, group: str, quarantine: Path, max_backoff_s: float = 30.0):
        self.settings = settings
        self.group = group
        self.quarantine_path = quarantine
        self.max_backoff_s = max_backoff_s
        self.counts = Counts()
        self.stop = threading.Event()
        self.once = False

    # The store's own part ------------------------------------------------------------------
    @abstractmethod
    def prepare(self, session) -> None:
        """Prepare the store's statements."""

    @abstractmethod
    def parse(self, value: bytes) -> object | None | str:
        """The item of a record's value; None for an event type the store does not keep; a reason string."""

    @abstractmethod
    def writes(self, items: list) -> list[Write]:
        """The rows of a poll's items (`items[i]` is stored by every Write whose `items` holds i; an item
        no Write holds repeats what is stored and counts as unchanged)."""

    def written(self, items: list) -> None:
        """Called with the items whose rows were all written (the store may remember them)."""

    # The loop ------------------------------------------------------------------------------
    def run(self, once: bool = False, poll_ms: int = 500) -> Counts:
        """Consume until stopped (or, once, until the topic has nothing more). Raises cql.Unavailable
        when Cassandra cannot be reached at the start, CassandraDown when a --once run cannot write."""
        self.once = once
        handle, session = cql.connect(self.settings)
        try:
            self.prepare(session)
            consumer = kafka_clients.consumer(self.settings, self.settings.kafka_events_topic, group_id=self.group,
                                              enable_auto_commit=False, auto_offset_reset="earliest",
                                              client_id=f"smw-{self.kind}-store")
            try:
                self._consume(consumer, session, poll_ms)
            finally:
                consumer.close()
        finally:
            handle.shutdown()
        return self.counts

    def _consume(self, consumer, session, poll_ms: int) -> None:
        idle_polls = 0
        while not self.stop.is_set():
            polled = consumer.poll(timeout_ms=poll_ms, max_records=5000)
            records = [r for batch in polled.values() for r in batch]
            if not records:
                idle_polls += 1
                if self.once and idle_polls >= 3:
                    return
                continue
            idle_polls = 0
            parsed = []
            for record in records:
                found = "no value" if record.value is None else self.parse(record.value)
                if isinstance(found, str):
                    self.quarantine(record, found)
                elif found is None:
                    self.counts.skipped += 1
                else:
                    parsed.append((record, found))
            if parsed and not self.write(session, parsed):
                return  # stopped while Cassandra was down: nothing committed
            consumer.commit()

    def write(self, session, parsed: list[tuple[object, object]]) -> bool:
        """Write the rows of (record, item) pairs; quarantine the records Cassandra rejects. False when
        stopped before Cassandra took them; raises CassandraDown on a --once run that cannot write."""
        from cassandra.concurrent import execute_concurrent

        items = [item for _record, item in parsed]
        failures, backoff_s = 0, 1.0
        while True:
            rows = self.writes(items)
            results = execute_concurrent(session, [(w.statement, w.values) for w in rows], concurrency=32,
                              raise_on_first_error=False)
            rejected: dict[int, str] = {}
            down = None
            for row, (ok, outcome) in zip(rows, results):
                if ok:
                    continue
                if rejects_record(outcome):
                    for i in row.items:
                        rejected.setdefault(i, f"rejected by Cassandra: {type(outcome).__name__}: {one_line(outcome)}")
                else:
                    down = outcome
            if down is None:
                break
            failures += 1
            if not self.back_off(down, "rows", failures, backoff_s):
                return False
            backoff_s = min(backoff_s * 2, self.max_backoff_s)
        if failures:
            log.info("Cassandra takes the %s rows again after %d failed attempt(s)", self.kind, failures)
        for i, reason in sorted(rejected.items()):
            self.quarantine(parsed[i][0], reason)
        with_rows = {i for row in rows for i in row.items}
        kept = [item for i, item in enumerate(items) if i in with_rows and i not in rejected]
        self.written(kept)
        self.counts.stored += len(kept)
        self.counts.unchanged += len(items) - len(with_rows)
        return True

    def back_off(self, error: BaseException, what: str, failures: int, backoff_s: float) -> bool:
        """After a failed write: log it (loudly the first time), wait backoff_s; False when stopped
        meanwhile. A --once run raises CassandraDown instead."""
        message = f"Cassandra did not take the {self.kind} {what} ({type(error).__name__}: {one_line(error)})"
        if self.once:
            raise CassandraDown(message + "; nothing committed: a rerun starts again from the last commit")
        if failures == 1:
            log.error("%s; writing them again with backoff, nothing committed meanwhile "
                      "(further failures logged at debug)", message)
        else:
            log.debug("%s (attempt %d)", message, failures)
        return not self.stop.wait(backoff_s)

    def retry(self, action, what: str) -> bool:
        """Run a write action until it succeeds (True), backing off between failures; False when
        stopped first."""
        failures, backoff_s = 0, 1.0
        while True:
            try:
                action()
            except Exception as exc:  # Cassandra not answering, or a schema missing: retried
                failures += 1
                if not self.back_off(exc, what, failures, backoff_s):
                    return False
                backoff_s = min(backoff_s * 2, self.max_backoff_s)
                continue
            if failures:
                log.info("Cassandra takes the %s %s again after %d failed attempt(s)", self.kind, what, failures)
            return True

    def quarantine(self, record, reason: str) -> None:
        """Count, log and append a bad record to the quarantine file."""
        self.counts.quarantined += 1
        kind = reason.split(":", 1)[0]  # Cassandra's messages carry the record's values: count by kind
        self.counts.reasons[kind] = self.counts.reasons.get(kind, 0) + 1
        if self.counts.quarantined == 1:
            log.warning("bad %s event (%s) at %s[%d]@%d; quarantined to %s (further ones logged at debug)",
                        self.kind, reason, record.topic, record.partition, record.offset, self.quarantine_path)
        else:
            log.debug("bad %s event (%s) at %s[%d]@%d", self.kind, reason, record.topic, record.partition,
                      record.offset)
        value = (record.value or b"").decode("utf-8", errors="replace")
        self.quarantine_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.quarantine_path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"reason": reason, "topic": record.topic, "partition": record.partition,
                                  "offset": record.offset, "value_bytes": len(record.value or b""),
                                  "value": value[:QUARANTINED_VALUE_CHARS]}) + "\n")


# What ends a store's run with a one-line error instead of a traceback: no broker, no Cassandra
# at the start (cql.Unavailable), a --once run Cassandra would not take, a missing table.
STOP_ERRORS = (cql.Unavailable, CassandraDown, KafkaError, DriverException, NoHostAvailable)


def run_cli(store: EventStore, once: bool) -> Counts | None:
    """Run a store from its command line: Ctrl-C and SIGTERM stop it after the current poll; a
    STOP_ERRORS error is printed as one line and gives None."""
    signal.signal(signal.SIGINT, lambda *_: store.stop.set())
    signal.signal(signal.SIGTERM, lambda *_: store.stop.set())
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.WARNING)
    try:
        return store.run(once=once)
    except STOP_ERRORS as exc:
        ours = isinstance(exc, (cql.Unavailable, CassandraDown, kafka_clients.KafkaAuthError))
        print(f"error: {one_line(exc, 400) if ours else f'{type(exc).__name__}: {one_line(exc, 400)}'}",
              file=sys.stderr)
        return None

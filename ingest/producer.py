"""Publish readings to Kafka: one `publish()` for every source (datasets, REDD trees, devices).

Sources are iterators of pyarrow RecordBatches in the reading schema
(`smw.schema.READING_ARROW`). `publish()` cuts them into messages of the contract in
`smw.messages` (one house per message, key = house id, column-wise series per
meter, at most `readings_per_message` readings), encodes them with orjson straight
from numpy, and hands them to a kafka-python producer.

Delivery guarantee: acks=all with the idempotent producer, so a message the broker
acknowledged is on every in-sync replica and a retried send is not written twice;
within a house (one key, one partition) order is kept. Rows that cannot form a valid
message (non-finite or out-of-range numbers, empty house id) are counted, logged once
per kind and written to a JSON-lines quarantine file; they never stop the producer.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from smw import config, kafka_clients, messages

log = logging.getLogger(__name__)

# Tuned on the local broker with `python -m tools.bench_ingest` (docs/ingest.md): 5,000-reading
# messages (~190 KB of JSON) cost the least per reading in kafka-python without slowing
# kcat down (10,000 did); two lanes overlap one lane's compression and round trip with
# the other's; 1 MiB batches and a 20 ms linger fill requests; lz4 shrinks the JSON
# ~4x for ~1 ms of CPU per batch. kafka-python's idempotent producer needs acks=all
# and one request in flight per connection.
DEFAULT_READINGS_PER_MESSAGE = 5000
DEFAULT_LANES = 2
DEFAULT_MAX_IN_FLIGHT_BYTES = 256 << 20
PRODUCER_DEFAULTS = {
    "acks": "all",
    "enable_idempotence": True,
    "max_in_flight_requests_per_connection": 1,
    "linger_ms": 20,
    "batch_size": 1 << 20,
    "max_request_size": 8 << 20,
    "compression_type": "lz4",
    "retries": 2147483647,
    "retry_backoff_ms": 200,
    "request_timeout_ms": 30000,
}


@dataclass
class PublishStats:
    """What a publish run did: what it sent, quarantined rows by kind, the broker's answers.

    The sending thread counts what it sends; the delivery callbacks run on the producer's
    I/O thread, so they count `delivered` and `failed` under `lock`.
    """

    messages: int = 0
    readings: int = 0
    bytes: int = 0
    send_timeouts: int = 0
    quarantined: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    delivered: int = 0
    failed: int = 0

    def on_delivered(self, _metadata) -> None:
        with self.lock:
            self.delivered += 1

    def on_failed(self, exc: BaseException) -> None:
        with self.lock:
            self.failed += 1
            first = self.failed == 1
        if first:
            log.error("delivery failed (counted; later failures logged at debug): %s", exc)
        else:
            log.debug("delivery failed: %s", exc)


class Quarantine:
    """Appends rows that cannot be published to a JSON-lines file, logging each kind once."""

    def __init__(self, path: Path | None):
        self.path = path
        self.kinds: set[str] = set()
        self._file = None

    def put(self, kind: str, rows: dict[str, np.ndarray], stats: PublishStats) -> None:
        count = len(next(iter(rows.values())))
        stats.quarantined[kind] += count
        if kind not in self.kinds:
            self.kinds.add(kind)
            log.warning("quarantined %d reading(s): %s (further ones of this kind are counted quietly)%s",
                        count, kind, f"; see {self.path}" if self.path else "")
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        for i in range(count):
            record = {name: _plain(values[i]) for name, values in rows.items()}
            self._file.write(json.dumps({"reason": kind, **record}, allow_nan=True) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None  # a later put() reopens the file for appending


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def default_quarantine_path(settings: config.Settings) -> Path:
    return Path(settings.data_dir) / "quarantine" / f"producer-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"


def _codes(column: pa.Array) -> tuple[np.ndarray, list]:
    """(indices, values) of a string column: no Python object per row.

    Dictionary columns (Parquet dictionary pages, the generator's dictionary tables)
    cost nothing; plain string columns are hashed once (~18 ns a row).
    """
    encoded = column if pa.types.is_dictionary(column.type) else column.dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


def _numbers(column: pa.Array, dtype) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _valid_rows(columns: dict[str, np.ndarray], house_ids: list, latest_ts_s: float = np.inf
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mask of rows that can be published, and the failing rows' masks by reason."""
    ts, power = columns["ts_s"], columns["power_w"]
    bad_house = np.array([not h or len(h) > messages.MAX_HOUSE_ID_LENGTH for h in house_ids], dtype=bool)
    reasons = {
        "non-finite timestamp or power": ~(np.isfinite(ts) & np.isfinite(power)),
        "timestamp outside 2000..2100": np.isfinite(ts) & ((ts < messages.MIN_TS_S) | (ts >= messages.MAX_TS_S)),
        "timestamp in the future (a clock ahead)": np.isfinite(ts) & (ts < messages.MAX_TS_S) & (ts > latest_ts_s),
        "empty or over-long house id": bad_house[columns["house"]] if len(bad_house) else np.zeros(len(ts), bool),
        "meter outside 0..65535": (columns["meter"] < 0) | (columns["meter"] > 65535),
    }
    bad = np.zeros(len(ts), dtype=bool)
    for mask in reasons.values():
        bad |= mask
    return ~bad, reasons


def encode_message(house_id: str, meters: np.ndarray, label_codes: np.ndarray, appliance_codes: np.ndarray,
                   label_values: list, appliance_values: list, ts_s: np.ndarray, power_w: np.ndarray) -> bytes:
    """One message value for rows of one house (any meters, time order kept within each meter).

    Labels and appliance names come as integer codes into `label_values` and
    `appliance_values`. `meters` must lie in 0..65535 (rows outside are quarantined
    before this point): as uint16 they sort with numpy's radix sort, 5x faster than a
    stable int64 sort. A series is one (meter, label, appliance); a meter whose label
    changes within the rows becomes two series.
    """
    key = meters.astype(np.uint16, copy=False)
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    meter_change = key_sorted[1:] != key_sorted[:-1]
    bounds = np.flatnonzero(meter_change) + 1
    label_sorted, appliance_sorted = label_codes[order], appliance_codes[order]
    # A label or appliance change inside one meter's rows starts another series.
    names_change = (label_sorted[1:] != label_sorted[:-1]) | (appliance_sorted[1:] != appliance_sorted[:-1])
    if (names_change & ~meter_change).any():
        bounds = np.flatnonzero(meter_change | names_change) + 1
        order, key_sorted, label_sorted, appliance_sorted = _regroup(order, key_sorted, label_sorted,
                                                                     appliance_sorted, bounds)
        bounds = np.flatnonzero((key_sorted[1:] != key_sorted[:-1]) | (label_sorted[1:] != label_sorted[:-1])
                                | (appliance_sorted[1:] != appliance_sorted[:-1])) + 1
    series = []
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(order)]):
        rows = order[lo:hi]
        series.append({
            "meter": int(key_sorted[lo]), "label": label_values[label_sorted[lo]],
            "appliance": appliance_values[appliance_sorted[lo]], "ts_s": ts_s[rows], "power_w": power_w[rows],
        })
    body = {"v": messages.SCHEMA_VERSION, "type": messages.TYPE_READINGS, "house_id": house_id, "series": series}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _regroup(order, key_sorted, label_sorted, appliance_sorted, bounds):
    """Re-sort rows by (meter, first appearance of its label/appliance pair), stable in time.

    Rare path: a meter changed its name mid-message. Each run of equal names gets the
    id of the first run with the same (meter, label, appliance), so a name that comes
    back joins its earlier series instead of starting a third one.
    """
    starts = np.r_[0, bounds]
    run_names = list(zip(key_sorted[starts].tolist(), label_sorted[starts].tolist(),
                         appliance_sorted[starts].tolist()))
    first_run = {}
    run_group = np.array([first_run.setdefault(name, i) for i, name in enumerate(run_names)], dtype=np.int64)
    lengths = np.diff(np.r_[starts, len(order)])
    group = np.repeat(run_group, lengths)
    regroup = np.argsort(group, kind="stable")
    return order[regroup], key_sorted[regroup], label_sorted[regroup], appliance_sorted[regroup]


def messages_from_batch(batch: pa.RecordBatch | pa.Table, readings_per_message: int, quarantine: Quarantine,
                        stats: PublishStats, max_span_s: float | None = None,
                        max_future_skew_s: float | None = messages.MAX_FUTURE_SKEW_S
                        ) -> Iterator[tuple[bytes, bytes, int, float]]:
    """(key, value, readings, latest ts_s) per message, in the batch's row order per house.

    A message holds at most `readings_per_message` readings and, if `max_span_s` is
    set, readings of at most that many seconds (sources give a house's readings in
    time order), so that paced replays deliver data promptly. String columns may be
    plain or dictionary-encoded. Readings dated more than `max_future_skew_s` ahead of
    the clock are quarantined, as the consumers would; None skips that check (a paced
    replay that never sends a reading before its time).
    """
    if isinstance(batch, pa.Table):
        for part in batch.combine_chunks().to_batches():
            yield from messages_from_batch(part, readings_per_message, quarantine, stats, max_span_s,
                                           max_future_skew_s)
        return
    house, house_ids = _codes(batch.column("house_id"))
    label, label_values = _codes(batch.column("label"))
    appliance, appliance_values = _codes(batch.column("appliance"))
    columns = {
        "house": house, "label": label, "appliance": appliance,
        "meter": _numbers(batch.column("meter"), np.int64),
        "ts_s": _numbers(batch.column("ts_s"), np.float64),
        "power_w": _numbers(batch.column("power_w"), np.float64),
    }
    latest_ts_s = np.inf if max_future_skew_s is None else time.time() + max_future_skew_s
    ok, reasons = _valid_rows(columns, house_ids, latest_ts_s)
    if not ok.all():
        for kind, mask in reasons.items():
            if mask.any():
                rows = {name: values[mask] for name, values in columns.items() if name not in ("house", "label", "appliance")}
                rows["house_id"] = np.array([house_ids[i] for i in columns["house"][mask]], dtype=object)
                quarantine.put(kind, rows, stats)
        columns = {name: values[ok] for name, values in columns.items()}
    house = columns["house"]
    if len(house) == 0:
        return
    # Runs of one house (sources yield a house at a time), then windows of readings.
    changes = np.flatnonzero(house[1:] != house[:-1]) + 1
    for lo, hi in zip(np.r_[0, changes], np.r_[changes, len(house)]):
        house_id = house_ids[house[lo]]
        key = house_id.encode()
        start = lo
        while start < hi:
            end = min(start + readings_per_message, hi)
            if max_span_s is not None:
                ts_run = columns["ts_s"][start:end]
                end = start + max(1, int(np.searchsorted(ts_run, ts_run[0] + max_span_s, side="left")))
            window = slice(start, end)
            value = encode_message(house_id, columns["meter"][window], columns["label"][window],
                                   columns["appliance"][window], label_values, appliance_values,
                                   columns["ts_s"][window], columns["power_w"][window])
            yield key, value, end - start, float(columns["ts_s"][end - 1])
            start = end


def make_producer(settings: config.Settings, **overrides):
    """One kafka-python producer with the tuned defaults (brokers and credentials from settings)."""
    return kafka_clients.producer(settings, **{**PRODUCER_DEFAULTS, **overrides})


def send_all(settings: config.Settings, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Send (key, value) messages to the readings topic, in order, and wait until every one
    is acknowledged; returns how many were sent. For small loads (tests, tooling); bulk
    loads go through `publish`."""
    producer = make_producer(settings)
    sent = 0
    try:
        for key, value in records:
            producer.send(settings.kafka_topic, key=key, value=value)
            sent += 1
        producer.flush(timeout=300)
    finally:
        producer.close()
    return sent


class Lanes:
    """Several idempotent producers behind one `send()`: more requests in flight, same guarantees.

    kafka-python's idempotent producer allows one request in flight per connection,
    so one producer waits a full round trip (compression included) per request. Each
    lane is a producer of its own (own connection, sender thread, producer id and
    sequence numbers). A key is pinned to one lane on first sight, so a house's
    messages leave through one idempotent, one-in-flight pipeline and reach their
    partition in order.
    """

    def __init__(self, producers: list):
        if not producers:
            raise ValueError("at least one producer")
        self.producers = producers
        self._lane_of: dict[bytes, object] = {}

    def send(self, topic: str, key: bytes, value: bytes):
        lane = self._lane_of.get(key)
        if lane is None:
            lane = self._lane_of[key] = self.producers[len(self._lane_of) % len(self.producers)]
        return lane.send(topic, key=key, value=value)

    def flush(self, timeout: float | None = None) -> None:
        for lane in self.producers:
            lane.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        for lane in self.producers:
            lane.close(timeout)


def make_lanes(settings: config.Settings, lanes: int = DEFAULT_LANES, **overrides) -> Lanes:
    """`lanes` producers with the tuned defaults, as one `Lanes`."""
    producers = []
    try:
        for _ in range(lanes):
            producers.append(make_producer(settings, **overrides))
    except Exception:
        for lane in producers:
            lane.close(0)
        raise
    return Lanes(producers)


class Pacer:
    """Sleeps so that readings go out at `speed` x real time (0: as fast as possible).

    With `not_ahead=True` a reading is never sent before the wall clock reaches its
    timestamp: a replay that starts in the past runs at `speed` until it has caught up
    with the present, then in real time, like a live meter.
    """

    def __init__(self, speed: float, not_ahead: bool = False, stop: threading.Event | None = None):
        self.speed = speed
        self.not_ahead = not_ahead
        self.origin: tuple[float, float] | None = None
        # A wait for a reading's time (up to a period, in real time) ends early when this is set.
        self.stop = stop

    def wait(self, ts_s: float) -> None:
        now = time.monotonic()
        if self.speed <= 0:
            due = now  # as fast as possible, but never ahead of the clock when so asked
        elif self.origin is None:
            self.origin = (ts_s, now)
            due = now
        else:
            due = self.origin[1] + (ts_s - self.origin[0]) / self.speed
        if self.not_ahead:
            due = max(due, now + (ts_s - time.time()))
        if due > now:
            if self.stop is None:
                time.sleep(due - now)
            else:
                self.stop.wait(due - now)


class _InFlight:
    """Bytes handed to the producer and not yet acknowledged; send() waits above a limit.

    kafka-python 2.x has no buffer-memory bound (its `buffer_memory` is deprecated and
    ignored), so without this a fast source would queue a whole dataset in memory.
    """

    def __init__(self, limit_bytes: int, stats: PublishStats):
        self.limit_bytes = limit_bytes
        self.stats = stats
        self.bytes = 0
        self.cond = threading.Condition()

    def acquire(self, size: int, stop: threading.Event | None) -> bool:
        with self.cond:
            while self.bytes > 0 and self.bytes + size > self.limit_bytes:
                if stop is not None and stop.is_set():
                    return False
                self.cond.wait(0.2)
            self.bytes += size
            return True

    def callbacks(self, size: int):
        def delivered(metadata) -> None:
            self.stats.on_delivered(metadata)
            self._release(size)

        def failed(exc: BaseException) -> None:
            self.stats.on_failed(exc)
            self._release(size)

        return delivered, failed

    def _release(self, size: int) -> None:
        with self.cond:
            self.bytes -= size
            self.cond.notify_all()


def send_with_retry(producer, topic: str, key: bytes, value: bytes, stats: PublishStats,
                    stop: threading.Event | None = None, backoff_s: float = 1.0):
    """producer.send(), retried while it times out (broker unreachable, metadata missing).

    Errors the broker reports after a send are retried inside the producer (`retries`)
    and reach the future's errback; a send that cannot even be queued raises
    KafkaTimeoutError, which is logged once loudly and retried until `stop` is set.
    Returns the future, or None if stopped first.
    """
    from kafka.errors import KafkaTimeoutError

    while True:
        try:
            return producer.send(topic, key=key, value=value)
        except KafkaTimeoutError as exc:
            stats.send_timeouts += 1
            if stats.send_timeouts == 1:
                log.error("cannot queue a message for %s: %s; retrying every %.0f s (repeats logged at debug)",
                          topic, exc, backoff_s)
            else:
                log.debug("send timed out again: %s", exc)
            if stop is not None and stop.wait(backoff_s):
                return None
            if stop is None:
                time.sleep(backoff_s)


def publish(batches: Iterable[pa.RecordBatch | pa.Table], producer, topic: str, *,
            readings_per_message: int = DEFAULT_READINGS_PER_MESSAGE, speed: float = 0.0, not_ahead: bool = False,
            quarantine: Quarantine | None = None, progress=None, stop: threading.Event | None = None,
            flush: bool = True, stats: PublishStats | None = None,
            max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
            max_future_skew_s: float = messages.MAX_FUTURE_SKEW_S) -> PublishStats:
    """Send every reading of `batches` to `topic`; flushes before returning (also on Ctrl-C).

    `producer` is a KafkaProducer or `Lanes`. With `speed` > 0 (1 = real time) a
    message carries at most one wall-clock second of data, so a paced replay is as
    live as the source; `not_ahead` never sends a reading before its timestamp (see
    Pacer). Pass `stats` to accumulate over several calls (devices). Readings dated more
    than `max_future_skew_s` ahead of the clock are quarantined, unless `not_ahead` holds
    each message until its time.
    """
    stats = stats if stats is not None else PublishStats()
    max_span_s = speed if speed > 0 else None
    quarantine = quarantine or Quarantine(None)
    pacer = Pacer(speed, not_ahead, stop)
    in_flight = _InFlight(max_in_flight_bytes, stats)
    try:
        for batch in batches:
            for key, value, count, last_ts in messages_from_batch(
                    batch, readings_per_message, quarantine, stats, max_span_s,
                    None if not_ahead else max_future_skew_s):
                if stop is not None and stop.is_set():
                    return stats
                pacer.wait(last_ts)
                if stop is not None and stop.is_set():
                    return stats
                if not in_flight.acquire(len(value), stop):
                    return stats
                future = send_with_retry(producer, topic, key, value, stats, stop)
                delivered, failed = in_flight.callbacks(len(value))
                if future is None:
                    failed(InterruptedError("stopped before the message could be queued"))
                    return stats
                future.add_callback(delivered)
                future.add_errback(failed)
                stats.messages += 1
                stats.readings += count
                stats.bytes += len(value)
                if progress is not None:
                    progress.update(count)
    finally:
        # Whatever stopped us (end of data, Ctrl-C, an error), what was sent is delivered.
        # Callers publishing a stream of small batches (devices) flush when they stop.
        if flush:
            producer.flush()
        quarantine.close()
    return stats

"""Alerts: the live store (RethinkDB `alerts`), the durable history (Cassandra `alerts_by_house`)
and the process-wide changefeed that fans changes out to every live-feed subscriber."""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque

from rethinkdb.errors import ReqlError

from smw import rethink
from smw.alert import RETHINKDB_TABLE, document
from webapp import queries

log = logging.getLogger(__name__)
r = rethink.r

RESUME_LOOKBACK_S = 86400  # an episode updated after the resume point started at most this long before it
RESUME_LIMIT = 500


normalise = document  # a stored document with the contract's fields, nothing else


def updated_key(alert: dict) -> float:
    return alert.get("updated_ts_s") or alert.get("start_ts_s") or 0.0


def table(settings):
    return r.db(settings.rethinkdb_db).table(RETHINKDB_TABLE)


def _table_of(conn):
    return r.db(conn.db).table(RETHINKDB_TABLE)


def recent_alerts(conn, limit: int) -> list[dict]:
    cursor = _table_of(conn).order_by(index=r.desc("start_ts_s")).limit(limit).run(conn)
    return [normalise(doc) for doc in cursor]


def open_alerts(conn, limit: int) -> list[dict]:
    """The most recently started open alerts, newest first (not any `limit` of them).

    The server sorts the open alerts, a small set, and sends `limit`; reqlite cannot filter
    an index-ordered scan, which would avoid the sort."""
    cursor = _table_of(conn).get_all("open", index="state").order_by(r.desc("start_ts_s")).limit(limit).run(conn)
    return [normalise(doc) for doc in cursor]


def alerts_for_house(conn, house_id: str, limit: int) -> list[dict]:
    cursor = (_table_of(conn).between([house_id, r.minval], [house_id, r.maxval], index="house_start")
              .order_by(index=r.desc("house_start")).limit(limit).run(conn))
    return [normalise(doc) for doc in cursor]


def alerts_for_houses(conn, house_ids, limit: int) -> list[dict]:
    """The latest `limit` alerts of some houses, newest start first."""
    found = [a for house_id in sorted(house_ids) for a in alerts_for_house(conn, house_id, limit)]
    return sorted(found, key=lambda a: a.get("start_ts_s") or 0.0, reverse=True)[:limit]


def changed_since(conn, store, since_ts_s: float, house_ids: frozenset[str] | None, house_limit: int,
                  history_houses: int) -> list[dict]:
    """Alerts updated at or after since_ts_s (of house_ids, or every house for None), oldest update
    first, from the live store and the Cassandra history (which still holds what the live store no
    longer has). The history costs one query per house: it is read for at most history_houses
    houses; for more (or every house) the live store alone answers."""
    found: dict[str, dict] = {}
    # order_by before between: reqlite fails on between-then-order_by for this index; RethinkDB takes both
    cursor = (_table_of(conn).order_by(index="updated_ts_s").between(since_ts_s, r.maxval, index="updated_ts_s")
              .limit(RESUME_LIMIT).run(conn))
    for doc in cursor:
        alert = normalise(doc)
        if house_ids is None or alert["house_id"] in house_ids:
            found[alert["id"]] = alert
    if house_ids is None or len(house_ids) > min(history_houses, house_limit):
        return sorted(found.values(), key=updated_key)[:RESUME_LIMIT]
    results = store.many(
        "SELECT house_id, start_ts, alert_id, kind, meter, appliance, state, severity, threshold_w, multiplier, "
        "peak_w, mean_w, end_ts, updated_at FROM alerts_by_house WHERE house_id = ? AND start_ts >= ? LIMIT ?",
        [(h, queries.as_utc(since_ts_s - RESUME_LOOKBACK_S), RESUME_LIMIT) for h in sorted(house_ids)],
    )
    for rows in results:
        for row in rows:
            alert = queries.history_alert(row)
            if updated_key(alert) >= since_ts_s and updated_key(alert) > updated_key(found.get(alert["id"], {})):
                found[alert["id"]] = alert
    return sorted(found.values(), key=updated_key)[:RESUME_LIMIT]


class Subscriber:
    """One live-feed client: a bounded queue of alerts, of some houses (None: every house)."""

    OVERFLOW = object()  # the client fell behind: end its stream
    CLOSED = object()  # the hub stopped: end its stream

    def __init__(self, house_ids: frozenset[str] | None, size: int = 1000):
        self.house_ids = house_ids
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.overflowed = False

    def offer(self, alert: dict) -> None:
        if self.overflowed or (self.house_ids is not None and alert.get("house_id") not in self.house_ids):
            return
        try:
            self.queue.put_nowait(alert)
        except queue.Full:
            # a client too slow to keep up is dropped; it reconnects and resumes with Last-Event-ID
            self._end_with(self.OVERFLOW)

    def close(self) -> None:
        """Wake the stream and end it after what it already holds is dropped."""
        self._end_with(self.CLOSED)

    def _end_with(self, marker) -> None:
        self.overflowed = True
        with self.queue.mutex:
            self.queue.queue.clear()
        self.queue.put_nowait(marker)


class LoopSubscriber:
    """A live-feed client whose stream is a coroutine on an event loop (webapp/asgi.py): the changefeed's
    thread hands it each alert of its houses through the loop (call_soon_threadsafe), into a bounded
    queue that the coroutine awaits with get()."""

    OVERFLOW, CLOSED = Subscriber.OVERFLOW, Subscriber.CLOSED

    def __init__(self, house_ids: frozenset[str] | None, loop: asyncio.AbstractEventLoop, size: int = 1000):
        self.house_ids = house_ids
        self.loop = loop
        self.size = size
        self.pending: deque = deque()
        self.ended = None  # OVERFLOW or CLOSED: what get() answers from then on
        self.overflowed = False
        self.woken = asyncio.Event()

    def offer(self, alert: dict) -> None:
        """From the changefeed's thread."""
        if self.overflowed or (self.house_ids is not None and alert.get("house_id") not in self.house_ids):
            return
        self._on_loop(self._put, alert)

    def close(self) -> None:
        """From any thread: end the stream, dropping what it has not sent."""
        self.overflowed = True
        self._on_loop(self._end, self.CLOSED)

    def _on_loop(self, function, argument) -> None:
        try:
            self.loop.call_soon_threadsafe(function, argument)
        except RuntimeError:  # the loop is closed, and the stream with it
            pass

    def _put(self, alert: dict) -> None:
        if self.ended is not None:
            return
        if len(self.pending) >= self.size:
            # a client too slow to keep up is dropped; it reconnects and resumes with Last-Event-ID
            self.overflowed = True
            self._end(self.OVERFLOW)
            return
        self.pending.append(alert)
        self.woken.set()

    def _end(self, marker) -> None:
        if self.ended is None:
            self.ended = marker
            self.pending.clear()
        self.woken.set()

    async def get(self, timeout_s: float):
        """On the loop: the next alert, OVERFLOW or CLOSED, or None when none comes within timeout_s."""
        if not self.pending and self.ended is None:
            self.woken.clear()
            try:
                await asyncio.wait_for(self.woken.wait(), timeout_s)
            except asyncio.TimeoutError:
                return None
        if self.ended is not None:
            return self.ended
        return self.pending.popleft()


class AlertHub:
    """One RethinkDB changefeed per process, fanned out to subscriber queues.

    The feed is a plain `table.changes()` (reqlite supports no filtered or ordered
    changefeeds); subscribers filter by house themselves. A subscriber is a thread's queue
    (`Subscriber`) or, under the event-loop server, a coroutine's (`LoopSubscriber`).
    `stop()` is final: it closes every subscriber, so SSE streams end and the server can stop."""

    def __init__(self, settings, retry_s: float = 1.0):
        self._settings = settings
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._subscribers: set[Subscriber | LoopSubscriber] = set()
        self._thread: threading.Thread | None = None
        self._conn = None
        self._stopping = threading.Event()
        self.ready = threading.Event()

    def subscribe(self, house_ids: frozenset[str] | None = None, wait_s: float = 5.0,
                  loop: asyncio.AbstractEventLoop | None = None) -> Subscriber | LoopSubscriber:
        """A new subscriber to the alerts of house_ids (None: every house), read by a thread, or by a
        coroutine on `loop`; waits until the changefeed is open so nothing after this call is missed."""
        subscriber = Subscriber(house_ids) if loop is None else LoopSubscriber(house_ids, loop)
        with self._lock:
            if self._stopping.is_set():
                subscriber.close()
                return subscriber
            self._subscribers.add(subscriber)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="alert-changefeed", daemon=True)
                self._thread.start()
        if not self.ready.wait(wait_s):
            log.warning("alert changefeed not open after %.1f s", wait_s)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber | LoopSubscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            subscribers, self._subscribers = self._subscribers, set()
        for subscriber in subscribers:
            subscriber.close()
        conn = self._conn
        if conn is not None:
            try:
                rethink.close(conn)
            except (ReqlError, OSError):
                pass
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._conn = rethink.connect(self._settings)
                cursor = table(self._settings).changes().run(self._conn)
                self.ready.set()
                if failures:
                    log.info("alert changefeed open again after %d failures", failures)
                failures = 0
                for change in cursor:
                    doc = change.get("new_val")
                    if doc is None:  # a deleted document
                        continue
                    alert = normalise(doc)
                    with self._lock:
                        subscribers = list(self._subscribers)
                    for subscriber in subscribers:
                        subscriber.offer(alert)
            except (ReqlError, OSError) as exc:
                self.ready.clear()
                if self._stopping.is_set():
                    break
                failures += 1
                # loud on the first failure, quiet while it repeats
                (log.error if failures == 1 else log.debug)("alert changefeed failed (%s); retrying", exc)
                time.sleep(min(self._retry_s * failures, 10.0))
            finally:
                if self._conn is not None:
                    try:
                        rethink.close(self._conn)
                    except (ReqlError, OSError):
                        pass
                    self._conn = None

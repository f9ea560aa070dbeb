"""The pulse ("blip") meter HTTP API, compatible with the pages and scripts that already speak it.

Points are `[stamp_ms, ms]`: the host's time of a blink and the milliseconds since the
previous one. Every route has two forms, as the two original servers had:

- the single-meter form (`/last/<n>`, `/since/<t>`, `/blip`, ...) reads the meter set as
  `PULSE_DEFAULT_METER`;
- the multi-meter form puts the meter id right after the route name (`/last/<id>/<n>`);
  `PULSE_METER_ALIASES` maps ids that pages already use (e.g. "1") to our meter ids.

`/last/<x>` is both the last point of meter x and, in the single-meter form, the points
of the last x ms: a meter called x wins; otherwise, with a default meter set and x all
digits, it is the single-meter form. Every numeric parameter is a non-negative integer
of at most 15 digits (else HTTP 400); stamps beyond year 9999 read as year 9999.
Answers carry `Cache-Control` and CORS headers as the original (`PULSE_CORS_ORIGIN`).

A /blip wait is authorised, bounded and joined to its meter's watch in a worker thread; under
`python -m webapp` it then waits as a coroutine on the server's event loop (webapp/asgi.py),
holding no thread, woken by the watch when points come.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import threading
import time
from collections import deque

from flask import Blueprint, Flask, Response, current_app, g, jsonify
from werkzeug.exceptions import NotFound, ServiceUnavailable

from webapp import params
from webapp.db import CassandraStore, cassandra
from webapp.errors import BadParameter
from webapp.streams import event_loop, hand_over, open_stream

log = logging.getLogger(__name__)

bp = Blueprint("pulse", __name__)

PAGE_POINTS = 2000          # /since and /last/<n> answer at most this many points (the original's LIMIT)
RANGE_POINTS = 100_000      # /range answers at most this many points (the original's LIMIT)
MINUTELY_ROWS = 100_000     # /minutely answers at most this many minutes (the original's LIMIT)
MINUTELY_SPAN_MS = MINUTELY_ROWS * 60_000
MAX_BUCKETS = 1000          # /aggregate and /aggregate_hourly c
RAW_COUNT_LIMIT = 50000     # /aggregate counts raw stamps up to this many, else asks Cassandra per bucket
MAX_DAYS_SCANNED = 400      # day partitions one request may visit
MAX_DAYS_HOURLY = 3700      # /hourly reads a partition per month: ten years of days with data
METER_ID_LENGTH = 76        # `<house>-<meter>`: a house id of up to 64 characters, a meter number
HOUR_MS = 3600 * 1000
DAY_MS = 86400 * 1000
EPOCH = dt.date(1970, 1, 1)
MAX_STAMP_MS = (dt.date.max - EPOCH).days * DAY_MS + DAY_MS - 1  # 9999-12-31 23:59:59.999
CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET",
    "Access-Control-Allow-Headers": "origin, x-requested-with, accept, authorization",  # + Bearer tokens
    "Access-Control-Max-Age": "60",
}


def day_of_ms(stamp_ms: int) -> dt.date:
    """The UTC day of a stamp; stamps past the year 9999 fall on its last day."""
    return EPOCH + dt.timedelta(days=min(max(stamp_ms, 0), MAX_STAMP_MS) // DAY_MS)


def day_start_ms(day: dt.date) -> int:
    return (day - EPOCH).days * DAY_MS


def now_ms() -> int:
    return int(time.time() * 1000)


def _date(value) -> dt.date:
    return value if isinstance(value, dt.date) else value.date()


def stamp(name: str, text: str) -> int:
    """A stamp parameter in ms, read as at most the end of the year 9999."""
    return min(params.digits(name, text), MAX_STAMP_MS)


def days_desc(store: CassandraStore, meter_id: str, first: dt.date, limit: int) -> list[dt.date]:
    rows = store.rows("SELECT day FROM pulse_days WHERE meter_id = ? AND day >= ? LIMIT ?", (meter_id, first, limit))
    return [_date(r.day) for r in rows]


def days_asc(store: CassandraStore, meter_id: str, first: dt.date, last: dt.date, limit: int) -> list[dt.date]:
    rows = store.rows(
        "SELECT day FROM pulse_days WHERE meter_id = ? AND day >= ? AND day <= ? ORDER BY day ASC LIMIT ?",
        (meter_id, first, last, limit),
    )
    return [_date(r.day) for r in rows]


def days_within(store: CassandraStore, meter_id: str, first_ms: int, last_ms: int, what: str,
                limit: int = MAX_DAYS_SCANNED) -> list[dt.date]:
    """The days with data between two stamps; 400 when they are more than `limit`."""
    days = days_asc(store, meter_id, day_of_ms(first_ms), day_of_ms(last_ms), limit + 1)
    if len(days) > limit:
        raise BadParameter(f"the range holds data on more than {limit} days; {what}")
    return days


def last_point(store: CassandraStore, meter_id: str) -> list[int] | None:
    days = store.rows("SELECT day FROM pulse_days WHERE meter_id = ? LIMIT 1", (meter_id,))
    if not days:
        return None
    rows = store.rows(
        "SELECT stamp_ms, ms FROM pulse_points WHERE meter_id = ? AND day = ? ORDER BY stamp_ms DESC LIMIT 1",
        (meter_id, _date(days[0].day)),
    )
    return [rows[0].stamp_ms, rows[0].ms] if rows else None


def request_last_point(meter_id: str) -> list[int] | None:
    """The meter's last point, read once per request (the route's access policy may have asked first)."""
    memo = g.setdefault("pulse_last_points", {})
    if meter_id not in memo:
        memo[meter_id] = last_point(cassandra(), meter_id)
    return memo[meter_id]


def points_from(store: CassandraStore, meter_id: str, after_ms: int, inclusive: bool, until_ms: int,
                limit: int) -> list[list[int]]:
    """The first `limit` points from after_ms (>= when inclusive, else >) to until_ms, oldest first."""
    op = ">=" if inclusive else ">"
    points: list[list[int]] = []
    for day in days_asc(store, meter_id, day_of_ms(after_ms), day_of_ms(until_ms), MAX_DAYS_SCANNED):
        rows = store.rows(
            f"SELECT stamp_ms, ms FROM pulse_points WHERE meter_id = ? AND day = ? AND stamp_ms {op} ? "
            "AND stamp_ms <= ? LIMIT ?",
            (meter_id, day, after_ms, until_ms, limit - len(points)),
        )
        points.extend([r.stamp_ms, r.ms] for r in rows)
        if len(points) >= limit:
            break
    return points


def meter(meter_id: str) -> str:
    """A meter id of the multi-meter form, through the alias table."""
    meter_id = params.name("meter id", meter_id, METER_ID_LENGTH)
    return current_app.config["PULSE_METER_ALIASES"].get(meter_id, meter_id)


def default_meter() -> str:
    found = current_app.config["PULSE_DEFAULT_METER"]
    if not found:
        raise NotFound("this server has no default meter for the single-meter routes: use the multi-meter form "
                       "(/last/<meter_id>/<n>, ...) or set SMW_WEB_PULSE_DEFAULT_METER")
    return meter(str(found))


def route(rule: str, single: bool = True):
    """Register a view under its multi-meter rule and, when single, the rule without `<meter_id>/`."""
    def register(view):
        bp.add_url_rule(rule, view_func=view, methods=["GET"])
        if single:
            bp.add_url_rule(rule.replace("/<meter_id>", "", 1), endpoint=view.__name__ + "_default",
                            view_func=view, methods=["GET"], defaults={"meter_id": None})
        return view
    return register


def chosen(meter_id: str | None) -> str:
    return default_meter() if meter_id is None else meter(meter_id)


def span_route(rule: str):
    """A route over stamps from..to: the view takes (meter_id, first_ms, last_ms) and returns a
    list; a span with to < from answers []."""
    def register(view):
        @functools.wraps(view)
        def answer(meter_id, from_ms, to_ms):
            meter_id = chosen(meter_id)
            first_ms, last_ms = stamp("from", from_ms), stamp("to", to_ms)
            return jsonify([] if last_ms < first_ms else view(meter_id, first_ms, last_ms))
        return route(rule)(answer)
    return register


@bp.after_request
def compatible_headers(response: Response) -> Response:
    """Cache-Control and CORS as the original servers sent them."""
    response.headers.setdefault("Cache-Control", "max-age=0, must-revalidate")
    origin = current_app.config["PULSE_CORS_ORIGIN"]
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.update(CORS_HEADERS)
    return response


@route("/last/<meter_id>")
def last(meter_id):
    """The meter's last point; `/last/<n>` when no meter called n has points (see above)."""
    if meter_id is None:
        return jsonify(request_last_point(default_meter()) or [])
    found = request_last_point(meter(meter_id))
    if found is not None:
        return jsonify(found)
    if meter_id.isdigit() and current_app.config["PULSE_DEFAULT_METER"]:
        return last_n(None, meter_id)
    hint = (" (for the single-meter form /last/<ms>, set SMW_WEB_PULSE_DEFAULT_METER)"
            if meter_id.isdigit() else "")
    raise NotFound(f"meter {meter_id!r} has no points{hint}")


@bp.get("/last/<meter_id>/<n>", endpoint="last_n")
def last_n(meter_id, n):
    """Points of the last n ms, oldest first: the first 2000 of them, as the original answered."""
    meter_id = chosen(meter_id)
    span_ms = params.digits("n", n, minimum=1)
    now = now_ms()
    return jsonify(points_from(cassandra(), meter_id, max(now - span_ms, 0), True, MAX_STAMP_MS, PAGE_POINTS))


@route("/since/<meter_id>/<t>")
def since(meter_id, t):
    """Points with stamp > t, oldest first, a page of at most 2000 (ask again from the last stamp)."""
    meter_id = chosen(meter_id)
    return jsonify(points_from(cassandra(), meter_id, stamp("t", t), False, MAX_STAMP_MS, PAGE_POINTS))


@span_route("/range/<meter_id>/<from_ms>/<to_ms>")
def range_(meter_id, first_ms, last_ms):
    """Points with from <= stamp <= to, oldest first, at most 100,000 (the raw zoom of the live page)."""
    return points_from(cassandra(), meter_id, first_ms, True, last_ms, RANGE_POINTS)


@route("/usage/<meter_id>/<n>")
def usage(meter_id, n):
    """[blinks] of the last n ms."""
    meter_id = chosen(meter_id)
    after_ms = max(now_ms() - params.digits("n", n, minimum=1), 0)
    store = cassandra()
    days = days_within(store, meter_id, after_ms, MAX_STAMP_MS, "ask for a shorter span")
    results = store.many("SELECT count(*) AS blinks FROM pulse_points WHERE meter_id = ? AND day = ? AND "
                         "stamp_ms >= ?", [(meter_id, day, after_ms) for day in days])
    return jsonify([sum(rows[0].blinks for rows in results)])


def buckets_of(t: str, m: str, c: str) -> tuple[int, int, int, int]:
    start_ms = stamp("t", t)
    bucket_ms = params.digits("m", m, minimum=1)
    buckets = params.digits("c", c, minimum=1, maximum=MAX_BUCKETS)
    return start_ms, bucket_ms, buckets, min(start_ms + bucket_ms * buckets, MAX_STAMP_MS + 1)


@route("/aggregate/<meter_id>/<t>/<m>/<c>")
def aggregate(meter_id, t, m, c):
    """Blink counts per bucket of m ms, c buckets from t: [[offset_ms, blinks], ...], empty buckets omitted."""
    meter_id = chosen(meter_id)
    start_ms, bucket_ms, buckets, end_ms = buckets_of(t, m, c)
    store = cassandra()
    days = days_within(store, meter_id, start_ms, end_ms - 1, "use /hourly")
    counts = server_side_counts(store, meter_id, days, start_ms, bucket_ms, buckets, end_ms)
    if counts is None:
        counts = [0] * buckets
        results = store.many(
            "SELECT stamp_ms FROM pulse_points WHERE meter_id = ? AND day = ? AND stamp_ms >= ? AND stamp_ms < ?",
            [(meter_id, day, start_ms, end_ms) for day in days],
        )
        for rows in results:
            for row in rows:
                counts[(row.stamp_ms - start_ms) // bucket_ms] += 1
    return jsonify([[i * bucket_ms, n] for i, n in enumerate(counts) if n])


def server_side_counts(store, meter_id, days, start_ms, bucket_ms, buckets, end_ms) -> list[int] | None:
    """Counts per bucket computed by Cassandra when the range holds more than RAW_COUNT_LIMIT blinks
    (one count(*) per bucket and day partition overlap), else None: the caller counts raw stamps.
    The total is counted first, so a dense range never travels to this process."""
    totals = store.many(
        "SELECT count(*) AS blinks FROM pulse_points WHERE meter_id = ? AND day = ? AND stamp_ms >= ? "
        "AND stamp_ms < ?",
        [(meter_id, day, start_ms, end_ms) for day in days],
    )
    if sum(rows[0].blinks for rows in totals) <= RAW_COUNT_LIMIT:
        return None
    queries, slots = [], []
    for day in days:
        day_lo, day_hi = day_start_ms(day), day_start_ms(day) + DAY_MS
        first = max(0, (day_lo - start_ms) // bucket_ms)
        last = min(buckets - 1, (day_hi - 1 - start_ms) // bucket_ms)
        for index in range(first, last + 1):
            lo = max(start_ms + index * bucket_ms, day_lo)
            hi = min(start_ms + (index + 1) * bucket_ms, day_hi, end_ms)
            if lo < hi:
                queries.append((meter_id, day, lo, hi))
                slots.append(index)
    counts = [0] * buckets
    results = store.many(
        "SELECT count(*) AS blinks FROM pulse_points WHERE meter_id = ? AND day = ? AND stamp_ms >= ? "
        "AND stamp_ms < ?",
        queries, concurrency=64,
    )
    for index, rows in zip(slots, results):
        counts[index] += rows[0].blinks
    return counts


def hours_with_data(store: CassandraStore, meter_id: str, first_ms: int, last_ms: int) -> list[list]:
    """[hour_start_ms, blinks, mean_watts, min_ms, max_ms] for each UTC hour starting in first..last
    that holds blinks (from pulse_hours, one partition per month with data); mean_watts =
    3.6e9 * blinks / (K * sum of ms), the original's `wh`."""
    first_hour = first_ms - first_ms % HOUR_MS
    days = days_within(store, meter_id, first_hour, last_ms, "ask for a shorter span", MAX_DAYS_HOURLY)
    months = sorted({day.replace(day=1) for day in days})
    results = store.many(
        "SELECT hour_ms, blinks, sum_ms, min_ms, max_ms FROM pulse_hours WHERE meter_id = ? AND month = ? "
        "AND hour_ms >= ? AND hour_ms <= ?",
        [(meter_id, month, first_hour, last_ms) for month in months],
    )
    return [figure(row.hour_ms, row) for rows in results for row in rows if row.blinks]


def figure(start_ms: int, row) -> list:
    """A minute's or hour's answer row: [start_ms, blinks, mean_watts, min_ms, max_ms]."""
    impulses_per_kwh = float(current_app.config["PULSE_IMPULSES_PER_KWH"])
    return [start_ms, row.blinks, mean_watts(row.blinks, row.sum_ms, impulses_per_kwh), row.min_ms, row.max_ms]


def mean_watts(blinks: int, sum_ms: int, impulses_per_kwh: float) -> float | None:
    """Mean power of blinks spanning sum_ms: each blink is 3.6e6 / K joules."""
    return round(3.6e9 * blinks / (impulses_per_kwh * sum_ms), 3) if sum_ms else None


@span_route("/hourly/<meter_id>/<from_ms>/<to_ms>")
def hourly(meter_id, first_ms, last_ms):
    """Per UTC hour from..to: [hour_start_ms, blinks, mean_watts, min_ms, max_ms], empty hours omitted."""
    return hours_with_data(cassandra(), meter_id, first_ms, last_ms)


@span_route("/minutely/<meter_id>/<from_ms>/<to_ms>")
def minutely(meter_id, first_ms, last_ms):
    """Per UTC minute from..to, as /hourly (from pulse_minutes): the first 100,000 minutes of the span."""
    first_minute = first_ms - first_ms % 60_000
    last_ms = min(last_ms, first_minute + MINUTELY_SPAN_MS - 1)
    store = cassandra()
    days = days_within(store, meter_id, first_minute, last_ms, "ask for a shorter span")
    results = store.many(
        "SELECT minute_ms, blinks, sum_ms, min_ms, max_ms FROM pulse_minutes WHERE meter_id = ? AND day = ? "
        "AND minute_ms >= ? AND minute_ms <= ?",
        [(meter_id, day, first_minute, last_ms) for day in days],
    )
    return [figure(row.minute_ms, row) for rows in results for row in rows if row.blinks]


@route("/aggregate_hourly/<meter_id>/<t>/<m>/<c>")
def aggregate_hourly(meter_id, t, m, c):
    """Energy per bucket of m ms, c buckets from t, from the hourly figures: [[offset_ms, Wh], ...], the
    sum of the mean watts of the hours that start in the bucket (an hour at P watts is P Wh)."""
    meter_id = chosen(meter_id)
    start_ms, bucket_ms, buckets, end_ms = buckets_of(t, m, c)
    totals = [0.0] * buckets
    filled = [False] * buckets
    for hour_start, _blinks, watts, _low, _high in hours_with_data(cassandra(), meter_id, start_ms, end_ms - 1):
        if hour_start < start_ms or watts is None:
            continue
        index = (hour_start - start_ms) // bucket_ms
        totals[index] += watts
        filled[index] = True
    return jsonify([[i * bucket_ms, round(total, 3)] for i, (total, full) in enumerate(zip(totals, filled)) if full])


class Watch:
    """Follows one meter's new points for the /blip long polls: one poller for all of the meter's
    waiters, so Cassandra sees a few queries a second per meter, however many pages wait."""

    POLL_S = 0.25
    IDLE_S = 30.0

    def __init__(self, owner: "Watches", store: CassandraStore, meter_id: str):
        self.owner, self.store, self.meter_id, self.stop = owner, store, meter_id, owner.stop_event
        self.cond = threading.Condition()
        self.listeners: set = set()  # functions told, from the poller's thread, of new points and of the end
        self.recent: deque[list[int]] = deque(maxlen=1000)
        self.seen_ms = -1
        self.waiters = 0
        self.idle_since = time.monotonic()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"blip-{meter_id}", daemon=True)

    def run(self) -> None:
        failures = 0
        try:
            while not self.stop.is_set():
                try:
                    self.poll()
                    failures = 0
                    self.ready.set()
                except Exception as exc:  # a store that stops answering: waiters keep waiting, we retry
                    failures += 1
                    (log.warning if failures == 1 else log.debug)("blip watch of %s: %s", self.meter_id, exc)
                with self.owner.lock, self.cond:  # the lock order of Watches.get
                    if self.waiters == 0 and time.monotonic() - self.idle_since > self.IDLE_S:
                        if self.owner.by_meter.get(self.meter_id) is self:
                            del self.owner.by_meter[self.meter_id]
                        return
                self.stop.wait(self.POLL_S * min(1 + failures, 20))
        finally:
            with self.cond:
                self.cond.notify_all()
            self.tell()

    def poll(self) -> None:
        if self.seen_ms < 0:
            found = last_point(self.store, self.meter_id)
            self.seen_ms = found[0] if found else 0
            return
        fresh = points_from(self.store, self.meter_id, self.seen_ms, False, MAX_STAMP_MS, 1000)
        if fresh:
            with self.cond:
                self.recent.extend(fresh)
                self.seen_ms = fresh[-1][0]
                self.cond.notify_all()
            self.tell()

    def tell(self) -> None:
        with self.cond:
            listeners = list(self.listeners)
        for listener in listeners:
            listener()

    def listen(self, listener) -> None:
        with self.cond:
            self.listeners.add(listener)

    def unlisten(self, listener) -> None:
        with self.cond:
            self.listeners.discard(listener)

    @property
    def watching(self) -> bool:
        return not self.stop.is_set() and self.thread.is_alive()

    def point_after(self, after_ms: int) -> list[int] | None:
        """The first point after after_ms that the watch holds, at once."""
        with self.cond:
            for found in self.recent:
                if found[0] > after_ms:
                    return found
        return None

    def next_after(self, after_ms: int, timeout_s: float) -> list[int] | None:
        """The first point after after_ms, waiting up to timeout_s for it."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while self.watching:
                found = self.point_after(after_ms)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
        return None

    def leave(self) -> None:
        with self.cond:
            self.waiters -= 1
            self.idle_since = time.monotonic()


class Watches:
    """The process's meter watches, started on demand, ended when idle for a while or at shutdown."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_meter: dict[str, Watch] = {}
        self.stop_event = threading.Event()

    def join(self, store: CassandraStore, meter_id: str) -> Watch:
        """The meter's watch, counting one more waiter (call its leave() once done)."""
        with self.lock:
            found = self.by_meter.get(meter_id)
            fresh = found is None or not found.thread.is_alive()
            if fresh:
                found = self.by_meter[meter_id] = Watch(self, store, meter_id)
            with found.cond:
                found.waiters += 1
        if fresh:
            found.thread.start()
        return found

    def stop(self) -> None:
        self.stop_event.set()


def init_app(app: Flask) -> None:
    """Check the pulse settings, then serve the routes (under PULSE_URL_PREFIX, e.g. "/ajax")."""
    aliases = app.config["PULSE_METER_ALIASES"]
    if not isinstance(aliases, dict):
        raise ValueError("PULSE_METER_ALIASES must be a JSON object of page meter id -> meter id")
    checked = {}
    for alias, target in aliases.items():
        try:
            checked[params.name("meter alias", str(alias), METER_ID_LENGTH)] = params.name(
                "meter id", str(target), METER_ID_LENGTH)
        except BadParameter as exc:
            raise ValueError(f"PULSE_METER_ALIASES: {exc}") from None
    app.config["PULSE_METER_ALIASES"] = checked
    default = app.config["PULSE_DEFAULT_METER"]
    if default not in ("", None):
        try:
            app.config["PULSE_DEFAULT_METER"] = params.name("PULSE_DEFAULT_METER", str(default), METER_ID_LENGTH)
        except BadParameter as exc:
            raise ValueError(str(exc)) from None
    prefix = str(app.config["PULSE_URL_PREFIX"] or "").rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ValueError("PULSE_URL_PREFIX must start with / (e.g. /ajax)")
    app.extensions["smw_blip_watches"] = Watches()
    app.register_blueprint(bp, url_prefix=prefix or None)


def stop_watches(app: Flask) -> None:
    """End the /blip long polls (a stopping server waits for them)."""
    watches = app.extensions.get("smw_blip_watches")
    if watches is not None:
        watches.stop()


@route("/blip/<meter_id>")
def blip(meter_id):
    """Long poll: the meter's next point, once it arrives, however long that takes (as the original).

    The answer starts at once and carries a space every BLIP_KEEPALIVE_S while it waits (JSON
    allows leading whitespace), so proxies keep the connection and a page that left is noticed."""
    meter_id = chosen(meter_id)
    release = open_stream("/blip waits", "BLIP_MAX_WAITS_PER_USER")  # 503 beyond the bounds
    try:
        watch = current_app.extensions["smw_blip_watches"].join(cassandra(), meter_id)
    except BaseException:
        release()
        raise
    left_once = threading.Lock()

    def leave() -> None:
        if left_once.acquire(blocking=False):
            watch.leave()
            release()

    if not watch.ready.wait(10.0):
        leave()
        raise ServiceUnavailable("the meter's points cannot be read now; try again shortly")
    keepalive_s = float(current_app.config["BLIP_KEEPALIVE_S"])
    max_wait_s = float(current_app.config["BLIP_MAX_WAIT_S"]) or float("inf")
    asked, after_ms = time.monotonic(), watch.seen_ms
    if event_loop() is not None:  # the wait goes on as a coroutine on the event loop, holding no thread
        hand_over(functools.partial(wait_on_loop, watch, after_ms, keepalive_s, max_wait_s))
        response = Response(iter(()), mimetype="application/json", headers={"X-Accel-Buffering": "no"})
        response.call_on_close(leave)
        return response

    def body():
        try:
            while not watch.stop.is_set():
                left = max_wait_s - (time.monotonic() - asked)
                if left <= 0:
                    return  # an answer without a point: the page's error path asks again
                found = watch.next_after(after_ms, min(keepalive_s, left))
                if found is not None:
                    yield f"[{found[0]},{found[1]}]"
                    return
                yield " "
        finally:
            leave()

    response = Response(body(), mimetype="application/json", headers={"X-Accel-Buffering": "no"})
    response.call_on_close(leave)
    return response


async def wait_on_loop(watch: Watch, after_ms: int, keepalive_s: float, max_wait_s: float, write) -> None:
    """A /blip wait as a coroutine: the first point after after_ms, a space every keepalive_s until it
    comes, nothing more after max_wait_s. The watch wakes it through the loop when points come."""
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake() -> None:  # from the watch's thread
        try:
            loop.call_soon_threadsafe(woken.set)
        except RuntimeError:  # the loop is closed
            pass

    watch.listen(wake)
    try:
        asked = loop.time()
        keepalive_at, end_at = asked + keepalive_s, asked + max_wait_s
        while watch.watching:
            woken.clear()
            found = watch.point_after(after_ms)
            if found is not None:
                await write(f"[{found[0]},{found[1]}]")
                return
            now = loop.time()
            if now >= end_at:
                return  # an answer without a point: the page's error path asks again
            if now >= keepalive_at:
                await write(" ")
                keepalive_at = now + keepalive_s
                continue
            try:
                await asyncio.wait_for(woken.wait(), min(keepalive_at, end_at) - now)
            except asyncio.TimeoutError:
                pass
    finally:
        watch.unlisten(wake)

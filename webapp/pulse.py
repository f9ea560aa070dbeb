"""The pulse ("blip") meter HTTP API, compatible with the pages and scripts that already speak it.

Points are `[stamp_ms, ms]`: the host's time of a blink and the milliseconds since the
previous one. The meter id comes right after the route name (`/last/<meter_id>/<n>`).
Every numeric parameter is a non-negative integer of at most 15 digits, else HTTP 400.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from flask import Blueprint, current_app, jsonify

from webapp import params
from webapp.db import CassandraStore, cassandra
from webapp.errors import BadParameter

log = logging.getLogger(__name__)

bp = Blueprint("pulse", __name__)

PAGE_POINTS = 2000          # /since and /last/<n> answer at most this many points
MAX_BUCKETS = 1000          # /aggregate c
MAX_HOURS = 31 * 24         # /hourly span
RAW_COUNT_LIMIT = 50000     # /aggregate counts raw stamps up to this many, else asks Cassandra per bucket
MAX_DAYS_SCANNED = 400      # day partitions one request may visit
BLIP_POLL_S = 0.2
DAY_MS = 86400 * 1000


def day_of_ms(stamp_ms: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=stamp_ms // DAY_MS)


def day_start_ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY_MS


def now_ms() -> int:
    return int(time.time() * 1000)


def _date(value) -> dt.date:
    return value if isinstance(value, dt.date) else value.date()


def days_desc(store: CassandraStore, meter_id: str, first: dt.date, limit: int) -> list[dt.date]:
    rows = store.rows("SELECT day FROM pulse_days WHERE meter_id = ? AND day >= ? LIMIT ?", (meter_id, first, limit))
    return [_date(r.day) for r in rows]


def days_asc(store: CassandraStore, meter_id: str, first: dt.date, last: dt.date, limit: int) -> list[dt.date]:
    rows = store.rows(
        "SELECT day FROM pulse_days WHERE meter_id = ? AND day >= ? AND day <= ? ORDER BY day ASC LIMIT ?",
        (meter_id, first, last, limit),
    )
    return [_date(r.day) for r in rows]


def last_point(store: CassandraStore, meter_id: str) -> list[int] | None:
    days = store.rows("SELECT day FROM pulse_days WHERE meter_id = ? LIMIT 1", (meter_id,))
    if not days:
        return None
    rows = store.rows(
        "SELECT stamp_ms, ms FROM pulse_points WHERE meter_id = ? AND day = ? ORDER BY stamp_ms DESC LIMIT 1",
        (meter_id, _date(days[0].day)),
    )
    return [rows[0].stamp_ms, rows[0].ms] if rows else None


def meter(meter_id: str) -> str:
    return params.name("meter id", meter_id)


@bp.get("/last/<meter_id>")
def last(meter_id):
    """The meter's last point, or [] when it has none."""
    return jsonify(last_point(cassandra(), meter(meter_id)) or [])


@bp.get("/last/<meter_id>/<n>")
def last_n(meter_id, n):
    """Points of the last n ms (the newest 2000 at most), oldest first."""
    meter_id = meter(meter_id)
    span_ms = params.digits("n", n, minimum=1)
    store = cassandra()
    after_ms = now_ms() - span_ms
    points: list[list[int]] = []
    for day in days_desc(store, meter_id, day_of_ms(max(after_ms, 0)), MAX_DAYS_SCANNED):
        rows = store.rows(
            "SELECT stamp_ms, ms FROM pulse_points WHERE meter_id = ? AND day = ? AND stamp_ms > ? "
            "ORDER BY stamp_ms DESC LIMIT ?",
            (meter_id, day, after_ms, PAGE_POINTS - len(points)),
        )
        points.extend([r.stamp_ms, r.ms] for r in rows)
        if len(points) >= PAGE_POINTS:
            break
    points.reverse()
    return jsonify(points)


@bp.get("/since/<meter_id>/<t>")
def since(meter_id, t):
    """Points with stamp > t, oldest first, a page of at most 2000 (ask again from the last stamp)."""
    meter_id = meter(meter_id)
    after_ms = params.digits("t", t)
    store = cassandra()
    points: list[list[int]] = []
    for day in days_asc(store, meter_id, day_of_ms(after_ms), day_of_ms(now_ms()) + dt.timedelta(days=1),
                        MAX_DAYS_SCANNED):
        rows = store.rows(
            "SELECT stamp_ms, ms FROM pulse_points WHERE meter_id = ? AND day = ? AND stamp_ms > ? LIMIT ?",
            (meter_id, day, after_ms, PAGE_POINTS - len(points)),
        )
        points.extend([r.stamp_ms, r.ms] for r in rows)
        if len(points) >= PAGE_POINTS:
            break
    return jsonify(points)


@bp.get("/aggregate/<meter_id>/<t>/<m>/<c>")
def aggregate(meter_id, t, m, c):
    """Blink counts per bucket of m ms, c buckets from t: [[offset_ms, blinks], ...], empty buckets omitted."""
    meter_id = meter(meter_id)
    start_ms = params.digits("t", t)
    bucket_ms = params.digits("m", m, minimum=1)
    buckets = params.digits("c", c, minimum=1, maximum=MAX_BUCKETS)
    end_ms = start_ms + bucket_ms * buckets
    store = cassandra()
    days = days_asc(store, meter_id, day_of_ms(start_ms), day_of_ms(end_ms - 1), MAX_DAYS_SCANNED + 1)
    if len(days) > MAX_DAYS_SCANNED:
        raise BadParameter(f"the range holds data on more than {MAX_DAYS_SCANNED} days; use /hourly")
    counts = [0] * buckets
    results = store.many(
        "SELECT stamp_ms FROM pulse_points WHERE meter_id = ? AND day = ? AND stamp_ms >= ? AND stamp_ms < ? LIMIT ?",
        [(meter_id, day, start_ms, end_ms, RAW_COUNT_LIMIT + 1) for day in days],
    )
    if sum(len(rows) for rows in results) <= RAW_COUNT_LIMIT:
        for rows in results:
            for row in rows:
                counts[(row.stamp_ms - start_ms) // bucket_ms] += 1
    else:
        counts = server_side_counts(store, meter_id, days, start_ms, bucket_ms, buckets)
    return jsonify([[i * bucket_ms, n] for i, n in enumerate(counts) if n])


def server_side_counts(store, meter_id, days, start_ms, bucket_ms, buckets) -> list[int]:
    """Counts per bucket computed by Cassandra: one count(*) per (bucket, day partition) overlap."""
    queries, slots = [], []
    for day in days:
        day_lo, day_hi = day_start_ms(day), day_start_ms(day) + DAY_MS
        first = max(0, (day_lo - start_ms) // bucket_ms)
        last = min(buckets - 1, (day_hi - 1 - start_ms) // bucket_ms)
        for index in range(first, last + 1):
            lo = max(start_ms + index * bucket_ms, day_lo)
            hi = min(start_ms + (index + 1) * bucket_ms, day_hi)
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


@bp.get("/hourly/<meter_id>/<from_ms>/<to_ms>")
def hourly(meter_id, from_ms, to_ms):
    """Per UTC hour from..to: [hour_start_ms, blinks, mean_watts, min_ms, max_ms], empty hours omitted."""
    meter_id = meter(meter_id)
    first_ms = params.digits("from", from_ms)
    last_ms = params.digits("to", to_ms)
    if last_ms < first_ms:
        raise BadParameter("to must not be before from")
    hour_ms = 3600 * 1000
    first_hour = first_ms - first_ms % hour_ms
    hours = (last_ms - first_hour) // hour_ms + 1
    if hours > MAX_HOURS:
        raise BadParameter(f"at most {MAX_HOURS} hours per request")
    store = cassandra()
    days = set(days_asc(store, meter_id, day_of_ms(first_hour), day_of_ms(last_ms), MAX_DAYS_SCANNED))
    starts = [first_hour + i * hour_ms for i in range(hours) if day_of_ms(first_hour + i * hour_ms) in days]
    results = store.many(
        "SELECT count(*) AS blinks, sum(ms) AS sum_ms, min(ms) AS min_ms, max(ms) AS max_ms FROM pulse_points "
        "WHERE meter_id = ? AND day = ? AND stamp_ms >= ? AND stamp_ms < ?",
        [(meter_id, day_of_ms(s), s, s + hour_ms) for s in starts],
    )
    impulses_per_kwh = float(current_app.config["PULSE_IMPULSES_PER_KWH"])
    answer = []
    for start, rows in zip(starts, results):
        row = rows[0]
        if not row.blinks:
            continue
        # P = 3.6e9 / (K * ms) per blink; over the hour: energy of the blinks / time they span
        mean_w = 3.6e9 * row.blinks / (impulses_per_kwh * row.sum_ms) if row.sum_ms else None
        answer.append([start, row.blinks, round(mean_w, 3) if mean_w is not None else None, row.min_ms, row.max_ms])
    return jsonify(answer)


@bp.get("/blip/<meter_id>")
def blip(meter_id):
    """Long poll: the meter's next point once it arrives; 204 when none came within BLIP_TIMEOUT_S."""
    meter_id = meter(meter_id)
    store = cassandra()
    asked_ms = now_ms()
    deadline = time.monotonic() + float(current_app.config["BLIP_TIMEOUT_S"])
    while True:
        rows = store.rows(
            "SELECT stamp_ms, ms FROM pulse_points WHERE meter_id = ? AND day = ? AND stamp_ms > ? LIMIT 1",
            (meter_id, day_of_ms(now_ms()), asked_ms),
        )
        if rows:
            return jsonify([rows[0].stamp_ms, rows[0].ms])
        if time.monotonic() >= deadline:
            return "", 204
        time.sleep(BLIP_POLL_S)

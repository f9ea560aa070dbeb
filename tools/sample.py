"""Deterministic sample rows for screenshots and benchmarks (never the product keyspace by default)."""
from __future__ import annotations

import datetime as dt
import random
import time
from collections import defaultdict

import orjson

from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.query import BatchStatement, BatchType

from smw import rethink
from smw.alert import RETHINKDB_TABLE

APPLIANCES = [(3, "oven", 1.1), (5, "refrigerator", 1.6), (6, "dishwaser", 0.9), (7, "kitchen_outlets", 0.8),
              (9, "lighting", 1.4), (10, "washer_dryer", 1.3), (11, "microwave", 0.4), (12, "electronics", 0.7)]
ZIPS = ["02139", "10001", "60614", "94110", "98101"]


DAY_ROWS = ("SELECT day, meter, label, appliance, energy_kwh FROM daily_energy_by_house "
            "WHERE house_id = ? AND day >= ? AND day <= ?")
DAY_TOTALS = ("SELECT day, mains_kwh, circuits_kwh, untracked_kwh, coverage FROM daily_house_totals "
              "WHERE house_id = ? AND day >= ? AND day <= ?")
INSERT_DOC = "INSERT INTO daily_house_docs (house_id, day, doc) VALUES (?, ?, ?)"
ALL_DAYS = (dt.date(1900, 1, 1), dt.date(2999, 12, 31))


def day_docs(daily_rows, totals_rows) -> dict[dt.date, str]:
    """The daily_house_docs documents of one house's rows of daily_energy_by_house and
    daily_house_totals, as the nightly job writes them (batch.nightly.house_day_docs), for rows
    written here or by hand; a day with rows but no totals gets the sum of its appliances as its
    circuits and nulls for the rest."""
    appliances: dict[dt.date, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in daily_rows:
        name = row.appliance or row.label or f"meter {row.meter}"
        if row.energy_kwh is not None and name != "mains":
            appliances[_date(row.day)][name] += row.energy_kwh
    totals = {_date(r.day): r for r in totals_rows}
    docs = {}
    for day in set(appliances) | set(totals):
        kwh = {name: round(v, 6) for name, v in sorted(appliances.get(day, {}).items())}
        t = totals.get(day)
        docs[day] = orjson.dumps({
            "day": day.isoformat(), "mains_kwh": t.mains_kwh if t else None,
            "circuits_kwh": t.circuits_kwh if t else round(sum(kwh.values()), 6),
            "untracked_kwh": t.untracked_kwh if t else None, "coverage": t.coverage if t else None,
            "appliances": kwh}).decode()
    return docs


def _date(value) -> dt.date:
    return value if isinstance(value, dt.date) else value.date()


def write_day_docs(session, house_ids, first: dt.date | None = None, last: dt.date | None = None,
                   concurrency: int = 32) -> int:
    """(Re)write the daily_house_docs rows of these houses from their daily_energy_by_house and
    daily_house_totals rows over first..last (default: every day); the documents written."""
    if isinstance(house_ids, str):
        house_ids = [house_ids]
    span = (first or ALL_DAYS[0], last or ALL_DAYS[1])
    day_rows, totals_rows = session.prepare(DAY_ROWS), session.prepare(DAY_TOTALS)
    insert = session.prepare(INSERT_DOC)
    docs = []
    for house_id in house_ids:
        found = day_docs(session.execute(day_rows, (house_id, *span)), session.execute(totals_rows, (house_id, *span)))
        docs.extend((house_id, day, doc) for day, doc in found.items())
    for ok, result in execute_concurrent_with_args(session, insert, docs, concurrency=concurrency,
                                                   raise_on_first_error=False):
        if not ok:
            raise result
    return len(docs)


def house_day(rng: random.Random, house_id: str, day: dt.date, scale: float) -> tuple[list[tuple], tuple]:
    """One sample house-day: its daily_energy_by_house rows (the appliances of APPLIANCES, then two
    mains legs) and its daily_house_totals row."""
    rows, circuits = [], 0.0
    for meter, appliance, mean_kwh in APPLIANCES:
        kwh = round(mean_kwh * scale * rng.uniform(0.6, 1.4), 3)
        circuits += kwh
        rows.append((house_id, day, meter, appliance, appliance, kwh, 1.0, 28800))
    mains = round(circuits * rng.uniform(1.15, 1.35), 3)
    rows += [(house_id, day, meter, "mains", "mains", mains / 2, 1.0, 86400) for meter in (1, 2)]
    return rows, (house_id, day, mains, circuits, mains - circuits, 1.0)


def seed(session, settings, houses: int = 12, days: int = 14, seed_value: int = 7) -> list[str]:
    """Houses with days of per-appliance energy, totals, thresholds, zips, live power and alerts."""
    rng = random.Random(seed_value)
    today = dt.datetime.now(dt.timezone.utc).date()
    house_ids = [f"house_{i + 1}" for i in range(houses)]
    daily, totals, by_appliance, thresholds, hourly = [], [], [], [], []
    zip_totals: dict = {}
    for n, house_id in enumerate(house_ids):
        zip_code = ZIPS[n % len(ZIPS)]
        scale = rng.uniform(0.7, 1.4)
        session.execute("INSERT INTO houses (house_id, zip, tz, lat, lon) VALUES (%s, %s, %s, %s, %s)",
                        (house_id, zip_code, "America/New_York", 42.0 + rng.random(), -71.0 - rng.random()))
        for back in range(1, days + 1):
            day = today - dt.timedelta(days=back)
            rows, day_totals = house_day(rng, house_id, day, scale)
            daily += rows
            totals.append(day_totals)
            mains = day_totals[2]
            by_appliance += [(appliance, day, house_id, kwh, round(kwh / mains, 4))
                             for _h, _d, _m, _l, appliance, kwh, _c, _s in rows[:len(APPLIANCES)]]
            zip_totals.setdefault((day, zip_code), [0.0, 0])
            zip_totals[(day, zip_code)][0] += mains
            zip_totals[(day, zip_code)][1] += 1
            if back == 1:
                for hour in range(24):
                    hour_start = dt.datetime.combine(day, dt.time(hour), dt.timezone.utc)
                    hourly.append((house_id, day, hour_start, 1, mains / 24, mains / 24 * 1000, 50.0, 3000.0, 3600))
        for meter, appliance, _ in APPLIANCES:
            thresholds.append((house_id, meter, appliance, 0.97, round(rng.uniform(100, 2500), 1)))
    run = lambda cql, rows: execute_concurrent_with_args(session, session.prepare(cql), rows, concurrency=64)  # noqa: E731
    run("INSERT INTO daily_energy_by_house (house_id, day, meter, label, appliance, energy_kwh, coverage, samples) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", daily)
    run("INSERT INTO daily_house_totals (house_id, day, mains_kwh, circuits_kwh, untracked_kwh, coverage) "
        "VALUES (?, ?, ?, ?, ?, ?)", totals)
    run("INSERT INTO daily_energy_by_appliance (appliance, day, house_id, energy_kwh, share_of_mains) VALUES (?, ?, ?, ?, ?)",
        by_appliance)
    run("INSERT INTO daily_energy_by_zip (day, zip, energy_kwh, houses) VALUES (?, ?, ?, ?)",
        [(day, z, kwh, count) for (day, z), (kwh, count) in zip_totals.items()])
    run("INSERT INTO thresholds (house_id, meter, appliance, quantile, threshold_w) VALUES (?, ?, ?, ?, ?)", thresholds)
    write_day_docs(session, house_ids)
    run("INSERT INTO hourly_energy (house_id, day, hour_start, meter, energy_kwh, mean_w, min_w, max_w, samples) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", hourly)
    now_s = time.time()
    power = []
    for meter in (1, 2):
        for i in range(0, 1500, 2):
            ts_s = now_s - 1500 + i
            hour_start = dt.datetime.fromtimestamp(ts_s - ts_s % 3600, dt.timezone.utc)
            power.append((house_ids[0], meter, hour_start, dt.datetime.fromtimestamp(ts_s, dt.timezone.utc),
                          300 + 200 * meter + 150 * ((i // 120) % 3) + rng.uniform(-20, 20)))
    run("INSERT INTO recent_power (house_id, meter, hour_start, ts, power_w) VALUES (?, ?, ?, ?, ?)", power)
    alerts = []
    for i, (meter, appliance, _) in enumerate(APPLIANCES[:5]):
        start_s = now_s - 3600 * (i + 1)
        state = "open" if i < 2 else "closed"
        alerts.append({"id": f"{house_ids[i % houses]}-{meter}-{int(start_s)}", "kind": "overshoot" if i != 3 else "no_data",
                       "house_id": house_ids[i % houses], "meter": meter, "appliance": appliance, "threshold_w": 800.0,
                       "multiplier": 1.5, "peak_w": 1400.0 + 100 * i, "mean_w": 1250.0, "start_ts_s": start_s,
                       "end_ts_s": None if state == "open" else start_s + 900, "state": state,
                       "severity": "warning" if i else "critical", "updated_ts_s": start_s + 900})
    with rethink.connection(settings) as conn:
        rethink.r.db(settings.rethinkdb_db).table(RETHINKDB_TABLE).insert(alerts, conflict="update").run(conn)
    return house_ids


def seed_daily(session, houses: int, days: int, prefix: str = "bench_house", seed_value: int = 11,
               concurrency: int = 64) -> list[str]:
    """Houses with days of per-appliance and mains kWh, day totals and day documents (what the
    house daily-kWh API reads); written once (a house whose oldest and newest day are there is kept).

    Each house's rows go as unlogged batches of one partition and a week (a batch of one
    partition is one write on the server), many batches at a time."""
    rng = random.Random(seed_value)
    today = dt.datetime.now(dt.timezone.utc).date()
    first, last = today - dt.timedelta(days=days), today - dt.timedelta(days=1)
    house_ids = [f"{prefix}_{i + 1}" for i in range(houses)]
    present = session.prepare("SELECT day FROM daily_house_docs WHERE house_id = ? AND day IN (?, ?)")
    found = execute_concurrent_with_args(session, present, [(h, first, last) for h in house_ids],
                                         concurrency=concurrency)
    missing = [h for h, (_ok, rows) in zip(house_ids, found) if len(list(rows)) < 2]
    insert_house = session.prepare("INSERT INTO houses (house_id, zip, tz, lat, lon) VALUES (?, ?, ?, ?, ?)")
    insert_daily = session.prepare(
        "INSERT INTO daily_energy_by_house (house_id, day, meter, label, appliance, energy_kwh, coverage, samples) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
    insert_totals = session.prepare(
        "INSERT INTO daily_house_totals (house_id, day, mains_kwh, circuits_kwh, untracked_kwh, coverage) "
        "VALUES (?, ?, ?, ?, ?, ?)")
    batches = []
    for n, house_id in enumerate(missing):
        scale = rng.uniform(0.7, 1.4)
        houses_batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        houses_batch.add(insert_house, (house_id, ZIPS[n % len(ZIPS)], "America/New_York", 42.0 + rng.random(),
                                        -71.0 - rng.random()))
        batches.append(houses_batch)
        totals = BatchStatement(batch_type=BatchType.UNLOGGED)
        week = BatchStatement(batch_type=BatchType.UNLOGGED)
        for back in range(1, days + 1):
            rows, day_totals = house_day(rng, house_id, today - dt.timedelta(days=back), scale)
            for row in rows:
                week.add(insert_daily, row)
            totals.add(insert_totals, day_totals)
            if back % 7 == 0 or back == days:
                batches.append(week)
                week = BatchStatement(batch_type=BatchType.UNLOGGED)
        batches.append(totals)
    for ok, result in execute_concurrent(session, [(batch, ()) for batch in batches], concurrency=concurrency,
                                         raise_on_first_error=False):
        if not ok:
            raise result
    write_day_docs(session, missing, first, last, concurrency=concurrency)
    return house_ids

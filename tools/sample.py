"""Deterministic sample rows for screenshots and benchmarks (never the product keyspace by default)."""
from __future__ import annotations

import datetime as dt
import random
import time

from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.query import BatchStatement, BatchType

from smw import rethink
from smw.alert import RETHINKDB_TABLE

APPLIANCES = [(3, "oven", 1.1), (5, "refrigerator", 1.6), (6, "dishwaser", 0.9), (7, "kitchen_outlets", 0.8),
              (9, "lighting", 1.4), (10, "washer_dryer", 1.3), (11, "microwave", 0.4), (12, "electronics", 0.7)]
ZIPS = ["02139", "10001", "60614", "94110", "98101"]


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
            circuits = 0.0
            for meter, appliance, mean_kwh in APPLIANCES:
                kwh = round(mean_kwh * scale * rng.uniform(0.6, 1.4), 3)
                circuits += kwh
                by_appliance.append((appliance, day, house_id, kwh, None))
                daily.append((house_id, day, meter, appliance, appliance, kwh, 1.0, 28800))
            mains = round(circuits * rng.uniform(1.15, 1.35), 3)
            daily.append((house_id, day, 1, "mains", "mains", mains / 2, 1.0, 86400))
            daily.append((house_id, day, 2, "mains", "mains", mains / 2, 1.0, 86400))
            totals.append((house_id, day, mains, circuits, mains - circuits, 1.0))
            for i in range(len(APPLIANCES)):
                appliance, day_, house, kwh, _share = by_appliance[-1 - i]
                by_appliance[-1 - i] = (appliance, day_, house, kwh, round(kwh / mains, 4))
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
    """Houses with days of per-appliance and mains kWh and day totals, only what the house
    daily-kWh API reads; written once (a house whose oldest and newest day are there is kept).

    Each house's rows go as unlogged batches of one partition and a week (a batch of one
    partition is one write on the server), many batches at a time."""
    rng = random.Random(seed_value)
    today = dt.datetime.now(dt.timezone.utc).date()
    first, last = today - dt.timedelta(days=days), today - dt.timedelta(days=1)
    house_ids = [f"{prefix}_{i + 1}" for i in range(houses)]
    present = session.prepare("SELECT day FROM daily_house_totals WHERE house_id = ? AND day IN (?, ?)")
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
            day = today - dt.timedelta(days=back)
            circuits = 0.0
            for meter, appliance, mean_kwh in APPLIANCES:
                kwh = round(mean_kwh * scale * rng.uniform(0.6, 1.4), 3)
                circuits += kwh
                week.add(insert_daily, (house_id, day, meter, appliance, appliance, kwh, 1.0, 28800))
            mains = round(circuits * rng.uniform(1.15, 1.35), 3)
            for meter in (1, 2):
                week.add(insert_daily, (house_id, day, meter, "mains", "mains", mains / 2, 1.0, 86400))
            totals.add(insert_totals, (house_id, day, mains, circuits, mains - circuits, 1.0))
            if back % 7 == 0 or back == days:
                batches.append(week)
                week = BatchStatement(batch_type=BatchType.UNLOGGED)
        batches.append(totals)
    for ok, result in execute_concurrent(session, [(batch, ()) for batch in batches], concurrency=concurrency,
                                         raise_on_first_error=False):
        if not ok:
            raise result
    return house_ids

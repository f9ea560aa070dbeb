"""Bounded reads of the serving tables; every query is by partition key with a LIMIT or a range."""
from __future__ import annotations

import bisect
import datetime as dt
import logging
import statistics
from collections import defaultdict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from webapp.db import CassandraStore
from webapp.tariff import MAX_BOUNDED_S, Tariff, TariffError, Unpriceable, Version, timeline

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
DEFAULT_TZ = "America/New_York"  # REDD houses are in US/Eastern
MAINS = "mains"
ROWS_PER_DAY_LIMIT = 64  # meters per house-day (REDD houses have at most 26 channels)


def house_zone(tz_name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(tz_name or DEFAULT_TZ)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r, using %s", tz_name, DEFAULT_TZ)
        return ZoneInfo(DEFAULT_TZ)


def ts_s(value: dt.datetime | None) -> float | None:
    """Epoch seconds of a driver timestamp (naive UTC) or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp(), 3)


def as_utc(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, UTC)


def day_of(value) -> dt.date:
    """cassandra.util.Date or datetime.date -> datetime.date."""
    return value if isinstance(value, dt.date) else value.date()


def series_name(row) -> str:
    return row.appliance or row.label or f"meter {row.meter}"


def is_mains(row) -> bool:
    return (row.appliance or row.label or "") == MAINS


# ---------------------------------------------------------------- houses

def houses(store: CassandraStore, limit: int) -> list[dict]:
    rows = store.rows("SELECT house_id, zip, geohash, tz, lat, lon FROM houses LIMIT ?", (limit,))
    return sorted(
        ({"house_id": r.house_id, "zip": r.zip, "geohash": r.geohash, "tz": r.tz or DEFAULT_TZ,
          "lat": r.lat, "lon": r.lon} for r in rows),
        key=lambda h: h["house_id"],
    )


HOUSE_QUERY = "SELECT house_id, zip, geohash, tz, lat, lon FROM houses WHERE house_id = ?"


def house(store: CassandraStore, house_id: str) -> dict | None:
    rows = store.rows(HOUSE_QUERY, (house_id,))
    if not rows:
        return None
    r = rows[0]
    return {"house_id": r.house_id, "zip": r.zip, "geohash": r.geohash, "tz": r.tz or DEFAULT_TZ,
            "lat": r.lat, "lon": r.lon}


def local_yesterday(tz_name: str | None, now: dt.datetime) -> dt.date:
    return now.astimezone(house_zone(tz_name)).date() - dt.timedelta(days=1)


OVERVIEW_DAYS_BACK = 7  # how old a house's newest totals may be to stand in for yesterday's


def overview(store: CassandraStore, open_alerts: list[dict], limit: int, now: dt.datetime) -> dict:
    """Every house with its newest day's totals up to its local yesterday (within
    OVERVIEW_DAYS_BACK days: after local midnight the nightly job has not yet run for the day
    that just ended), open alerts and the top consumers."""
    house_list = houses(store, limit)
    yesterdays = [local_yesterday(h["tz"], now) for h in house_list]
    results = store.many(
        "SELECT day, mains_kwh, circuits_kwh, untracked_kwh, coverage FROM daily_house_totals "
        "WHERE house_id = ? AND day >= ? AND day <= ? LIMIT 1",
        [(h["house_id"], d - dt.timedelta(days=OVERVIEW_DAYS_BACK - 1), d) for h, d in zip(house_list, yesterdays)],
    )
    days = [day_of(found[0].day) if found else d for d, found in zip(yesterdays, results)]
    open_by_house: dict[str, int] = defaultdict(int)
    for alert in open_alerts:
        open_by_house[alert.get("house_id")] += 1
    rows = []
    for h, day, found in zip(house_list, days, results):
        totals = found[0] if found else None
        rows.append({
            "house_id": h["house_id"], "zip": h["zip"], "day": day.isoformat(),
            "mains_kwh": totals.mains_kwh if totals else None,
            "circuits_kwh": totals.circuits_kwh if totals else None,
            "untracked_kwh": totals.untracked_kwh if totals else None,
            "open_alerts": open_by_house.get(h["house_id"], 0),
        })
    ranked = sorted((r for r in rows if r["mains_kwh"] is not None), key=lambda r: -r["mains_kwh"])
    return {
        "houses": rows,
        "total_kwh": round(sum(r["mains_kwh"] for r in ranked), 3),
        "open_alerts": open_alerts,
        "top_consumers": ranked[:10],
    }


# ---------------------------------------------------------------- a house's days

DAILY_QUERY = ("SELECT day, meter, label, appliance, energy_kwh, coverage, samples FROM daily_energy_by_house "
               "WHERE house_id = ? AND day >= ? AND day <= ? LIMIT ?")
TOTALS_QUERY = ("SELECT day, mains_kwh, circuits_kwh, untracked_kwh, coverage FROM daily_house_totals "
                "WHERE house_id = ? AND day >= ? AND day <= ? LIMIT ?")


def daily_params(house_id: str, start: dt.date, end: dt.date) -> tuple:
    return house_id, start, end, ((end - start).days + 1) * ROWS_PER_DAY_LIMIT


def totals_params(house_id: str, start: dt.date, end: dt.date) -> tuple:
    return house_id, start, end, (end - start).days + 1


def daily_rows(store: CassandraStore, house_id: str, start: dt.date, end: dt.date) -> list:
    return store.rows(DAILY_QUERY, daily_params(house_id, start, end))


def totals_rows(store: CassandraStore, house_id: str, start: dt.date, end: dt.date) -> list:
    return store.rows(TOTALS_QUERY, totals_params(house_id, start, end))


DOCS_QUERY = "SELECT doc FROM daily_house_docs WHERE house_id = ? AND day >= ? AND day <= ? LIMIT ?"


def house_daily(store: CassandraStore, house_id: str, start: dt.date, end: dt.date,
                house_known: bool = False) -> dict | None:
    """Daily kWh per appliance (channels of one appliance summed), mains and untracked, oldest day
    first, with the range's totals; None when the house is unknown. The days are the nightly
    job's documents (daily_house_docs): one row per day, read with the house (unless house_known)
    at once."""
    house_rows = None if house_known else store.start(HOUSE_QUERY, (house_id,))
    docs = store.start(DOCS_QUERY, totals_params(house_id, start, end))
    days_out = [orjson.loads(row.doc) for row in docs.result()]
    if house_rows is not None and not list(house_rows.result()):
        return None
    by_appliance: dict[str, float] = defaultdict(float)
    with_mains: dict[str, float] = defaultdict(float)  # energy on the days that have a mains total
    mains_kwh = untracked_kwh = 0.0
    for d in days_out:
        mains = d["mains_kwh"]
        if d["untracked_kwh"] is not None:
            untracked_kwh += d["untracked_kwh"]
        for name, kwh in d["appliances"].items():
            by_appliance[name] += kwh
            if mains is not None:
                with_mains[name] += kwh
        if mains is not None:
            mains_kwh += mains
    ordered = sorted(by_appliance, key=lambda k: -by_appliance[k])
    return {
        "house_id": house_id, "from": start.isoformat(), "to": end.isoformat(),
        "appliances": ordered,
        "days": days_out,
        "totals": {
            "mains_kwh": round(mains_kwh, 6),
            "untracked_kwh": round(untracked_kwh, 6),
            "by_appliance": {k: round(by_appliance[k], 6) for k in ordered},
            # A share compares like with like: an appliance's energy on the days that have a mains total.
            "share_of_mains": {
                k: (round(with_mains[k] / mains_kwh, 4) if mains_kwh > 0 else None) for k in ordered
            },
            "untracked_share": round(untracked_kwh / mains_kwh, 4) if mains_kwh > 0 else None,
        },
    }


def thresholds(store: CassandraStore, house_id: str) -> list[dict]:
    rows = store.rows(
        "SELECT meter, appliance, quantile, threshold_w, samples, normal_peak_w, min_run_s, window_days, computed_at "
        "FROM thresholds WHERE house_id = ? LIMIT ?",
        (house_id, ROWS_PER_DAY_LIMIT),
    )
    return [{"meter": r.meter, "appliance": r.appliance, "quantile": r.quantile, "threshold_w": r.threshold_w,
             "samples": r.samples, "normal_peak_w": r.normal_peak_w, "min_run_s": r.min_run_s,
             "window_days": r.window_days, "computed_at_ts_s": ts_s(r.computed_at)}
            for r in rows]


# ---------------------------------------------------------------- tariffs and cost

TARIFF_COLUMNS = ("effective_from, until, source, currency, default_rate_per_kwh, periods, tier, rate_label, meter, "
                  "announced_at")
OPEN_TARIFF_AT = (f"SELECT {TARIFF_COLUMNS} FROM house_tariffs WHERE house_id = ? AND bounded = false "
                  "AND effective_from <= ? LIMIT 1")
TARIFFS_WITHIN = (f"SELECT {TARIFF_COLUMNS} FROM house_tariffs WHERE house_id = ? AND bounded = ? "
                  "AND effective_from > ? AND effective_from < ? LIMIT ?")
TARIFF_HISTORY = f"SELECT {TARIFF_COLUMNS} FROM house_tariffs WHERE house_id = ? AND bounded = ? LIMIT ?"
INSERT_TARIFF = ("INSERT INTO house_tariffs (house_id, bounded, effective_from, until, source, currency, "
                 "default_rate_per_kwh, periods, tier, rate_label, meter, announced_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
TARIFF_CHANGES_LIMIT = 5000  # versions read per range: ~two a day for a 92-day range would be 184
# Instants sent to Cassandra stay within what datetime can hold: a cost range may be any
# YYYY-MM-DD, and no tariff is dated outside 2000-2100 anyway.
MIN_INSTANT_S, MAX_INSTANT_S = 0.0, 253402214400.0  # 1970-01-01, 9999-12-31


def instant(epoch_s: float) -> dt.datetime:
    return as_utc(min(max(epoch_s, MIN_INSTANT_S), MAX_INSTANT_S))


def tariff_version(row) -> Version | None:
    """A house_tariffs row as a Version; None (logged) for a row no tariff can be made of."""
    try:
        periods = [{"name": p.name, "start_hour": p.start_hour, "end_hour": p.end_hour,
                    "rate_per_kwh": p.rate_per_kwh} for p in (row.periods or ())]
        # Rows are validated when written; this guards against hand-made ones (cqlsh) breaking a page.
        tariff = Tariff.from_spec({"currency": row.currency, "default_rate_per_kwh": row.default_rate_per_kwh,
                                   "periods": periods})
    except (TariffError, AttributeError) as exc:
        log.warning("unusable house_tariffs row from %s (%s): %s", row.effective_from, row.source, exc)
        return None
    return Version(ts_s(row.effective_from), ts_s(row.until), tariff, row.source or "unknown", row.tier,
                   row.rate_label, row.meter, ts_s(row.announced_at))


def tariff_versions(store: CassandraStore, house_id: str, start_s: float, end_s: float) -> list[Version]:
    """The history entries that can be in force within [start_s, end_s): the open-ended one in force at
    start_s, the open-ended ones beginning within, and the bounded ones that can reach into it."""
    open_at = store.start(OPEN_TARIFF_AT, (house_id, instant(start_s)))
    open_within = store.start(TARIFFS_WITHIN, (house_id, False, instant(start_s), instant(end_s),
                                               TARIFF_CHANGES_LIMIT + 1))
    bounded = store.start(TARIFFS_WITHIN, (house_id, True, instant(start_s - MAX_BOUNDED_S), instant(end_s),
                                           TARIFF_CHANGES_LIMIT + 1))
    rows = list(open_at.result())
    for found in (open_within, bounded):
        more = list(found.result())
        if len(more) > TARIFF_CHANGES_LIMIT:
            raise Unpriceable(f"the tariff changes more than {TARIFF_CHANGES_LIMIT} times in this range; "
                              "ask for a shorter one")
        rows += more
    return [v for v in map(tariff_version, rows) if v is not None]


def tariff_history(store: CassandraStore, house_id: str, limit: int) -> list[Version]:
    """The latest `limit` history entries of a house, open-ended and bounded, newest first."""
    found = [store.start(TARIFF_HISTORY, (house_id, bounded, limit)) for bounded in (False, True)]
    versions = [v for f in found for v in map(tariff_version, f.result()) if v is not None]
    return sorted(versions, key=lambda v: (v.effective_from_s, v.until_s is not None), reverse=True)[:limit]


def put_tariff(store: CassandraStore, house_id: str, version: Version) -> None:
    """Add an open-ended version to a house's history (an upsert: the same instant replaces it)."""
    store.rows(INSERT_TARIFF, (
        house_id, version.until_s is not None, instant(version.effective_from_s),
        None if version.until_s is None else instant(version.until_s), version.source, version.tariff.currency,
        version.tariff.default_rate_per_kwh, list(version.tariff.periods) or None,  # Periods bind as the UDT
        version.tier, version.rate_label, version.meter,
        None if version.announced_s is None else instant(version.announced_s)))


def local_midnight_s(day: dt.date, zone: ZoneInfo) -> float:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).timestamp()


def cost(store: CassandraStore, house_id: str, tz_name: str | None, start: dt.date, end: dt.date,
         configured: Version) -> dict:
    """Cost per appliance from hourly energy, each hour priced at the house's tariff in force at the
    hour's start (UTC instant; time-of-use periods in the house's local time). Days without hourly rows
    are priced from their daily kWh at the standard rate in force at the local day's start and counted in
    estimated_days. Raises Unpriceable when the priced hours are in more than one currency."""
    zone = house_zone(tz_name)
    start_s = local_midnight_s(start, zone)
    end_s = local_midnight_s(end, zone) + 86400  # the day after `end` may not exist (9999-12-31)
    versions = tariff_versions(store, house_id, start_s, end_s)
    segments = timeline(versions, configured, start_s, end_s)
    segment_starts = [s.start_s for s in segments]
    hours_in: dict[int, set] = defaultdict(set)  # segment index -> the hours it priced
    days_in: dict[int, int] = defaultdict(int)  # segment index -> the days without hourly rows it priced

    def segment_at(epoch_s: float) -> int:
        return max(bisect.bisect_right(segment_starts, epoch_s) - 1, 0)

    day_list = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    meter_names: dict[int, str] = {}
    daily_by_day: dict[dt.date, list] = defaultdict(list)
    for row in daily_rows(store, house_id, start, end):
        meter_names[row.meter] = MAINS if is_mains(row) else series_name(row)
        daily_by_day[day_of(row.day)].append(row)
    hourly = store.many(
        "SELECT hour_start, meter, energy_kwh FROM hourly_energy WHERE house_id = ? AND day = ? LIMIT ?",
        [(house_id, d, 24 * ROWS_PER_DAY_LIMIT + 64) for d in day_list],
    )
    energy_kwh: dict[str, float] = defaultdict(float)
    cost_total: dict[str, float] = defaultdict(float)
    by_period: dict[tuple, dict] = {}
    estimated_days = 0
    for day, rows in zip(day_list, hourly):
        if rows:
            for row in rows:
                if row.energy_kwh is None:
                    continue
                name = meter_names.get(row.meter, f"meter {row.meter}")
                hour_start = row.hour_start.replace(tzinfo=UTC)
                index = segment_at(hour_start.timestamp())
                hours_in[index].add(hour_start)
                version = segments[index].version
                period, rate = version.rate(hour_start.astimezone(zone).hour)
                energy_kwh[name] += row.energy_kwh
                cost_total[name] += row.energy_kwh * rate
                if name == MAINS:
                    slot = by_period.setdefault((period, rate, version.tariff.currency), {
                        "period": period, "rate_per_kwh": rate, "currency": version.tariff.currency,
                        "energy_kwh": 0.0, "cost": 0.0})
                    slot["energy_kwh"] += row.energy_kwh
                    slot["cost"] += row.energy_kwh * rate
        elif daily_by_day.get(day):
            estimated_days += 1
            index = segment_at(local_midnight_s(day, zone))
            days_in[index] += 1
            rate = segments[index].version.tariff.default_rate_per_kwh
            for row in daily_by_day[day]:
                name = meter_names[row.meter]
                energy_kwh[name] += row.energy_kwh or 0.0
                cost_total[name] += (row.energy_kwh or 0.0) * rate
    priced = [segments[i] for i in sorted(set(hours_in) | set(days_in))]
    currencies = list(dict.fromkeys(s.version.tariff.currency for s in priced))
    if len(currencies) > 1:
        switches = [s for i, s in enumerate(priced)
                    if i == 0 or s.version.tariff.currency != priced[i - 1].version.tariff.currency]
        changes = ", then ".join(f"{s.version.tariff.currency} from {instant(s.start_s).isoformat()}"
                                 for s in switches)
        raise Unpriceable(f"the hours of this range are priced in {' and '.join(currencies)} ({changes}); "
                          "ask for ranges in one currency each")
    mains_cost = cost_total.pop(MAINS, 0.0)
    mains_kwh = energy_kwh.pop(MAINS, 0.0)
    circuits_cost = sum(cost_total.values())
    appliances = [{"appliance": k, "energy_kwh": round(energy_kwh[k], 6), "cost": round(cost_total[k], 4)}
                  for k in sorted(cost_total, key=lambda k: -cost_total[k])]
    last = segments[-1].version
    return {
        "house_id": house_id, "from": start.isoformat(), "to": end.isoformat(),
        "currency": currencies[0] if currencies else last.tariff.currency,
        "tariff": last.tariff.as_dict(),  # the one in force at the end of the range
        "tariffs": [dict(s.version.as_dict(), from_ts_s=round(s.start_s, 3), to_ts_s=round(s.end_s, 3),
                         priced_hours=len(hours_in.get(i, ())), estimated_days=days_in.get(i, 0))
                    for i, s in enumerate(segments)],
        "appliances": appliances,
        "mains": {"energy_kwh": round(mains_kwh, 6), "cost": round(mains_cost, 4)},
        "untracked": {"energy_kwh": round(max(mains_kwh - sum(energy_kwh.values()), 0.0), 6),
                      "cost": round(max(mains_cost - circuits_cost, 0.0), 4)},
        "by_period": [dict(v, energy_kwh=round(v["energy_kwh"], 6), cost=round(v["cost"], 4))
                      for v in by_period.values()],
        "estimated_days": estimated_days,
    }


def alert_history(store: CassandraStore, house_id: str, limit: int) -> list[dict]:
    rows = store.rows(
        "SELECT house_id, start_ts, alert_id, kind, meter, appliance, state, severity, threshold_w, multiplier, "
        "peak_w, mean_w, end_ts, updated_at FROM alerts_by_house WHERE house_id = ? LIMIT ?",
        (house_id, limit),
    )
    return [history_alert(r) for r in rows]


def history_alert(r) -> dict:
    """A Cassandra alerts_by_house row in the RethinkDB document shape."""
    return {
        "id": r.alert_id, "kind": r.kind, "house_id": r.house_id, "meter": r.meter, "appliance": r.appliance,
        "threshold_w": r.threshold_w, "multiplier": r.multiplier, "peak_w": r.peak_w, "mean_w": r.mean_w,
        "start_ts_s": ts_s(r.start_ts), "end_ts_s": ts_s(r.end_ts), "state": r.state, "severity": r.severity,
        "updated_ts_s": ts_s(r.updated_at),
    }


# ---------------------------------------------------------------- appliances and zip codes

def quantile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[round(q * 100) - 1] \
        if 0 < q < 1 else (sorted_values[0] if q == 0 else sorted_values[-1])


DEFAULT_DAY_LOOKBACK = 7  # days before the newest possible one that a page without ?day= looks at


def newest_complete_day(now: dt.datetime) -> dt.date:
    """The newest day that has ended for every house: yesterday where the date is earliest (UTC-12)."""
    return (now - dt.timedelta(hours=12)).date() - dt.timedelta(days=1)


def latest_day_with_rows(store: CassandraStore, statement: str, key: tuple, now: dt.datetime) -> dt.date:
    """The newest of the last DEFAULT_DAY_LOOKBACK complete days whose partition (key + (day,)) has a
    row: the nightly batch writes a house-local day once it has ended, so "yesterday in UTC" can still
    be empty on a US evening. The newest complete day when none has."""
    newest = newest_complete_day(now)
    days = [newest - dt.timedelta(days=i) for i in range(DEFAULT_DAY_LOOKBACK)]
    for day, rows in zip(days, store.many(statement, [key + (day,) for day in days])):
        if rows:
            return day
    return newest


def default_appliance_day(store: CassandraStore, appliance: str, now: dt.datetime) -> dt.date:
    return latest_day_with_rows(store, "SELECT house_id FROM daily_energy_by_appliance WHERE appliance = ? "
                                "AND day = ? LIMIT 1", (appliance,), now)


def default_zip_day(store: CassandraStore, now: dt.datetime) -> dt.date:
    return latest_day_with_rows(store, "SELECT zip FROM daily_energy_by_zip WHERE day = ? LIMIT 1", (), now)


def appliance_day(store: CassandraStore, appliance: str, day: dt.date, limit: int) -> dict:
    """The distribution of one appliance's daily kWh across houses on one day."""
    rows = store.rows(
        "SELECT house_id, energy_kwh, share_of_mains FROM daily_energy_by_appliance "
        "WHERE appliance = ? AND day = ? LIMIT ?",
        (appliance, day, limit),
    )
    house_rows = sorted(
        ({"house_id": r.house_id, "energy_kwh": r.energy_kwh, "share_of_mains": r.share_of_mains}
         for r in rows if r.energy_kwh is not None),
        key=lambda h: -h["energy_kwh"],
    )
    values = sorted(h["energy_kwh"] for h in house_rows)
    stats = None
    if values:
        stats = {"houses": len(values), "min_kwh": values[0], "p25_kwh": round(quantile(values, 0.25), 6),
                 "median_kwh": round(quantile(values, 0.5), 6), "p75_kwh": round(quantile(values, 0.75), 6),
                 "max_kwh": values[-1], "mean_kwh": round(statistics.fmean(values), 6)}
    return {"appliance": appliance, "day": day.isoformat(), "houses": house_rows, "stats": stats}


def zip_day(store: CassandraStore, day: dt.date, limit: int) -> dict:
    rows = store.rows("SELECT zip, energy_kwh, houses FROM daily_energy_by_zip WHERE day = ? LIMIT ?", (day, limit))
    zips = [{"zip": r.zip, "energy_kwh": r.energy_kwh, "houses": r.houses,
             "kwh_per_house": round(r.energy_kwh / r.houses, 6) if r.houses and r.energy_kwh is not None else None}
            for r in rows]
    return {"day": day.isoformat(), "zips": sorted(zips, key=lambda z: z["zip"])}


# ---------------------------------------------------------------- power

RAW_MAX_SPAN_S = 3600
MINUTE_MAX_SPAN_S = 2 * 86400
POWER_MAX_SPAN_S = 92 * 86400
RAW_POINT_LIMIT = 20000


def hour_floor(epoch_s: float) -> dt.datetime:
    return as_utc(epoch_s - epoch_s % 3600)


def resolution_for(span_s: float) -> str:
    """raw up to an hour, per minute up to two days, per hour beyond."""
    if span_s <= RAW_MAX_SPAN_S:
        return "raw"
    if span_s <= MINUTE_MAX_SPAN_S:
        return "minute"
    return "hour"


def power(store: CassandraStore, house_id: str, meters: list[int], from_ts_s: float, to_ts_s: float) -> dict:
    """Power of some meters over [from, to): raw, per-minute or per-hour points by the span."""
    resolution = resolution_for(to_ts_s - from_ts_s)
    lo, hi = as_utc(from_ts_s), as_utc(to_ts_s)
    series = {}
    if resolution in ("raw", "minute"):
        hours = []
        hour = hour_floor(from_ts_s)
        while hour < hi:
            hours.append(hour)
            hour += dt.timedelta(hours=1)
        for meter in meters:
            if resolution == "raw":
                results = store.many(
                    "SELECT ts, power_w FROM recent_power WHERE house_id = ? AND meter = ? AND hour_start = ? "
                    "AND ts >= ? AND ts < ? LIMIT ?",
                    [(house_id, meter, h, lo, hi, RAW_POINT_LIMIT) for h in hours],
                )
                points = [[ts_s(r.ts), r.power_w] for rows in results for r in rows]
            else:
                results = store.many(
                    "SELECT floor(ts, 1m) AS minute, avg(power_w) AS mean_w, min(power_w) AS min_w, "
                    "max(power_w) AS max_w FROM recent_power WHERE house_id = ? AND meter = ? AND hour_start = ? "
                    "AND ts >= ? AND ts < ? GROUP BY house_id, meter, hour_start, floor(ts, 1m) LIMIT 60",
                    [(house_id, meter, h, lo, hi) for h in hours],
                )
                points = [[ts_s(r.minute), r.mean_w, r.min_w, r.max_w] for rows in results for r in rows]
            series[str(meter)] = points[:RAW_POINT_LIMIT]
    else:
        # hourly_energy partitions are house-local days: read one day more on each side
        first, last = lo.date() - dt.timedelta(days=1), hi.date() + dt.timedelta(days=1)
        day_list = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        results = store.many(
            "SELECT hour_start, meter, mean_w, min_w, max_w FROM hourly_energy WHERE house_id = ? AND day = ? LIMIT ?",
            [(house_id, d, 24 * ROWS_PER_DAY_LIMIT + 64) for d in day_list],
        )
        wanted = set(meters)
        for meter in meters:
            series[str(meter)] = []
        for rows in results:
            for r in rows:
                start_s = ts_s(r.hour_start)
                if r.meter in wanted and from_ts_s <= start_s < to_ts_s:
                    series[str(r.meter)].append([start_s, r.mean_w, r.min_w, r.max_w])
        for points in series.values():
            points.sort(key=lambda p: p[0])
    return {"house_id": house_id, "resolution": resolution, "from_ts_s": from_ts_s, "to_ts_s": to_ts_s,
            "series": series}

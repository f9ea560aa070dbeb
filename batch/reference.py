"""An independent reference for the nightly numbers, in DuckDB SQL.

Written separately from the Spark job (batch/nightly.py + batch/energy.py) to check
it and to time it against: the same inputs (Parquet readings partitioned by UTC
`date`, a houses file with `tz`) and the same rules (left Riemann sum, dt capped per
meter, duplicates merged at their mean, intervals split at the house's local
midnight, exact quantiles of readings above the off level, standby excluded). Where the Spark job
splits intervals at every local hour and sums hours into days, this splits them at
local midnights directly.

    python -m batch.reference --readings DIR --houses FILE --from D --to D
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys

import duckdb


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    if threads:
        connection.execute(f"SET threads = {int(threads)}")
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def _houses_sql(houses_path: str) -> str:
    reader = "read_json_auto" if houses_path.endswith(".json") else "read_parquet"
    return f"SELECT house_id, tz FROM {reader}(?)"


def daily_energy(connection, readings_path: str, houses_path: str, first_day: dt.date, last_day: dt.date,
                 mains_cap_s: float = 30.0, circuit_cap_s: float = 50.0, default_tz: str = "America/New_York"):
    """Rows (house_id, meter, day, energy_kwh, samples) for the local days first_day..last_day."""
    sql = f"""
    WITH houses AS ({_houses_sql(houses_path)}),
    raw AS (
        SELECT house_id, meter, appliance, ts_s, power_w
        FROM read_parquet(? || '/**/*.parquet', hive_partitioning = true)
        WHERE CAST(date AS DATE) BETWEEN ? AND ?
    ),
    caps AS (
        SELECT house_id, meter,
               CASE WHEN max(appliance) = 'mains' THEN ? ELSE ? END AS cap_s
        FROM raw GROUP BY house_id, meter
    ),
    merged AS (
        SELECT house_id, meter, ts_s, avg(power_w) AS power_w FROM raw GROUP BY house_id, meter, ts_s
    ),
    intervals AS (
        SELECT m.house_id, m.meter, m.ts_s, m.power_w, coalesce(h.tz, ?) AS tz,
               least(coalesce(lead(m.ts_s) OVER w - m.ts_s, 0), c.cap_s) AS dt_s
        FROM merged m JOIN caps c USING (house_id, meter) LEFT JOIN houses h USING (house_id)
        WINDOW w AS (PARTITION BY m.house_id, m.meter ORDER BY m.ts_s)
    ),
    localised AS (
        SELECT *, CAST(timezone(tz, to_timestamp(ts_s)) AS DATE) AS day FROM intervals
    ),
    split AS (
        SELECT *, epoch(timezone(tz, CAST(day + 1 AS TIMESTAMP))) - ts_s AS to_midnight_s FROM localised
    ),
    pieces AS (
        SELECT house_id, meter, day, power_w * least(dt_s, to_midnight_s) AS energy_j, 1 AS sample FROM split
        UNION ALL
        SELECT house_id, meter, day + 1, power_w * (dt_s - to_midnight_s), 0 FROM split WHERE dt_s > to_midnight_s
    )
    SELECT house_id, meter, day, sum(energy_j) / 3.6e6 AS energy_kwh, sum(sample) AS samples
    FROM pieces WHERE day BETWEEN ? AND ?
    GROUP BY house_id, meter, day ORDER BY house_id, meter, day
    """
    first_utc, last_utc = first_day - dt.timedelta(days=1), last_day + dt.timedelta(days=1)
    return connection.execute(sql, [houses_path, readings_path, first_utc, last_utc, mains_cap_s, circuit_cap_s,
                                    default_tz, first_day, last_day]).fetchall()


def thresholds(connection, readings_path: str, houses_path: str, first_day: dt.date, last_day: dt.date,
               quantile: float = 0.97, off_level_w: float = 10.0, standby_ratio: float = 2.0,
               default_tz: str = "America/New_York"):
    """Rows (house_id, meter, threshold_w, samples) over the local days first_day..last_day.

    The off level of a meter is standby_ratio x its median power when that is above
    off_level_w and some reading exceeds it, else off_level_w; a meter with no reading
    above its off level gets off_level_w and 0 samples.
    """
    sql = f"""
    WITH houses AS ({_houses_sql(houses_path)}),
    windowed AS (
        SELECT r.house_id, r.meter, r.power_w
        FROM read_parquet(? || '/**/*.parquet', hive_partitioning = true) r LEFT JOIN houses h USING (house_id)
        WHERE CAST(r.date AS DATE) BETWEEN ? AND ?
          AND CAST(timezone(coalesce(h.tz, ?), to_timestamp(r.ts_s)) AS DATE) BETWEEN ? AND ?
    ),
    levels AS (
        SELECT house_id, meter, ? * quantile_cont(power_w, 0.5) AS standby_w, max(power_w) AS max_w
        FROM windowed GROUP BY house_id, meter
    ),
    offs AS (
        SELECT house_id, meter,
               CASE WHEN standby_w > ? AND max_w > standby_w THEN standby_w ELSE ? END AS off_w
        FROM levels
    )
    SELECT w.house_id, w.meter,
           coalesce(quantile_cont(w.power_w, ?) FILTER (WHERE w.power_w > o.off_w), ?) AS threshold_w,
           count(*) FILTER (WHERE w.power_w > o.off_w) AS samples
    FROM windowed w JOIN offs o USING (house_id, meter)
    GROUP BY w.house_id, w.meter ORDER BY w.house_id, w.meter
    """
    first_utc, last_utc = first_day - dt.timedelta(days=1), last_day + dt.timedelta(days=1)
    return connection.execute(sql, [houses_path, readings_path, first_utc, last_utc, default_tz, first_day, last_day,
                                    standby_ratio, off_level_w, off_level_w, quantile, off_level_w]).fetchall()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--readings", required=True, help="Parquet readings partitioned by date=YYYY-MM-DD")
    parser.add_argument("--houses", required=True, help="houses file (Parquet or JSON) with house_id, tz")
    parser.add_argument("--from", dest="first_day", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--to", dest="last_day", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--window-days", type=int, default=30, help="threshold window in days (default 30)")
    parser.add_argument("--rows", action="store_true", help="print the rows, not just their counts")
    args = parser.parse_args(argv)
    connection = connect()
    daily = daily_energy(connection, args.readings, args.houses, args.first_day, args.last_day)
    window_first = args.last_day - dt.timedelta(days=args.window_days - 1)
    limits = thresholds(connection, args.readings, args.houses, window_first, args.last_day)
    if args.rows:
        for row in daily + limits:
            print(*row, sep="\t")
    print(f"{len(daily)} daily meter rows, {len(limits)} thresholds")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""An independent reference for the nightly numbers, in DuckDB SQL.

Written separately from the Spark job (batch/nightly.py + smw/energy.py) to check
it and to time it against: the same inputs (Parquet readings partitioned by UTC
`date`, a houses file with `zip` and `tz`), the same rules (left Riemann sum, dt capped
per meter, duplicates merged at their mean, intervals split at the house's local hours,
exact quantiles of readings above the off level, standby excluded, normal peaks from
runs of readings per local day, fleet medians per appliance) and the same six outputs
(`nightly`). `daily_energy` derives daily energy a second way, splitting
intervals at local midnights directly rather than summing hours.

    python -m tools.reference --readings DIR --houses FILE --from D --to D [--show 5]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import duckdb

EPOCH = dt.date(1970, 1, 1)


def connect(threads: int | None = None, memory_limit: str | None = None,
            temp_directory: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB; past its memory limit (default: DuckDB's, 80 % of RAM) it spills
    to `temp_directory` (default: a folder of the system's temporary directory)."""
    connection = duckdb.connect()
    if threads:
        connection.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        connection.execute("SET memory_limit = ?", [memory_limit])
    connection.execute("SET temp_directory = ?", [temp_directory or os.path.join(tempfile.gettempdir(), "smw-duckdb")])
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def _houses_sql(houses_path: str) -> str:
    reader = "read_json_auto" if houses_path.endswith(".json") else "read_parquet"
    return f"SELECT house_id, zip, tz FROM {reader}(?)"


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


OUTPUTS = ("hourly_energy", "daily_energy_by_house", "daily_house_totals", "daily_energy_by_appliance",
           "daily_energy_by_zip", "thresholds")


def nightly(connection, readings_path: str, houses_path: str, first_day: dt.date, last_day: dt.date, *,
            mains_cap_s: float = 30.0, circuit_cap_s: float = 50.0, quantile: float = 0.9,
            off_level_w: float = 10.0, standby_ratio: float = 2.0, window_days: int = 30, peak_days: int = 2,
            peak_readings: int = 3, run_multiplier: float = 2.0, run_gap_s: float = 60.0, fleet_min_meters: int = 2,
            default_tz: str = "America/New_York") -> dict[str, int]:
    """Every nightly output for the local days first_day..last_day, as tables of `connection`
    named and shaped as the Cassandra tables (OUTPUTS); returns their row counts.

    Intervals are split at local hour boundaries (a meter's interval is at most an hour
    long, so it crosses at most one); days are summed from hours. The thresholds take
    the readings of the local days of the `window_days` window ending with last_day: the
    off level of a meter is standby_ratio x its median power when that is above
    off_level_w and some reading exceeds it, else off_level_w; the threshold is the
    exact quantile of the readings above it (off_level_w with 0 samples when none is).
    A run of peak_readings consecutive readings (duplicates merged) holds the lowest of
    them and belongs to the local day of its last; per day the best run counts, and the
    peak_days-th best day is the meter's peak, the best day its top (each only above the
    off level). A run above threshold_w x run_multiplier (peak_readings readings or more,
    none more than run_gap_s after the one before) is whole when a reading within run_gap_s
    before and after it is not above; its duration runs from its first reading to its last,
    its day is its last reading's; min_run_s is the shortest whole run of a meter with such
    runs on peak_days days or more. Per appliance, the fleet takes the medians of threshold and peak over
    meters with samples, given fleet_min_meters of them: a meter with no samples takes
    both, and a top above the meter's peak counts up to the fleet's peak; fleet_meters
    says where the fleet set a value.
    """
    window_first = last_day - dt.timedelta(days=window_days - 1)
    loaded = (min(first_day, window_first) - dt.timedelta(days=1), last_day + dt.timedelta(days=1))
    run = connection.execute
    run(f"CREATE OR REPLACE TEMP TABLE ref_houses AS {_houses_sql(houses_path)}", [houses_path])
    # A view: the readings are scanned where they are used, never held.
    run("""
    CREATE OR REPLACE TEMP VIEW ref_readings AS
    SELECT r.house_id, r.meter, r.label, r.appliance, r.ts_s, r.power_w, coalesce(h.tz, '{tz}') AS tz
    FROM read_parquet('{path}/**/*.parquet', hive_partitioning = true) r LEFT JOIN ref_houses h USING (house_id)
    WHERE CAST(r.date AS DATE) BETWEEN DATE '{lo}' AND DATE '{hi}'
    """.format(tz=_literal(default_tz), path=_literal(readings_path), lo=loaded[0], hi=loaded[1]))
    # Local wall-clock seconds of a UTC epoch second: zone offsets are whole seconds.
    run("CREATE OR REPLACE TEMP MACRO ref_local(tz, ts) AS ts + round(epoch(timezone(tz, to_timestamp(ts))) - ts)")
    run("""
    CREATE OR REPLACE TEMP TABLE ref_meters AS
    SELECT house_id, meter, any_value(tz) AS tz, max(label) AS label, max(appliance) AS appliance,
           coalesce(bool_or(appliance = 'mains'), false) AS is_mains
    FROM ref_readings GROUP BY house_id, meter
    """)
    run("""
    CREATE OR REPLACE TEMP TABLE ref_hours AS
    WITH merged AS (
        SELECT house_id, meter, ts_s, avg(power_w) AS power_w
        FROM ref_readings GROUP BY house_id, meter, ts_s
    ),
    intervals AS (
        SELECT m.house_id, m.meter, k.tz, m.ts_s, m.power_w, ref_local(k.tz, m.ts_s) AS local_s,
               least(coalesce(lead(m.ts_s) OVER (PARTITION BY m.house_id, m.meter ORDER BY m.ts_s) - m.ts_s, 0),
                     CASE WHEN k.is_mains THEN $mains_cap ELSE $circuit_cap END) AS dt_s
        FROM merged m JOIN ref_meters k USING (house_id, meter)
    ),
    split AS (
        SELECT *, least(dt_s, 3600 - mod(local_s, 3600)) AS head_s FROM intervals
    ),
    tails AS (
        SELECT house_id, meter, power_w, dt_s - head_s AS tail_s, ts_s + head_s AS tail_start_s,
               ref_local(tz, ts_s + head_s) AS tail_local_s
        FROM split WHERE dt_s > head_s
    ),
    pieces AS (
        SELECT house_id, meter, round(ts_s - mod(local_s, 3600)) AS hour_start_s, floor(local_s / 86400) AS day_n,
               power_w * head_s AS energy_j, head_s AS covered_s, 1 AS sample, power_w AS sample_w
        FROM split
        UNION ALL
        SELECT house_id, meter, round(tail_start_s - mod(tail_local_s, 3600)), floor(tail_local_s / 86400),
               power_w * tail_s, tail_s, 0, NULL
        FROM tails
    )
    SELECT house_id, meter, DATE '1970-01-01' + CAST(day_n AS INTEGER) AS day, hour_start_s,
           sum(energy_j) AS energy_j, sum(covered_s) AS covered_s, sum(sample) AS samples,
           min(sample_w) AS min_w, max(sample_w) AS max_w
    FROM pieces
    WHERE day_n BETWEEN $first_n AND $last_n
    GROUP BY house_id, meter, day_n, hour_start_s
    """, {"mains_cap": mains_cap_s, "circuit_cap": circuit_cap_s,
          "first_n": (first_day - EPOCH).days, "last_n": (last_day - EPOCH).days})
    run("""
    CREATE OR REPLACE TEMP TABLE hourly_energy AS
    SELECT house_id, day, CAST(to_timestamp(hour_start_s) AS TIMESTAMP) AS hour_start, meter,
           energy_j / 3.6e6 AS energy_kwh, CASE WHEN covered_s > 0 THEN energy_j / covered_s END AS mean_w,
           min_w, max_w, CAST(samples AS INTEGER) AS samples
    FROM ref_hours
    """)
    run("""
    CREATE OR REPLACE TEMP TABLE daily_energy_by_house AS
    WITH days AS (
        SELECT house_id, meter, day, sum(energy_j) AS energy_j, sum(covered_s) AS covered_s, sum(samples) AS samples
        FROM ref_hours GROUP BY house_id, meter, day
    )
    SELECT d.house_id, d.day, d.meter, k.label, k.appliance, d.energy_j / 3.6e6 AS energy_kwh,
           d.covered_s / (epoch(timezone(k.tz, CAST(d.day + 1 AS TIMESTAMP)))
                          - epoch(timezone(k.tz, CAST(d.day AS TIMESTAMP)))) AS coverage,
           d.samples
    FROM days d JOIN ref_meters k USING (house_id, meter)
    """)
    run("""
    CREATE OR REPLACE TEMP TABLE daily_house_totals AS
    WITH sums AS (
        SELECT house_id, day,
               sum(energy_kwh) FILTER (WHERE appliance = 'mains') AS mains_kwh,
               coalesce(sum(energy_kwh) FILTER (WHERE appliance <> 'mains'), 0) AS circuits_kwh,
               min(coverage) FILTER (WHERE appliance = 'mains') AS coverage
        FROM daily_energy_by_house GROUP BY house_id, day
    )
    SELECT house_id, day, mains_kwh, circuits_kwh, mains_kwh - circuits_kwh AS untracked_kwh, coverage FROM sums
    """)
    run("""
    CREATE OR REPLACE TEMP TABLE daily_energy_by_appliance AS
    SELECT d.appliance, d.day, d.house_id, sum(d.energy_kwh) AS energy_kwh,
           CASE WHEN any_value(t.mains_kwh) > 0 THEN sum(d.energy_kwh) / any_value(t.mains_kwh) END AS share_of_mains
    FROM daily_energy_by_house d LEFT JOIN daily_house_totals t USING (house_id, day)
    WHERE d.appliance <> 'mains'
    GROUP BY d.appliance, d.day, d.house_id
    """)
    run("""
    CREATE OR REPLACE TEMP TABLE daily_energy_by_zip AS
    SELECT t.day, h.zip, sum(t.mains_kwh) AS energy_kwh, CAST(count(*) AS INTEGER) AS houses
    FROM daily_house_totals t JOIN ref_houses h USING (house_id)
    WHERE t.mains_kwh IS NOT NULL
    GROUP BY t.day, h.zip
    """)
    run("""
    CREATE OR REPLACE TEMP TABLE thresholds AS
    WITH in_window AS (
        SELECT r.house_id, r.meter, r.ts_s, r.power_w
        FROM ref_readings r
        WHERE floor(ref_local(r.tz, r.ts_s) / 86400) BETWEEN $first_n AND $last_n
    ),
    levels AS (
        SELECT house_id, meter, $ratio * quantile_cont(power_w, 0.5) AS standby_w, max(power_w) AS max_w
        FROM in_window GROUP BY house_id, meter
    ),
    offs AS (
        SELECT house_id, meter,
               CASE WHEN $ratio > 0 AND standby_w > $off AND max_w > standby_w THEN standby_w ELSE $off END AS off_w
        FROM levels
    ),
    overall AS (
        SELECT w.house_id, w.meter, quantile_cont(w.power_w, $q) AS threshold_w, count(*) AS samples
        FROM in_window w JOIN offs o USING (house_id, meter) WHERE w.power_w > o.off_w
        GROUP BY w.house_id, w.meter
    ),
    merged AS (
        SELECT house_id, meter, ts_s, avg(power_w) AS power_w FROM in_window GROUP BY house_id, meter, ts_s
    ),
    runs AS (
        SELECT house_id, meter, ts_s, min(power_w) OVER run AS held_w, count(*) OVER run AS run_readings
        FROM merged
        WINDOW run AS (PARTITION BY house_id, meter ORDER BY ts_s ROWS BETWEEN {preceding} PRECEDING AND CURRENT ROW)
    ),
    best_by_day AS (
        SELECT r.house_id, r.meter, floor(ref_local(k.tz, r.ts_s) / 86400) AS day_n, max(r.held_w) AS held_w
        FROM runs r JOIN ref_meters k USING (house_id, meter)
        WHERE r.run_readings = $run
        GROUP BY r.house_id, r.meter, day_n
    ),
    ranked AS (
        SELECT house_id, meter, held_w, row_number() OVER (PARTITION BY house_id, meter ORDER BY held_w DESC) AS rank
        FROM best_by_day
    ),
    peaks AS (
        SELECT r.house_id, r.meter,
               max(r.held_w) FILTER (WHERE r.rank = $days AND r.held_w > o.off_w) AS peak_w,
               max(r.held_w) FILTER (WHERE r.rank = 1 AND r.held_w > o.off_w) AS top_w
        FROM ranked r JOIN offs o USING (house_id, meter)
        GROUP BY r.house_id, r.meter
    ),
    marked AS (
        SELECT house_id, meter, ts_s, above, lag(above) OVER w AS previous_above,
               ts_s - lag(ts_s) OVER w AS since_previous_s, lead(ts_s) OVER w - ts_s AS until_next_s
        FROM (SELECT m.house_id, m.meter, m.ts_s, m.power_w > a.threshold_w * $run_multiplier AS above
              FROM merged m JOIN overall a USING (house_id, meter))
        WINDOW w AS (PARTITION BY house_id, meter ORDER BY ts_s)
    ),
    islands AS (
        SELECT *, sum(CASE WHEN above AND NOT (coalesce(previous_above, false) AND since_previous_s <= $gap)
                           THEN 1 ELSE 0 END)
                      OVER (PARTITION BY house_id, meter ORDER BY ts_s ROWS UNBOUNDED PRECEDING) AS island
        FROM marked
    ),
    timed AS (
        SELECT house_id, meter, max(ts_s) - min(ts_s) AS duration_s, max(ts_s) AS last_ts_s, count(*) AS readings,
               arg_min(since_previous_s, ts_s) AS before_s, arg_max(until_next_s, ts_s) AS after_s
        FROM islands WHERE above GROUP BY house_id, meter, island
    ),
    run_lengths AS (
        SELECT t.house_id, t.meter,
               CASE WHEN count(DISTINCT floor(ref_local(k.tz, t.last_ts_s) / 86400)) >= $days
                    THEN min(t.duration_s) END AS min_run_s
        FROM timed t JOIN ref_meters k USING (house_id, meter)
        WHERE t.readings >= $run AND t.before_s <= $gap AND t.after_s <= $gap
        GROUP BY t.house_id, t.meter
    ),
    own AS (
        SELECT o.house_id, o.meter, k.appliance, coalesce(a.threshold_w, $off) AS threshold_w,
               coalesce(a.samples, 0) AS samples, p.peak_w, p.top_w, l.min_run_s
        FROM offs o JOIN ref_meters k USING (house_id, meter)
        LEFT JOIN overall a USING (house_id, meter) LEFT JOIN peaks p USING (house_id, meter)
        LEFT JOIN run_lengths l USING (house_id, meter)
    ),
    fleet AS (
        SELECT appliance, quantile_cont(threshold_w, 0.5) AS fleet_threshold_w,
               quantile_cont(peak_w, 0.5) AS fleet_peak_w, count(*) AS fleet_meters
        FROM own WHERE samples > 0 AND appliance IS NOT NULL
        GROUP BY appliance HAVING count(*) >= $min_meters
    ),
    judged AS (
        SELECT w.*, f.fleet_threshold_w, f.fleet_peak_w, f.fleet_meters,
               CASE WHEN w.top_w IS NOT NULL AND f.fleet_peak_w IS NOT NULL
                    THEN least(w.top_w, f.fleet_peak_w) END AS one_off_w
        FROM own w LEFT JOIN fleet f USING (appliance)
    )
    SELECT house_id, meter, appliance, $q AS quantile,
           CASE WHEN samples = 0 AND fleet_meters IS NOT NULL THEN fleet_threshold_w ELSE threshold_w END
               AS threshold_w,
           samples,
           CASE WHEN samples = 0 AND fleet_meters IS NOT NULL THEN fleet_peak_w
                WHEN one_off_w IS NULL THEN peak_w
                WHEN peak_w IS NULL THEN one_off_w
                ELSE greatest(peak_w, one_off_w) END AS normal_peak_w,
           CAST(CASE WHEN fleet_meters IS NOT NULL AND (samples = 0 OR one_off_w > coalesce(peak_w, -1e308))
                     THEN fleet_meters ELSE 0 END AS INTEGER) AS fleet_meters,
           min_run_s, $days AS peak_days, $window AS window_days, CAST(now() AS TIMESTAMP) AS computed_at
    FROM judged
    """.format(preceding=int(peak_readings) - 1), {
        "first_n": (window_first - EPOCH).days, "last_n": (last_day - EPOCH).days, "ratio": standby_ratio,
        "off": off_level_w, "q": quantile, "window": window_days, "days": peak_days, "run": peak_readings,
        "min_meters": fleet_min_meters, "run_multiplier": run_multiplier, "gap": run_gap_s})
    return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in OUTPUTS}


def _literal(text: str) -> str:
    """A string for a SQL literal (file paths and zone names cannot be parameters of a view)."""
    return text.replace("'", "''")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--readings", required=True, help="Parquet readings partitioned by date=YYYY-MM-DD")
    parser.add_argument("--houses", required=True, help="houses file (Parquet or JSON) with house_id, zip, tz")
    parser.add_argument("--from", dest="first_day", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--to", dest="last_day", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--window-days", type=int, default=30, help="threshold window in days (default 30)")
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    parser.add_argument("--memory-limit", help="DuckDB memory limit, e.g. 8GB (default: 80 %% of RAM)")
    parser.add_argument("--temp-dir", help="where DuckDB spills past its memory limit (default: $TMPDIR/smw-duckdb)")
    parser.add_argument("--show", type=int, default=0, metavar="N", help="print the first N rows of each output")
    args = parser.parse_args(argv)
    for option, path in (("--houses", args.houses), ("--readings", args.readings)):
        if not Path(path).exists():
            parser.error(f"{option} {path}: no such file or folder")
    if args.last_day < args.first_day:
        parser.error("--to is before --from")
    connection = connect(args.threads, args.memory_limit, args.temp_dir)
    t0 = time.perf_counter()
    counts = nightly(connection, args.readings, args.houses, args.first_day, args.last_day,
                     window_days=args.window_days)
    for table, rows in counts.items():
        print(f"{table}: {rows:,} rows")
        if args.show:
            for row in connection.execute(f"SELECT * FROM {table} LIMIT {int(args.show)}").fetchall():
                print("   ", *row, sep="\t")
    print(f"computed in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The nightly job's six outputs side by side with the DuckDB reference (tools/reference.py).

Shared by tests/tools/test_reference_agreement.py (the outputs as Spark DataFrames) and the
cluster's fault tests (the outputs read back from Cassandra): each output becomes
{key columns: [value columns]} (`spark_rows`, `cassandra_rows`, `duckdb_rows`), and
`assert_outputs_agree` compares them table by table, row for row.
"""
from __future__ import annotations

import datetime as dt

import pytest

from tools import reference

# Each output: its key columns and its value columns, as in infra/cql/001_serving.cql.
OUTPUT_COLUMNS = {
    "hourly_energy": (["house_id", "day", "hour_start_s", "meter"], ["energy_kwh", "mean_w", "min_w", "max_w", "samples"]),
    "daily_energy_by_house": (["house_id", "day", "meter"], ["label", "appliance", "energy_kwh", "coverage", "samples"]),
    "daily_house_totals": (["house_id", "day"], ["mains_kwh", "circuits_kwh", "untracked_kwh", "coverage"]),
    "daily_energy_by_appliance": (["appliance", "day", "house_id"], ["energy_kwh", "share_of_mains"]),
    "daily_energy_by_zip": (["day", "zip"], ["energy_kwh", "houses"]),
    "thresholds": (["house_id", "meter"], ["appliance", "quantile", "threshold_w", "samples", "normal_peak_w",
                                           "fleet_meters", "min_run_s", "peak_days", "window_days"]),
}


def spark_rows(frame, table):
    from pyspark.sql import functions as F

    if table == "hourly_energy":  # compared as epoch seconds: no client time zone in between
        frame = frame.withColumn("hour_start_s", F.unix_seconds("hour_start"))
    keys, values = OUTPUT_COLUMNS[table]
    return {tuple(r[k] for k in keys): [r[v] for v in values] for r in frame.select(*keys, *values).collect()}


def duckdb_rows(connection, table):
    keys, values = OUTPUT_COLUMNS[table]
    columns = [("epoch(hour_start) AS hour_start_s" if k == "hour_start_s" else k) for k in keys] + values
    rows = connection.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
    return {tuple(r[:len(keys)]): list(r[len(keys):]) for r in rows}


def _plain(value):
    """A driver value as DuckDB gives it: `cassandra.util.Date` as a date."""
    from cassandra.util import Date

    return value.date() if isinstance(value, Date) else value


def cassandra_rows(session, table):
    """The rows of one output in the session's keyspace, at the session's consistency level."""
    keys, values = OUTPUT_COLUMNS[table]
    columns = [("hour_start" if k == "hour_start_s" else k) for k in keys] + values
    found = {}
    for row in session.execute(f"SELECT {', '.join(columns)} FROM {table}", timeout=60):
        row = [_plain(v) for v in row]
        if table == "hourly_energy":  # a naive UTC timestamp from the driver, compared as epoch seconds
            at = keys.index("hour_start_s")
            row[at] = row[at].replace(tzinfo=dt.timezone.utc).timestamp()
        found[tuple(row[:len(keys)])] = list(row[len(keys):])
    return found


def same_value(spark_value, duck_value):
    if isinstance(duck_value, float) and spark_value is not None:
        # Differences of two sums (untracked energy) are checked against the size of the sums.
        return spark_value == pytest.approx(duck_value, rel=1e-9, abs=1e-9)
    if isinstance(duck_value, dict):
        return (spark_value is not None and set(spark_value) == set(duck_value)
                and all(same_value(spark_value[h], w) for h, w in duck_value.items()))
    return spark_value == duck_value


def assert_outputs_agree(connection, counts: dict[str, int], rows_of) -> dict[str, int]:
    """Every output of `reference.nightly` (already run on `connection`, `counts` its row counts)
    against `rows_of(table)`: the same keys, energy to 1e-9, quantiles and counts exact. Returns
    the rows compared per table."""
    compared = {}
    for table in reference.OUTPUTS:
        expected, got = duckdb_rows(connection, table), rows_of(table)
        assert len(expected) == counts[table] and expected, table
        missing, extra = set(expected) - set(got), set(got) - set(expected)
        assert not missing and not extra, (table, f"{len(missing)} rows missing, e.g. {sorted(missing, key=repr)[:3]}",
                                           f"{len(extra)} rows not in the reference, e.g. {sorted(extra, key=repr)[:3]}")
        for key, values in expected.items():
            mismatched = [(c, g, e) for c, g, e in zip(OUTPUT_COLUMNS[table][1], got[key], values)
                          if not same_value(g, e)]
            assert not mismatched, (table, key, mismatched)
        compared[table] = len(expected)
    return compared

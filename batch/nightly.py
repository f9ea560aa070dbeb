"""Nightly batch: daily kWh per meter, appliance, house and zip, hourly rollups and thresholds into Cassandra.

    spark-submit batch/nightly.py --date 2024-04-02
    spark-submit batch/nightly.py --from 2024-04-01 --to 2024-04-30      # backfill
    python -m batch.nightly --help

Reads the raw zone (the landing job's output, or a generated Parquet dataset with
`--readings`), the houses (time zone, zip) from Cassandra or `--houses`, and writes
the serving tables of infra/cql/001_serving.cql by upsert, so re-running a date
changes nothing. Days are local days of each house. See docs/batch.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from smw import config, energy, jobs, schema, zones

log = logging.getLogger("batch.nightly")

# The columns of the per-meter pass's hour rows (see stats_schema).
HOUR_COLUMNS = ["house_id", "meter", "day", "hour_start_s", "energy_j", "covered_s", "samples", "min_w", "max_w"]


@dataclass(frozen=True)
class Params:
    """The knobs of the nightly maths; these defaults are the documented ones (and the CLI's)."""

    mains_cap_s: float = config.option(30.0, "max sample period of mains, seconds")
    circuit_cap_s: float = config.option(50.0, "max sample period of circuits, seconds")
    quantile: float = config.option(
        0.9, "threshold quantile of a meter's readings above its off level: its usual power in use")
    off_level_w: float = config.option(10.0, "readings at or below this power are 'off' and excluded from thresholds")
    standby_ratio: float = config.option(
        2.0, "the off level rises to this x a meter's median power when readings exceed that, so a standby draw "
             "above --off-level-w is excluded too; 0 disables")
    window_days: int = config.option(30, "threshold window in days")
    peak_days: int = config.option(
        2, "a meter's normal peak is the highest level it reaches on at least this many local days of the window")
    peak_readings: int = config.option(
        3, "consecutive readings a level must be held for to count as reached (the alert rules' --min-readings)")
    run_multiplier: float = config.option(
        2.0, "a meter's min_run_s times its runs above threshold_w x this (keep it the alert job's --multiplier)")
    run_gap_s: float = config.option(
        60.0, "readings further apart than this break a run, which is then not timed (the alert job's --run-gap-s)")
    fleet_min_meters: int = config.option(
        2, "meters of one appliance, on in their window, the fleet needs before its medians stand in for a meter")
    default_tz: str = config.option("America/New_York", "time zone of houses without metadata")

    def __post_init__(self):
        for name, cap in (("mains", self.mains_cap_s), ("circuit", self.circuit_cap_s)):
            if not 0 < cap <= energy.MAX_CAP_S:
                raise ValueError(f"{name} maximum sample period must be in (0, 3600] s, got {cap}")
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        if self.run_multiplier <= 0 or self.run_gap_s <= 0:
            raise ValueError(f"run multiplier and run gap must be > 0, got {self.run_multiplier}, {self.run_gap_s}")
        if self.standby_ratio < 0:
            raise ValueError(f"standby ratio must be >= 0, got {self.standby_ratio}")
        for name in ("window_days", "peak_days", "peak_readings", "fleet_min_meters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        ZoneInfo(self.default_tz)  # fails early on a typo


# The Params a nightly run takes from its command line (--zone sets default_tz).
CLI_PARAMS = ("mains_cap_s", "circuit_cap_s", "quantile", "off_level_w", "standby_ratio", "window_days", "peak_days",
              "peak_readings", "run_multiplier", "run_gap_s", "fleet_min_meters")


# -- transforms ----------------------------------------------------------------------


def stats_schema():
    """The Spark schema of the per-meter pass's output: hour rows (day set) and one row per
    meter (day null) with its threshold, peak levels (`energy.MeterLevels`), label and appliance."""
    from pyspark.sql.types import DateType, DoubleType, IntegerType, LongType, StringType, StructField, StructType

    text, double, count = StringType(), DoubleType(), LongType()
    return StructType([StructField(name, kind) for name, kind in (
        ("house_id", text), ("meter", IntegerType()), ("day", DateType()), ("hour_start_s", double),
        ("energy_j", double), ("covered_s", double), ("samples", count), ("min_w", double), ("max_w", double),
        ("threshold_w", double), ("threshold_samples", count), ("peak_w", double), ("top_w", double),
        ("min_run_s", double),
        ("label", text), ("appliance", text),
    )])


def stats_arrow_schema():
    """The same schema in Arrow, for the batches the Python workers return."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(stats_schema())


def meter_rows(house_id: str, meter: int, label: str | None, appliance: str | None, ts_s: np.ndarray,
               power_w: np.ndarray, is_mains: bool, house_tz: dict[str, str], params: Params,
               energy_days: tuple[dt.date, dt.date], threshold_days: tuple[dt.date, dt.date]) -> pd.DataFrame:
    """One meter's rows of the per-meter pass: its hours within `energy_days`, then its threshold
    row (`energy.meter_levels` over `threshold_days`), which also carries the meter's label and appliance."""
    tz = house_tz.get(house_id, params.default_tz)
    cap_s = params.mains_cap_s if is_mains else params.circuit_cap_s
    hours = energy.hourly_pieces(ts_s, power_w, cap_s, tz)
    hours = hours[(hours["day"] >= energy_days[0]) & (hours["day"] <= energy_days[1])]
    hours.insert(0, "meter", meter)
    hours.insert(0, "house_id", house_id)
    epoch = dt.date(1970, 1, 1)
    local_day = np.floor(energy.local_seconds(ts_s, tz) / 86400.0)
    in_window = (local_day >= (threshold_days[0] - epoch).days) & (local_day <= (threshold_days[1] - epoch).days)
    levels = energy.meter_levels(ts_s[in_window], power_w[in_window], tz, params.quantile, params.off_level_w,
                                 params.standby_ratio, params.peak_readings, params.peak_days,
                                 run_multiplier=params.run_multiplier, run_gap_s=params.run_gap_s)
    threshold_row = pd.DataFrame({"house_id": [house_id], "meter": [meter], "day": [None],
                                  "threshold_w": [levels.threshold_w], "threshold_samples": [levels.samples],
                                  "peak_w": [levels.peak_w], "top_w": [levels.top_w],
                                  "min_run_s": [levels.min_run_s], "label": [label],
                                  "appliance": [appliance]})
    hour_rows = hours[HOUR_COLUMNS].assign(threshold_w=np.nan, threshold_samples=0, peak_w=np.nan, top_w=np.nan,
                                           min_run_s=np.nan, label=None, appliance=None)
    return pd.concat([hour_rows, threshold_row], ignore_index=True)


def _ranks(column) -> tuple[np.ndarray, list[str]]:
    """A string column as ranks into its sorted distinct values (-1 for null), and those values."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column).combine_chunks()
    codes_values = encoded.dictionary.to_pylist()
    values = sorted(codes_values)
    position = {value: rank for rank, value in enumerate(values)}
    # A null's code -1 picks the trailing -1.
    rank_of_code = np.array([position[v] for v in codes_values] + [-1], dtype=np.int64)
    return rank_of_code[encoded.indices.fill_null(-1).to_numpy()], values


def partition_stats(batches, house_tz: dict[str, str], params: Params, energy_days: tuple[dt.date, dt.date],
                    threshold_days: tuple[dt.date, dt.date]):
    """Arrow batches of readings (house_id, meter, label, appliance, ts_s, power_w) holding whole
    meters -> one Arrow batch of their `meter_rows`. Runs in the Python workers.

    A meter's label and appliance are the greatest of its readings' (should it have been
    relabelled); it is mains when any of its readings says so.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    batches = list(batches)
    if not batches:
        return
    table = pa.Table.from_batches(batches)
    houses = pc.dictionary_encode(table.column("house_id")).combine_chunks()
    house_code = houses.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    meter = table.column("meter").to_numpy().astype(np.int64)
    key = (house_code << 32) | (meter & 0xFFFFFFFF)
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    ts_s = table.column("ts_s").to_numpy()[order]
    power_w = table.column("power_w").to_numpy()[order]
    label_rank, labels = _ranks(table.column("label"))
    appliance_rank, appliances = _ranks(table.column("appliance"))
    appliance_rank = appliance_rank[order]
    best_label = np.maximum.reduceat(label_rank[order], starts)
    best_appliance = np.maximum.reduceat(appliance_rank, starts)
    mains = appliances.index("mains") if "mains" in appliances else -2
    is_mains = np.logical_or.reduceat(appliance_rank == mains, starts)
    names = houses.dictionary.to_pylist()
    frames = [meter_rows(names[house_code[order[a]]], int(meter[order[a]]), labels[lab] if lab >= 0 else None,
                         appliances[app] if app >= 0 else None, ts_s[a:b], power_w[a:b], bool(main), house_tz,
                         params, energy_days, threshold_days)
              for a, b, lab, app, main in zip(starts, ends, best_label, best_appliance, is_mains)]
    schema = stats_arrow_schema()
    yield pa.RecordBatch.from_pandas(pd.concat(frames, ignore_index=True)[schema.names], schema=schema,
                                     preserve_index=False)


# Parquet bytes of readings per Python task of the per-meter pass: about 4.5M readings,
# a few hundred MB once in Arrow and numpy, so that two tasks fit beside the JVM.
PARQUET_BYTES_PER_TASK = 24 << 20


def pass_partitions(readings, minimum: int) -> int:
    """Partitions for the per-meter pass: the readings' Parquet size (as Spark's optimizer
    estimates it after partition pruning) over PARQUET_BYTES_PER_TASK, at least `minimum`.
    A partition reaches Python whole, so its size bounds a worker's memory."""
    try:
        size = int(str(readings._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()))
    except Exception:  # an estimate only: fall back to the minimum
        log.warning("no size estimate for the readings; the per-meter pass uses %d partitions", minimum)
        return minimum
    return max(minimum, -(-size // PARQUET_BYTES_PER_TASK))


def meter_stats(readings, house_tz: dict[str, str], params: Params,
                energy_days: tuple[dt.date, dt.date], threshold_days: tuple[dt.date, dt.date],
                partitions: int | None = None):
    """One pass per (house, meter): hour rows for `energy_days`, one threshold row over `threshold_days`.

    Both results need a meter's readings in time order, so one shuffle serves both;
    the threshold row has a null `day` and carries the meter's label and appliance. A
    meter is mains (and gets the mains cap) when its readings say so, so this pass needs
    nothing computed before it, and it is the only pass over the readings.

    The readings are hash-partitioned by (house, meter) into `partitions` (default:
    spark.sql.shuffle.partitions) and each partition reaches Python whole, as Arrow
    batches (`partition_stats`): numpy splits it into meters and orders each by time. A
    groupBy would have Spark sort every reading by its string key first, and hand each
    meter over as its own pandas frame.
    """
    from functools import partial

    columns = readings.select(*schema.NAMES)
    columns = (columns.repartition(partitions, "house_id", "meter") if partitions
               else columns.repartition("house_id", "meter"))
    return columns.mapInArrow(partial(partition_stats, house_tz=house_tz, params=params, energy_days=energy_days,
                                      threshold_days=threshold_days), stats_schema())


def hourly_rollup(hourly, meter_info_df):
    """Rows of the hourly_energy table: kWh, time-weighted mean, min, max W, samples."""
    from pyspark.sql import functions as F

    return hourly.join(meter_info_df, ["house_id", "meter"]).select(
        "house_id", "day", F.timestamp_seconds("hour_start_s").alias("hour_start"), "meter",
        (F.col("energy_j") / energy.J_PER_KWH).alias("energy_kwh"),
        # Energy over covered time: the mean that agrees with the kWh figure.
        F.when(F.col("covered_s") > 0, F.col("energy_j") / F.col("covered_s")).alias("mean_w"),
        "min_w", "max_w", F.col("samples").cast("int").alias("samples"),
    )


def daily_energy(hourly, meter_info_df, houses_df, default_tz: str):
    """Rows of daily_energy_by_house: kWh, coverage (share of the local day with data), samples.

    A house without a time zone in `houses_df` (or not in it) is in `default_tz`.
    """
    from pyspark.sql import functions as F

    tz = F.coalesce(F.col("tz"), F.lit(default_tz))
    day_length_s = (
        F.unix_seconds(F.to_utc_timestamp(F.date_add("day", 1).cast("timestamp"), tz))
        - F.unix_seconds(F.to_utc_timestamp(F.col("day").cast("timestamp"), tz))
    )
    daily = hourly.groupBy("house_id", "meter", "day").agg(
        F.sum("energy_j").alias("energy_j"), F.sum("covered_s").alias("covered_s"), F.sum("samples").alias("samples")
    )
    return (
        daily.join(meter_info_df, ["house_id", "meter"]).join(houses_df.select("house_id", "tz"), "house_id", "left")
        .select("house_id", "day", "meter", "label", "appliance",
                (F.col("energy_j") / energy.J_PER_KWH).alias("energy_kwh"),
                (F.col("covered_s") / day_length_s).alias("coverage"), "samples")
    )


def house_totals(daily):
    """Rows of daily_house_totals: mains (sum of mains legs), circuits, untracked = mains − circuits.

    A house-day without mains readings keeps its circuits total; mains, untracked
    and coverage (taken from the mains legs) are then null.
    """
    from pyspark.sql import functions as F

    is_mains = F.col("appliance") == "mains"
    totals = daily.groupBy("house_id", "day").agg(
        F.sum(F.when(is_mains, F.col("energy_kwh"))).alias("mains_kwh"),
        F.sum(F.when(~is_mains, F.col("energy_kwh"))).alias("circuits_kwh"),
        F.min(F.when(is_mains, F.col("coverage"))).alias("coverage"),
    )
    return totals.select(
        "house_id", "day", "mains_kwh", F.coalesce("circuits_kwh", F.lit(0.0)).alias("circuits_kwh"),
        (F.col("mains_kwh") - F.coalesce("circuits_kwh", F.lit(0.0))).alias("untracked_kwh"), "coverage",
    )


def house_day_docs(daily, totals):
    """Rows of daily_house_docs: a house-day as the house daily-kWh API serves it, one JSON
    document holding the day's totals and its kWh per appliance (channels of one appliance
    summed, rounded to 6 decimals, by name), so a dashboard range is one row per day.

    A meter's name is its appliance, else its label, else "meter N"; mains legs are not
    appliances. Every day of `totals` has a document (appliances {} when only mains).
    """
    from pyspark.sql import functions as F

    def given(column: str):
        return F.when(F.col(column) != "", F.col(column))

    name = F.coalesce(given("appliance"), given("label"), F.concat(F.lit("meter "), F.col("meter").cast("string")))
    per_name = (
        daily.where(F.col("energy_kwh").isNotNull()).withColumn("name", name).where(F.col("name") != "mains")
        .groupBy("house_id", "day", "name").agg(F.round(F.sum("energy_kwh"), 6).alias("kwh"))
    )
    per_day = per_name.groupBy("house_id", "day").agg(
        F.map_from_entries(F.array_sort(F.collect_list(F.struct("name", "kwh")))).alias("appliances"))
    no_appliances = F.create_map().cast("map<string,double>")
    doc = F.struct(
        F.date_format("day", "yyyy-MM-dd").alias("day"), "mains_kwh", "circuits_kwh", "untracked_kwh", "coverage",
        F.coalesce("appliances", no_appliances).alias("appliances"))
    return totals.join(per_day, ["house_id", "day"], "left").select(
        "house_id", "day", F.to_json(doc, {"ignoreNullFields": "false"}).alias("doc"))


def appliance_energy(daily, totals):
    """Rows of daily_energy_by_appliance: an appliance's kWh (its channels summed) and share of mains."""
    from pyspark.sql import functions as F

    per_appliance = (
        daily.where(F.col("appliance") != "mains")
        .groupBy("appliance", "day", "house_id").agg(F.sum("energy_kwh").alias("energy_kwh"))
    )
    return per_appliance.join(totals.select("house_id", "day", "mains_kwh"), ["house_id", "day"], "left").select(
        "appliance", "day", "house_id", "energy_kwh",
        F.when(F.col("mains_kwh") > 0, F.col("energy_kwh") / F.col("mains_kwh")).alias("share_of_mains"),
    )


def zip_energy(totals, houses_df):
    """Rows of daily_energy_by_zip: mains kWh summed per zip code and the houses reporting."""
    from pyspark.sql import functions as F

    reporting = totals.where(F.col("mains_kwh").isNotNull()).join(houses_df.select("house_id", "zip"), "house_id")
    return reporting.groupBy("day", "zip").agg(
        F.sum("mains_kwh").alias("energy_kwh"), F.count("house_id").cast("int").alias("houses")
    )


# The meters of one appliance, as `judge_appliance` gets and returns them.
FLEET_INPUT = ["house_id", "meter", "appliance", "threshold_w", "threshold_samples", "peak_w", "top_w", "min_run_s"]
FLEET_OUTPUT_DDL = ("house_id string, meter int, appliance string, threshold_w double, samples bigint, "
                    "normal_peak_w double, fleet_meters int, min_run_s double")


def judge_appliance(meters: pd.DataFrame, min_meters: int) -> pd.DataFrame:
    """All meters of one appliance across the fleet -> the levels the alert rules judge each by
    (`energy.fleet_prior`, `energy.judged_levels`). Meters without an appliance get no fleet prior."""
    appliance = meters["appliance"].iloc[0]
    samples = meters["threshold_samples"].to_numpy()
    peak_w, top_w = meters["peak_w"].to_numpy(dtype=np.float64), meters["top_w"].to_numpy(dtype=np.float64)
    prior = (energy.fleet_prior(meters["threshold_w"].to_numpy(), samples, peak_w, min_meters)
             if isinstance(appliance, str) else None)
    threshold_w, normal_peak_w, fleet_meters = energy.judged_levels(meters["threshold_w"].to_numpy(), samples,
                                                                    peak_w, top_w, prior)
    return pd.DataFrame({"house_id": meters["house_id"], "meter": meters["meter"], "appliance": meters["appliance"],
                         "threshold_w": threshold_w, "samples": samples, "normal_peak_w": normal_peak_w,
                         "fleet_meters": fleet_meters.astype(np.int32), "min_run_s": meters["min_run_s"]})


def thresholds(stats, params: Params, computed_at: dt.datetime):
    """Rows of the thresholds table from the threshold rows of `meter_stats`.

    What a meter's own window does not show is taken from the meters of the same appliance
    across the fleet, so the meters are grouped by appliance (`judge_appliance`): a meter
    never on gets the fleet's medians, a level seen on one day only counts up to the fleet's
    normal peak.
    """
    from functools import partial

    from pyspark.sql import functions as F

    # Meters without readings in the window have a NaN (or, through Arrow, null) threshold: no row.
    rows = stats.where(F.col("day").isNull() & F.col("threshold_w").isNotNull() & ~F.isnan("threshold_w"))
    judged = rows.select(*FLEET_INPUT).groupBy("appliance").applyInPandas(
        partial(judge_appliance, min_meters=params.fleet_min_meters), FLEET_OUTPUT_DDL)
    return judged.select(
        "house_id", "meter", "appliance", F.lit(params.quantile).alias("quantile"), "threshold_w", "samples",
        "normal_peak_w", "fleet_meters", "min_run_s", F.lit(params.peak_days).alias("peak_days"),
        F.lit(params.window_days).alias("window_days"), F.lit(computed_at).cast("timestamp").alias("computed_at"),
    )


# -- I/O -------------------------------------------------------------------------------


def utc_dates(first_day: dt.date, last_day: dt.date) -> list[str]:
    """UTC partitions that hold the local days first_day..last_day of any zone (±14 h) and their successors."""
    days = (last_day - first_day).days + 3
    return [(first_day + dt.timedelta(days=offset - 1)).isoformat() for offset in range(days)]


def read_readings(spark, settings: config.Settings, readings_path: str | None, first_day: dt.date,
                  last_day: dt.date):
    """Readings of the UTC date partitions covering the local days first_day..last_day."""
    from pyspark.sql import functions as F

    from pyspark.errors import AnalysisException

    wanted = [F.lit(d).cast("date") for d in utc_dates(first_day, last_day)]
    try:
        frame = spark.read.parquet(readings_path) if readings_path else zones.read_raw(spark, settings)
    except AnalysisException as exc:
        if "Unable to infer schema" not in str(exc):
            raise
        where = readings_path or zones.landing_zone(settings)
        raise SystemExit(f"error: no readings in {where} at all; land some first (make land, or make land-once "
                         "for what Kafka holds now)") from None
    return frame.where(F.col("date").cast("date").isin(*wanted)).select(*schema.NAMES)


HOUSES_SCHEMA = "house_id string, zip string, tz string"


def read_houses(settings: config.Settings, houses_path: str | None) -> pd.DataFrame:
    """house_id, zip, tz of every known house (Cassandra `houses`, or a Parquet/JSON-lines file).

    A small dimension (a row per house), read on the driver: a Spark job here would cost
    more in start-up than the read itself.
    """
    from batch import houses

    records = houses.read_records(Path(houses_path)) if houses_path else houses.registered(settings)
    columns = ["house_id", "zip", "tz"]
    return pd.DataFrame([[None if r.get(c) is None else str(r[c]) for c in columns] for r in records],
                        columns=columns, dtype=object)


def write_table(frame, settings: config.Settings, table: str) -> None:
    """Upsert a DataFrame into a Cassandra table through the Spark Cassandra Connector."""
    (frame.write.format("org.apache.spark.sql.cassandra")
        .options(keyspace=settings.cassandra_keyspace, table=table)
        .mode("append").save())


def check_cassandra(settings: config.Settings) -> None:
    """Fail fast, with a clear message, when Cassandra or the schema is not there."""
    from smw import cql

    try:
        handle, session = cql.connect(settings)
    except cql.Unavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    handle.shutdown()


# -- entry point --------------------------------------------------------------------------


def run(spark, settings: config.Settings, params: Params, first_day: dt.date, last_day: dt.date,
        readings_path: str | None = None, houses_path: str | None = None, write: bool | None = True,
        allow_empty: bool = False) -> dict:
    """Compute every output for the local days first_day..last_day; returns the DataFrames by table.

    write=True upserts them into Cassandra; None computes and counts them without
    writing (for timing); False leaves them lazy. Days without a single reading are an
    error (`SystemExit` with one line saying so), unless `allow_empty`: a scheduled run
    over a raw zone the landing job has not filled must not pass for a quiet day.
    """
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    houses = read_houses(settings, houses_path)
    houses_df = F.broadcast(spark.createDataFrame(houses, HOUSES_SCHEMA))
    house_tz = {h: tz for h, tz in zip(houses["house_id"], houses["tz"]) if tz}
    known = set(houses["house_id"])

    window_first = last_day - dt.timedelta(days=params.window_days - 1)
    readings = read_readings(spark, settings, readings_path, min(first_day, window_first), last_day)
    partitions = pass_partitions(readings, int(spark.conf.get("spark.sql.shuffle.partitions")))
    stats = meter_stats(readings, house_tz, params, (first_day, last_day), (window_first, last_day),
                        partitions).cache()
    per_meter = stats.where(F.col("day").isNull())
    meter_info_df = F.broadcast(per_meter.select("house_id", "meter", "label", "appliance"))
    # One job: the per-meter pass (the only pass over the readings) fills the cache, and the
    # meters it found come back to the driver.
    found = per_meter.select("house_id", "meter").toPandas()
    log.info("per-meter pass: %d houses, %d meters in %.1f s (%d partitions)", found["house_id"].nunique(),
             len(found), time.perf_counter() - t0, partitions)
    if not allow_empty and stats.where(F.col("day").isNotNull()).isEmpty():
        source = readings_path or f"the raw zone of {zones.landing_zone(settings)}"
        days = str(first_day) if first_day == last_day else f"{first_day}..{last_day}"
        raise SystemExit(f"error: no readings for {days} in {source}; is the landing job running (make land)? "
                         "Pass --allow-empty if an empty day is expected")
    unknown = sorted(set(found["house_id"]) - known)
    if unknown:
        log.warning("%d house(s) with readings but no metadata (time zone %s, no zip): %s",
                    len(unknown), params.default_tz, ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else ""))

    hourly = stats.where(F.col("day").isNotNull()).select(*HOUR_COLUMNS)
    daily = daily_energy(hourly, meter_info_df, houses_df, params.default_tz).cache()
    totals = house_totals(daily).cache()
    outputs = {
        "hourly_energy": hourly_rollup(hourly, meter_info_df),
        "daily_energy_by_house": daily,
        "daily_house_totals": totals,
        "daily_house_docs": house_day_docs(daily, totals),
        "daily_energy_by_appliance": appliance_energy(daily, totals),
        "daily_energy_by_zip": zip_energy(totals, houses_df),
    }
    computed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    outputs["thresholds"] = thresholds(stats, params, computed_at)
    if write is False:
        return outputs

    def emit(table: str) -> None:
        t_table = time.perf_counter()
        if write:
            write_table(outputs[table], settings, table)
            log.info("%s written in %.1f s", table, time.perf_counter() - t_table)
        else:
            log.info("%s: %d rows computed in %.1f s (not written)", table, outputs[table].count(),
                     time.perf_counter() - t_table)

    # The outputs are small jobs over cached rows, bound by Cassandra's write latency and by
    # job start-up, not by the cores: run side by side, the hourly rollup's write hides the rest.
    with ThreadPoolExecutor(max_workers=len(outputs), thread_name_prefix="write") as pool:
        for done in [pool.submit(emit, table) for table in outputs]:
            done.result()
    log.info("nightly %s..%s done in %.1f s", first_day, last_day, time.perf_counter() - t0)
    return outputs


def yesterday(zone: str) -> dt.date:
    return dt.datetime.now(ZoneInfo(zone)).date() - dt.timedelta(days=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batch/nightly.py", description=__doc__.splitlines()[0])
    parser.add_argument("--date", type=dt.date.fromisoformat,
                        help="local day to compute (default: yesterday in --zone)")
    parser.add_argument("--from", dest="first_day", type=dt.date.fromisoformat, help="first day of a backfill")
    parser.add_argument("--to", dest="last_day", type=dt.date.fromisoformat, help="last day of a backfill")
    defaults = Params()
    parser.add_argument("--zone", default=defaults.default_tz,
                        help="zone whose 'yesterday' is the default date, and the time zone of houses "
                             f"without metadata (default {defaults.default_tz}, REDD's)")
    parser.add_argument("--readings", help="Parquet readings partitioned by date (default: the landing raw zone)")
    parser.add_argument("--houses", help="houses file (Parquet or JSON) instead of the Cassandra houses table")
    config.add_options(parser, Params, CLI_PARAMS)
    parser.add_argument("--allow-empty", action="store_true",
                        help="a day without readings is not an error (thresholds are still computed over the "
                             "window); by default it fails with exit status 1")
    jobs.add_verbose(parser)
    parser.add_argument("--no-write", action="store_true",
                        help="compute and count every output without writing Cassandra (timing, dry runs)")
    config.add_arguments(parser, "cassandra_hosts", "cassandra_keyspace", "data_dir", "spark_master")
    args = parser.parse_args(argv)
    jobs.configure_logging()
    jobs.apply_verbose(args, log)
    if (args.first_day is None) != (args.last_day is None):
        parser.error("--from and --to go together")
    if args.date and args.first_day:
        parser.error("give --date or --from/--to, not both")
    first_day = args.first_day or args.date or yesterday(args.zone)
    last_day = args.last_day or first_day
    if last_day < first_day:
        parser.error("--to is before --from")
    try:
        params = config.options_from_args(Params, args, default_tz=args.zone)
    except (ValueError, KeyError) as exc:
        parser.error(str(exc))
    for option, path in (("--houses", args.houses), ("--readings", args.readings)):
        if path and not Path(path).exists():
            parser.error(f"{option} {path}: no such file or folder")
    settings = config.from_args(args)
    if not (args.no_write and args.houses):
        check_cassandra(settings)

    with jobs.session("smw-nightly", settings) as spark:
        run(spark, settings, params, first_day, last_day, args.readings, args.houses,
            write=None if args.no_write else True, allow_empty=args.allow_empty)
    return 0


if __name__ == "__main__":
    sys.exit(main())

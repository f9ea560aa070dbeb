"""Where the jobs keep their data under `DATA_DIR`: the landing zones, quarantines, checkpoints.

    <DATA_DIR>/landing/zone=raw/date=YYYY-MM-DD/          readings (the raw zone)
    <DATA_DIR>/landing/zone=quarantine/date=YYYY-MM-DD/   records that broke the contract
    <DATA_DIR>/alerts/quarantine/date=YYYY-MM-DD/         the same, as the alert job met them
    <DATA_DIR>/checkpoints/<job>/                         each streaming query's checkpoint

Read the landing zones with `read_raw()` / `read_quarantine()` (Spark honours the file
sink's `_spark_metadata`), not by listing files: a crashed attempt can leave uncommitted
part files behind.
"""
from __future__ import annotations

from pathlib import Path

from smw import config, schema


def landing_zone(settings: config.Settings) -> Path:
    """The landing job's output: both zones, partitioned by zone and date."""
    return Path(settings.data_dir) / "landing"


def alerts_quarantine(settings: config.Settings) -> Path:
    """Records the alert job found broken (the landing job keeps its own copy)."""
    return Path(settings.data_dir) / "alerts" / "quarantine"


def checkpoint(settings: config.Settings, query: str) -> Path:
    """The checkpoint folder of one streaming query (`land`, `alerts`, `live-power`, ...)."""
    return Path(settings.data_dir) / "checkpoints" / query


def alerts_spool(settings: config.Settings) -> Path:
    # Beside the checkpoints: alerts spooled for RethinkDB belong to the same run of the alert job.
    return Path(settings.data_dir) / "checkpoints" / "alerts-rethinkdb-spool.jsonl"


def read_raw(spark, settings: config.Settings):
    """The committed readings of the raw zone (`schema.RAW_COLUMNS`)."""
    return _read_zone(spark, settings, "raw", schema.RAW_COLUMNS)


def read_quarantine(spark, settings: config.Settings):
    """The committed quarantined records of the landing job (`schema.QUARANTINE_COLUMNS`)."""
    return _read_zone(spark, settings, "quarantine", schema.QUARANTINE_COLUMNS)


def _read_zone(spark, settings: config.Settings, zone: str, columns: tuple[str, ...]):
    from pyspark.sql import functions as F

    landing = spark.read.parquet(str(landing_zone(settings)))
    return landing.where(F.col("zone") == zone).select(*columns)

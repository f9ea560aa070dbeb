"""Land the Kafka readings topic into the Parquet raw zone, exactly once, with a quarantine.

    spark-submit ingest/land.py [--once] [--trigger "5 minutes"] [--max-offsets-per-trigger N]
    python -m ingest.land --once

One Structured Streaming query reads the topic through Spark's Kafka source,
parses each record once against the contract of `smw.messages` (its Spark form,
`smw.contract`), and routes it:

* a valid message is exploded into readings (`smw.schema`), stored under
  `<DATA_DIR>/landing/zone=raw/date=YYYY-MM-DD/`, the UTC date of each reading;
* any other record is stored whole (raw bytes, key, topic, partition, offset,
  Kafka timestamp and the first rule it broke) under
  `<DATA_DIR>/landing/zone=quarantine/date=YYYY-MM-DD/` (the Kafka timestamp's date).

Both zones are written by one Parquet file sink with one checkpoint: a batch's
files are committed to `landing/_spark_metadata` once, together, and after a
crash Kafka offsets are replayed from the checkpoint, so every offset range lands
exactly once and a record is never in both zones. Read the zones with
`smw.zones.read_raw()` / `read_quarantine()` (Spark honours `_spark_metadata`), not
by listing files: a crashed attempt can leave uncommitted part files behind.
"""
from __future__ import annotations

import argparse
import logging
import sys

from smw import config, contract, jobs, zones

log = logging.getLogger("ingest.land")

QUERY_NAME = "land"


def write_landing(routed_rows, settings: config.Settings, trigger: dict, files_per_trigger: int):
    """Start the file-sink query writing both zones, partitioned by zone and date."""
    from pyspark.sql import functions as F

    counted = routed_rows.observe(
        "landing",
        F.count(F.when(F.col("zone") == "raw", 1)).alias("readings_landed"),
        F.count(F.when(F.col("zone") == "quarantine", 1)).alias("records_quarantined"),
    )
    # Coalescing the Kafka partitions' tasks (no shuffle) bounds the files one
    # trigger writes to `files_per_trigger` per zone and date.
    return (
        counted.coalesce(files_per_trigger)
        .writeStream.queryName(QUERY_NAME)
        .format("parquet")
        .option("path", str(zones.landing_zone(settings)))
        .option("checkpointLocation", str(zones.checkpoint(settings, QUERY_NAME)))
        .partitionBy("zone", "date")
        .outputMode("append")
        .trigger(**trigger)
        .start()
    )


def log_progress(p) -> None:
    """Log one batch: Kafka records read, readings landed, records quarantined."""
    counts = jobs.observed(p, "landing")
    log.info(
        "batch %d: %d Kafka records in %.1f s (%.0f records/s): %d readings landed, %d records quarantined",
        p.batchId, p.numInputRows, p.batchDuration / 1000.0, p.processedRowsPerSecond or 0.0,
        counts.get("readings_landed", 0), counts.get("records_quarantined", 0),
    )
    if counts.get("records_quarantined"):
        log.warning("batch %d: %d records broke the message contract; see %s",
                    p.batchId, counts["records_quarantined"], "smw.zones.read_quarantine() / zone=quarantine")


# -- entry point -----------------------------------------------------------------


def start(spark, settings: config.Settings, *, once: bool, trigger_interval: str,
          max_offsets_per_trigger: int | None, files_per_trigger: int, fail_on_data_loss: bool = True):
    """Start the landing query; returns it."""
    trigger = {"availableNow": True} if once else {"processingTime": trigger_interval}
    records = contract.read_kafka(spark, settings, max_offsets_per_trigger=max_offsets_per_trigger,
                                  fail_on_data_loss=fail_on_data_loss)
    parsed = contract.parsed_messages(records, float(settings.max_future_skew_s))
    return write_landing(contract.routed(parsed), settings, trigger, files_per_trigger)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ingest/land.py", description="Land Kafka readings into the Parquet raw zone exactly once.",
        epilog="--once suits nightly runs; running continuously, a longer --trigger writes fewer, larger files.",
    )
    jobs.add_stream_arguments(parser, trigger="5 minutes", max_offsets_per_trigger=20000)
    parser.add_argument("--files-per-trigger", type=int, default=2,
                        help="Parquet files written per date per micro-batch (default 2)")
    parser.add_argument("--allow-data-loss", action="store_true",
                        help="keep going when Kafka offsets expired before landing (default: fail)")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_topic", "data_dir", "spark_master", "max_future_skew_s")
    args = parser.parse_args(argv)
    jobs.configure_logging()
    settings = config.from_args(args)
    jobs.apply_verbose(args, log)
    with jobs.session("smw-land", settings, listener=jobs.progress_listener(log, log_progress)) as spark:
        query = start(
            spark, settings, once=args.once, trigger_interval=args.trigger,
            max_offsets_per_trigger=args.max_offsets_per_trigger, files_per_trigger=args.files_per_trigger,
            fail_on_data_loss=not args.allow_data_loss,
        )
        log.info("landing topic %s into %s", settings.kafka_topic, zones.landing_zone(settings))
        return jobs.serve([query], log, "landing")


if __name__ == "__main__":
    sys.exit(main())

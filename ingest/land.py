"""Land the Kafka readings topic into the Parquet raw zone, exactly once, with a quarantine.

    spark-submit ingest/land.py [--once] [--trigger "5 minutes"] [--max-offsets-per-trigger N]
    python -m ingest.land --once

One Structured Streaming query reads the topic through Spark's Kafka source,
parses each record once against the contract of `smw.messages`, and routes it:

* a valid message is exploded into readings (`smw.schema`), stored under
  `<DATA_DIR>/landing/zone=raw/date=YYYY-MM-DD/`, the UTC date of each reading;
* any other record is stored whole (raw bytes, key, topic, partition, offset,
  Kafka timestamp and the first rule it broke) under
  `<DATA_DIR>/landing/zone=quarantine/date=YYYY-MM-DD/` (the Kafka timestamp's date).

Both zones are written by one Parquet file sink with one checkpoint: a batch's
files are committed to `landing/_spark_metadata` once, together, and after a
crash Kafka offsets are replayed from the checkpoint, so every offset range lands
exactly once and a record is never in both zones. Read the zones with
`read_raw()` / `read_quarantine()` (Spark honours `_spark_metadata`), not by
listing files: a crashed attempt can leave uncommitted part files behind.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from smw import config, messages

log = logging.getLogger("ingest.land")

READING_COLUMNS = ("house_id", "meter", "label", "appliance", "ts_s", "power_w", "date")
QUARANTINE_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_ts", "error", "date")


def landing_zone(settings: config.Settings) -> Path:
    return Path(settings.data_dir) / "landing"


def checkpoint(settings: config.Settings) -> Path:
    return Path(settings.data_dir) / "checkpoints" / "land"


def read_raw(spark, settings: config.Settings):
    """The committed readings of the raw zone (reading schema plus `date`)."""
    from pyspark.sql import functions as F

    landing = spark.read.parquet(str(landing_zone(settings)))
    return landing.where(F.col("zone") == "raw").select(*READING_COLUMNS)


def read_quarantine(spark, settings: config.Settings):
    """The committed quarantined records."""
    from pyspark.sql import functions as F

    landing = spark.read.parquet(str(landing_zone(settings)))
    return landing.where(F.col("zone") == "quarantine").select(*QUARANTINE_COLUMNS)


# -- transforms ------------------------------------------------------------------


def parsed_messages(kafka_records):
    """Kafka records with the JSON value parsed (`msg`) and the first broken rule (`error`, null if valid)."""
    from pyspark.sql import functions as F

    msg = F.from_json(F.col("value").cast("string"), messages.spark_schema())
    return kafka_records.withColumn("msg", msg).withColumn("error", contract_violation(F.col("msg")))


def contract_violation(msg):
    """Column: the first rule of `smw.messages.validate` that `msg` breaks, or null.

    Spark's JSON reader yields null for a field of the wrong type (a string where
    a number belongs, a fraction where an integer belongs), so type errors show up
    here as missing fields.
    """
    from pyspark.sql import functions as F

    def finite(values, low=None, high=None):
        def ok(x):
            cond = x.isNotNull() & ~F.isnan(x) & (F.abs(x) != F.lit(float("inf")))
            if low is not None:
                cond = cond & (x >= F.lit(low)) & (x < F.lit(high))
            return cond

        return F.forall(values, ok)

    def series_ok(s):
        return (
            s.isNotNull()
            & s["meter"].isNotNull() & s["meter"].between(0, 65535)
            & s["label"].isNotNull() & s["appliance"].isNotNull()
            & s["ts_s"].isNotNull() & s["power_w"].isNotNull()
            & (F.size(s["ts_s"]) > 0)
            & (F.size(s["ts_s"]) == F.size(s["power_w"]))
            & finite(s["power_w"])
            & finite(s["ts_s"], messages.MIN_TS_S, messages.MAX_TS_S)
        )

    house_length = F.length(msg["house_id"])
    return (
        F.when(msg.isNull() | (msg["v"].isNull() & msg["type"].isNull() & msg["series"].isNull()),
               F.lit("not a JSON object of the contract"))
        .when(msg["v"].isNull() | (msg["v"] != messages.SCHEMA_VERSION), F.lit("unsupported schema version"))
        .when(msg["type"].isNull() | (msg["type"] != messages.TYPE_READINGS), F.lit("type is not readings"))
        .when(msg["house_id"].isNull() | (house_length < 1) | (house_length > messages.MAX_HOUSE_ID_LENGTH),
              F.lit("bad house_id"))
        .when(msg["series"].isNull() | (F.size(msg["series"]) < 1), F.lit("series missing or empty"))
        .when(~F.forall(msg["series"], series_ok), F.lit("bad series (meter, labels, or ts_s/power_w values)"))
    )


def routed(parsed):
    """One row per reading of a valid message, one row per invalid record; `zone` tells which.

    Reading columns are null on quarantine rows and record columns on raw rows,
    so one file sink writes both zones from a single parse. Two plain explodes
    (series, then zipped points) run about 3x faster than building one flat
    array of point structs per message.
    """
    from pyspark.sql import functions as F

    valid = F.col("error").isNull()
    one_null = F.array(F.lit(None))  # keeps an invalid record as one row through each explode
    series = parsed.select(
        "*", F.explode(F.when(valid, F.col("msg.series")).otherwise(one_null)).alias("s")
    )
    points = series.select(
        "*",
        F.explode(
            F.when(valid, F.arrays_zip(F.col("s.ts_s").alias("ts_s"), F.col("s.power_w").alias("power_w")))
            .otherwise(one_null)
        ).alias("pt"),
    )
    reading = {
        "house_id": F.col("msg.house_id"),
        "meter": F.col("s.meter").cast("int"),
        "label": F.col("s.label"),
        "appliance": F.col("s.appliance"),
        "ts_s": F.col("pt.ts_s"),
        "power_w": F.col("pt.power_w"),
    }
    return points.select(
        F.when(valid, "raw").otherwise("quarantine").alias("zone"),
        *(F.when(valid, column).alias(name) for name, column in reading.items()),
        *(F.when(~valid, F.col(name)).alias(name) for name in ("key", "value", "topic", "partition", "offset")),
        F.when(~valid, F.col("timestamp")).alias("kafka_ts"),
        "error",
        F.when(valid, utc_date(F.col("pt.ts_s")))
        .otherwise(utc_date(F.unix_micros(F.col("timestamp")) / 1e6)).alias("date"),
    )


def utc_date(ts_s):
    """Column: the UTC calendar date of epoch seconds, by arithmetic (no session time zone involved)."""
    from pyspark.sql import functions as F

    return F.date_from_unix_date(F.floor(ts_s / 86400).cast("int"))


# -- I/O -----------------------------------------------------------------------


def read_kafka(spark, settings: config.Settings, max_offsets_per_trigger: int | None, fail_on_data_loss: bool):
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", str(fail_on_data_loss).lower())
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


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
        .writeStream.queryName("land")
        .format("parquet")
        .option("path", str(landing_zone(settings)))
        .option("checkpointLocation", str(checkpoint(settings)))
        .partitionBy("zone", "date")
        .outputMode("append")
        .trigger(**trigger)
        .start()
    )


# -- progress ------------------------------------------------------------------


def progress_listener():
    from pyspark.sql.streaming import StreamingQueryListener

    class LandingProgress(StreamingQueryListener):
        """Logs each batch: Kafka records read, readings landed, records quarantined."""

        def onQueryStarted(self, event):
            log.info("query %s started (id %s)", event.name, event.id)

        def onQueryProgress(self, event):
            p = event.progress
            counts = p.observedMetrics.get("landing")
            counts = counts.asDict() if counts is not None else {}
            log.info(
                "batch %d: %d Kafka records in %.1f s (%.0f records/s): %d readings landed, %d records quarantined",
                p.batchId, p.numInputRows, p.batchDuration / 1000.0, p.processedRowsPerSecond or 0.0,
                counts.get("readings_landed", 0), counts.get("records_quarantined", 0),
            )
            if counts.get("records_quarantined"):
                log.warning("batch %d: %d records broke the message contract; see %s",
                            p.batchId, counts["records_quarantined"], "read_quarantine() / zone=quarantine")

        def onQueryIdle(self, event):  # Spark 3.5+
            log.debug("query %s idle", event.id)

        def onQueryTerminated(self, event):
            if event.exception:
                log.error("query %s failed: %s", event.id, event.exception)
            else:
                log.info("query %s stopped", event.id)

    return LandingProgress()


# -- entry point -----------------------------------------------------------------


def start(spark, settings: config.Settings, *, once: bool, trigger_interval: str,
          max_offsets_per_trigger: int | None, files_per_trigger: int, fail_on_data_loss: bool = True):
    """Start the landing query; returns it."""
    trigger = {"availableNow": True} if once else {"processingTime": trigger_interval}
    records = read_kafka(spark, settings, max_offsets_per_trigger, fail_on_data_loss)
    return write_landing(routed(parsed_messages(records)), settings, trigger, files_per_trigger)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ingest/land.py", description="Land Kafka readings into the Parquet raw zone exactly once."
    )
    parser.add_argument("--once", action="store_true",
                        help="process everything available now, then stop (nightly runs, tests)")
    parser.add_argument("--trigger", default="5 minutes",
                        help="micro-batch interval when running continuously (default: 5 minutes; "
                             "longer intervals write fewer, larger files)")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=20000,
                        help="Kafka records per micro-batch (default 20000, each a batch of readings)")
    parser.add_argument("--files-per-trigger", type=int, default=2,
                        help="Parquet files written per date per micro-batch (default 2)")
    parser.add_argument("--allow-data-loss", action="store_true",
                        help="keep going when Kafka offsets expired before landing (default: fail)")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_topic", "data_dir", "spark_master")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    settings = config.from_args(args)

    from smw import spark as spark_builder

    spark = spark_builder.session("smw-land", settings)
    spark.streams.addListener(progress_listener())
    query = start(
        spark, settings, once=args.once, trigger_interval=args.trigger,
        max_offsets_per_trigger=args.max_offsets_per_trigger, files_per_trigger=args.files_per_trigger,
        fail_on_data_loss=not args.allow_data_loss,
    )
    log.info("landing topic %s into %s", settings.kafka_topic, landing_zone(settings))

    spark_builder.stop_on_signals([query], log)
    try:
        return spark_builder.await_queries([query], log, "landing")
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())

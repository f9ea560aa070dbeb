"""Land the Kafka readings topic into the Parquet raw zone, exactly once, with a quarantine.

    spark-submit ingest/land.py [--once] [--trigger "1 minute"] [--max-offsets-per-trigger N]
    python -m ingest.land --once

Two Structured Streaming queries read the same topic through Spark's Kafka source:

* raw: messages that follow the contract of `smw.messages` are exploded into
  readings (`smw.schema`) and written by the Parquet file sink to
  `<DATA_DIR>/raw/date=YYYY-MM-DD/`, the UTC date of each reading's timestamp;
* quarantine: every other message, with its raw bytes, key, topic, partition,
  offset, Kafka timestamp and the first rule it broke, goes to
  `<DATA_DIR>/quarantine/date=YYYY-MM-DD/` (the Kafka timestamp's UTC date).

Each query has its own checkpoint; the file sink commits a batch's files in its
`_spark_metadata` log only once, and Kafka offsets are replayed from the
checkpoint after a crash, so every offset range lands exactly once. Read the
zones with Spark (which honours `_spark_metadata`), not by listing files: a
crashed attempt can leave uncommitted part files behind.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from smw import config, messages

log = logging.getLogger("ingest.land")

RAW_COLUMNS = ("house_id", "meter", "label", "appliance", "ts_s", "power_w", "date")


def raw_zone(settings: config.Settings) -> Path:
    return Path(settings.data_dir) / "raw"


def quarantine_zone(settings: config.Settings) -> Path:
    return Path(settings.data_dir) / "quarantine"


def checkpoint(settings: config.Settings, name: str) -> Path:
    return Path(settings.data_dir) / "checkpoints" / name


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


def readings(parsed):
    """Valid messages exploded into readings with their UTC `date` partition."""
    from pyspark.sql import functions as F

    series = parsed.where(F.col("error").isNull()).select(
        F.col("msg.house_id").alias("house_id"), F.explode("msg.series").alias("s")
    )
    points = series.select(
        "house_id",
        F.col("s.meter").cast("int").alias("meter"),
        F.col("s.label").alias("label"),
        F.col("s.appliance").alias("appliance"),
        F.explode(F.arrays_zip(F.col("s.ts_s").alias("ts_s"), F.col("s.power_w").alias("power_w"))).alias("p"),
    )
    return points.select(
        "house_id", "meter", "label", "appliance",
        F.col("p.ts_s").alias("ts_s"),
        F.col("p.power_w").alias("power_w"),
        utc_date(F.col("p.ts_s")).alias("date"),
    )


def utc_date(ts_s):
    """Column: the UTC calendar date of epoch seconds, by arithmetic (no session time zone involved)."""
    from pyspark.sql import functions as F

    return F.date_from_unix_date(F.floor(ts_s / 86400).cast("int"))


def quarantined(parsed):
    """Messages that broke the contract, with everything needed to inspect or replay them."""
    from pyspark.sql import functions as F

    return parsed.where(F.col("error").isNotNull()).select(
        "key", "value", "topic", "partition", "offset",
        F.col("timestamp").alias("kafka_ts"),
        "error",
        utc_date(F.unix_micros(F.col("timestamp")) / 1e6).alias("date"),
    )


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


def write_parquet(frame, path: Path, checkpoint_dir: Path, name: str, trigger: dict, files_per_trigger: int):
    """Start a file-sink query; `files_per_trigger` bounds the files a trigger writes per date."""
    # A date's rows spread over at most `files_per_trigger` files (by house for readings).
    keys = ["date", "house_id"] if "house_id" in frame.columns else ["date"]
    shaped = frame.repartition(files_per_trigger, *keys)
    return (
        shaped.writeStream.queryName(name)
        .format("parquet")
        .option("path", str(path))
        .option("checkpointLocation", str(checkpoint_dir))
        .partitionBy("date")
        .outputMode("append")
        .trigger(**trigger)
        .start()
    )


def observed(frame, name: str):
    """Attach a row counter reported in the query's progress (observedMetrics)."""
    from pyspark.sql import functions as F

    return frame.observe(name, F.count(F.lit(1)).alias("rows"))


# -- progress ------------------------------------------------------------------


def progress_listener():
    from pyspark.sql.streaming import StreamingQueryListener

    class LandingProgress(StreamingQueryListener):
        """Logs each batch: Kafka records read, readings landed, messages quarantined."""

        def onQueryStarted(self, event):
            log.info("query %s started (id %s)", event.name, event.id)

        def onQueryProgress(self, event):
            p = event.progress
            metrics = {name: row.asDict().get("rows", 0) for name, row in (p.observedMetrics or {}).items()}
            log.info(
                "%s batch %d: %d Kafka records in %.1f s (%.0f records/s); %s",
                p.name, p.batchId, p.numInputRows, p.batchDuration / 1000.0, p.processedRowsPerSecond or 0.0,
                ", ".join(f"{k} {v}" for k, v in metrics.items()) or "no rows",
            )

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
    """Start the raw and quarantine queries; returns them."""
    trigger = {"availableNow": True} if once else {"processingTime": trigger_interval}
    parsed = parsed_messages(read_kafka(spark, settings, max_offsets_per_trigger, fail_on_data_loss))
    raw_query = write_parquet(
        observed(readings(parsed), "readings_landed"), raw_zone(settings), checkpoint(settings, "land-raw"),
        "land-raw", trigger, files_per_trigger,
    )
    quarantine_query = write_parquet(
        observed(quarantined(parsed), "messages_quarantined"), quarantine_zone(settings),
        checkpoint(settings, "land-quarantine"), "land-quarantine", trigger, 1,
    )
    return [raw_query, quarantine_query]


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
    settings = config.from_args(args)

    from smw import spark as spark_builder

    spark = spark_builder.session("smw-land", settings)
    spark.streams.addListener(progress_listener())
    queries = start(
        spark, settings, once=args.once, trigger_interval=args.trigger,
        max_offsets_per_trigger=args.max_offsets_per_trigger, files_per_trigger=args.files_per_trigger,
        fail_on_data_loss=not args.allow_data_loss,
    )
    log.info("landing %s -> %s (quarantine %s)", settings.kafka_topic, raw_zone(settings), quarantine_zone(settings))

    stopping = threading.Event()

    def stop(signum, _frame):
        log.info("signal %d: stopping after the current batch", signum)
        stopping.set()
        for query in queries:
            query.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = False
    for query in queries:
        try:
            query.awaitTermination()
        except Exception as exc:  # noqa: BLE001 - StreamingQueryException and friends: report, exit 1
            log.error("query %s failed: %s", query.name, exc)
            failed = True
    spark.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Raise overshoot, no-data and new-peak alerts from the Kafka readings into RethinkDB and Cassandra.

    spark-submit streaming/alerts.py [--once] [--trigger "1 second"] [--multiplier 2.0] ...
    python -m streaming.alerts --help

Kafka records are parsed and validated by the landing job's transforms
(`ingest.land.parsed_messages` / `routed`); malformed records go to a quarantine
(Parquet, same columns as the landing quarantine) written by a second, slower
query. Valid readings get an event-time watermark, are joined with the current
thresholds of their (house, meter) from Cassandra (a cached copy refreshed every
`--threshold-refresh-s` without restarting), and grouped by a bucket of houses
into `applyInPandasWithState`, where `streaming.episodes.detect` runs the alert
rules on columnar per-meter state. Each micro-batch's alerts are written in
`foreachBatch`: Cassandra `alerts_by_house` then RethinkDB `alerts`, both upserts
keyed by a deterministic id, so a batch re-run after a crash writes the same rows.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

from smw import config
from streaming import episodes

log = logging.getLogger("streaming.alerts")

QUERY_NAME = "alerts"
READING_COLUMNS = ("house_id", "meter", "appliance", "ts_s", "power_w")


def job_dir(settings: config.Settings) -> Path:
    return Path(settings.data_dir) / "alerts"


def checkpoint(settings: config.Settings) -> Path:
    return Path(settings.data_dir) / "checkpoints" / "alerts"


def quarantine_checkpoint(settings: config.Settings) -> Path:
    return Path(settings.data_dir) / "checkpoints" / "alerts-quarantine"


def spool_path(settings: config.Settings) -> Path:
    # Beside the checkpoint: alerts spooled for RethinkDB belong to the same run of the job.
    return Path(settings.data_dir) / "checkpoints" / "alerts-rethinkdb-spool.jsonl"


def alert_schema():
    from pyspark.sql import types as T

    double, string = T.DoubleType(), T.StringType()
    return T.StructType([
        T.StructField("id", string), T.StructField("kind", string), T.StructField("house_id", string),
        T.StructField("meter", T.LongType()), T.StructField("appliance", string),
        T.StructField("threshold_w", double), T.StructField("multiplier", double),
        T.StructField("peak_w", double), T.StructField("mean_w", double),
        T.StructField("start_ts_s", double), T.StructField("end_ts_s", double),
        T.StructField("state", string), T.StructField("severity", string),
        T.StructField("seq", T.LongType()), T.StructField("out_of_order", T.LongType()),
    ])


# -- transforms ------------------------------------------------------------------


def readings(routed_rows):
    """Valid readings (house_id, meter, appliance, ts_s, power_w) of routed Kafka records."""
    from pyspark.sql import functions as F

    return routed_rows.where(F.col("zone") == "raw").select(*READING_COLUMNS)


def quarantined(routed_rows):
    """Records that broke the message contract, as the landing job stores them."""
    from pyspark.sql import functions as F

    from ingest import land

    return routed_rows.where(F.col("zone") == "quarantine").select(*land.QUARANTINE_COLUMNS)


def with_thresholds(reading_rows, threshold_rows):
    """Readings with `threshold_w` of their meter (null where none is known)."""
    from pyspark.sql import functions as F

    return reading_rows.join(F.broadcast(threshold_rows), ["house_id", "meter"], "left")


def alerts(readings_with_thresholds, rules: episodes.Rules, buckets: int, watermark_delay: str):
    """Alert rows (`alert_schema()`) of the readings, by stateful episode detection per bucket of houses."""
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout
    from pyspark.sql import types as T

    keyed = (
        readings_with_thresholds
        .withColumn("event_time", F.timestamp_seconds(F.col("ts_s")))
        .withWatermark("event_time", watermark_delay)
        # A bucket of houses per state key: one Python call per bucket and batch, not per meter.
        .withColumn("bucket", F.pmod(F.xxhash64("house_id"), F.lit(buckets)).cast("int"))
    )
    state_schema = T.StructType([T.StructField("meters", T.BinaryType())])
    return keyed.groupBy("bucket").applyInPandasWithState(
        _detector(rules), alert_schema(), state_schema, "update", GroupStateTimeout.EventTimeTimeout
    )


def _detector(rules: episodes.Rules):
    """The function applyInPandasWithState calls per bucket (runs in the Python workers)."""
    columns = [f.name for f in alert_schema().fields]

    def detect_bucket(key, batches, state):
        import pandas as pd

        meters = episodes.MeterStates.from_bytes(state.get[0]) if state.exists else episodes.MeterStates()
        frames = [b for b in batches if len(b)]
        batch = (pd.concat(frames, ignore_index=True)[["house_id", "meter", "appliance", "ts_s", "power_w",
                                                       "threshold_w"]]
                 if frames else pd.DataFrame(columns=["house_id", "meter", "appliance", "ts_s", "power_w",
                                                      "threshold_w"]))
        watermark_ms = state.getCurrentWatermarkMs()
        outcome = episodes.detect(meters, batch, watermark_ms / 1000.0 if watermark_ms > 0 else 0.0, rules)
        state.update((meters.to_bytes(),))
        # Wake up for the first no-data deadline even if the bucket gets no readings.
        deadline_ms = (outcome.next_deadline_s * 1000.0 if outcome.next_deadline_s < float("inf")
                       else watermark_ms + rules.no_data_after_s * 1000.0)
        state.setTimeoutTimestamp(int(max(deadline_ms, watermark_ms + 1000)))
        rows = outcome.alerts
        if outcome.out_of_order:
            # Carried on a marker row (id null) so the driver can count them without an accumulator.
            rows = rows + [{"out_of_order": outcome.out_of_order}]
        frame = pd.DataFrame(rows, columns=columns)
        frame["out_of_order"] = frame["out_of_order"].fillna(0).astype("int64")
        frame["seq"] = frame["seq"].fillna(-1).astype("int64")
        frame["meter"] = frame["meter"].fillna(-1).astype("int64")
        yield frame

    return detect_bucket


# -- I/O -----------------------------------------------------------------------


def read_kafka(spark, settings: config.Settings, max_offsets_per_trigger: int | None, starting_offsets: str):
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", "true")
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def read_thresholds(spark, settings: config.Settings):
    """(house_id, meter, threshold_w) of the Cassandra thresholds table."""
    return (
        spark.read.format("org.apache.spark.sql.cassandra")
        .options(keyspace=settings.cassandra_keyspace, table="thresholds")
        .load()
        .select("house_id", "meter", "threshold_w")
        .where("threshold_w IS NOT NULL")
    )


class Thresholds:
    """The thresholds as a cached DataFrame that the running query re-reads after `refresh()`.

    The streaming plan holds the Cassandra scan; Spark substitutes the cached copy
    for it when each micro-batch is planned, so unpersisting and caching again
    makes the next batch use the new rows without restarting the query.
    """

    def __init__(self, spark, settings: config.Settings, refresh_s: float):
        self.frame = read_thresholds(spark, settings)
        self.refresh_s = refresh_s
        self.loaded_at = 0.0
        self.refresh()

    def refresh(self) -> int:
        self.frame.unpersist(blocking=True)
        self.frame.cache()
        count = self.frame.count()
        self.loaded_at = time.monotonic()
        log.info("thresholds loaded: %d meters", count)
        return count

    def refresh_if_due(self) -> None:
        if time.monotonic() - self.loaded_at >= self.refresh_s:
            self.refresh()


class BatchWriter:
    """foreachBatch: collect the batch's alert rows, write both sinks, refresh thresholds when due."""

    def __init__(self, sinks, thresholds: Thresholds):
        self.sinks = sinks
        self.thresholds = thresholds
        self.totals = {"alerts": 0, "out_of_order": 0}
        self.last_batch = {}
        self._lock = threading.Lock()

    def __call__(self, batch_df, batch_id: int) -> None:
        rows = [r.asDict() for r in batch_df.collect()]
        out_of_order = sum(r["out_of_order"] for r in rows)
        alerts = [r for r in rows if r["id"] is not None]
        for alert in alerts:
            alert.pop("out_of_order")
            alert["meter"] = int(alert["meter"])
        written = self.sinks.write(alerts)
        with self._lock:
            self.totals["alerts"] += written
            self.totals["out_of_order"] += out_of_order
            self.last_batch = {"batch_id": batch_id, "alerts": written, "out_of_order": out_of_order}
        if written or out_of_order:
            log.info("batch %d: %d alert documents written, %d out-of-order readings ignored",
                     batch_id, written, out_of_order)
        # After the batch: the next batch is planned with the refreshed cache.
        self.thresholds.refresh_if_due()


# -- progress ------------------------------------------------------------------


def phases(duration_ms: dict) -> str:
    """Where a micro-batch's time went, from its progress report: 'addBatch 0.91 s, walCommit 0.05 s, ...'."""
    shown = sorted(((name, ms) for name, ms in duration_ms.items() if name != "triggerExecution" and ms >= 10),
                   key=lambda item: -item[1])
    return ", ".join(f"{name} {ms / 1000.0:.2f} s" for name, ms in shown) or "-"


def progress_listener():
    from pyspark.sql.streaming import StreamingQueryListener

    class AlertProgress(StreamingQueryListener):
        """Logs each batch of the alert query: records, readings, late readings dropped by the watermark."""

        def onQueryStarted(self, event):
            log.info("query %s started (id %s)", event.name, event.id)

        def onQueryProgress(self, event):
            p = event.progress
            if p.name != QUERY_NAME:
                counts = p.observedMetrics.get("quarantine")
                if counts is not None and counts["records_quarantined"]:
                    log.warning("batch %d: %d records broke the message contract and were quarantined",
                                p.batchId, counts["records_quarantined"])
                return
            late = sum(op.numRowsDroppedByWatermark for op in p.stateOperators)
            counts = p.observedMetrics.get("readings")
            readings = counts["readings"] if counts is not None else 0
            log.info("batch %d: %d Kafka records, %d readings in %.2f s (%s), watermark %s, %d late readings dropped",
                     p.batchId, p.numInputRows, readings, p.batchDuration / 1000.0, phases(p.durationMs),
                     p.eventTime.get("watermark", "-"), late)
            if late:
                log.warning("batch %d: %d readings arrived behind the watermark and were not evaluated",
                            p.batchId, late)

        def onQueryIdle(self, event):  # Spark 3.5+
            log.debug("query %s idle", event.id)

        def onQueryTerminated(self, event):
            if event.exception:
                log.error("query %s failed: %s", event.id, event.exception)
            else:
                log.info("query %s stopped", event.id)

    return AlertProgress()


# -- entry point -----------------------------------------------------------------


def start(spark, settings: config.Settings, rules: episodes.Rules, *, once: bool = False,
          trigger_interval: str = "1 second", quarantine_trigger: str = "1 minute",
          max_offsets_per_trigger: int | None = None, watermark_delay: str = "2 minutes", buckets: int = 8,
          threshold_refresh_s: float = 300.0, starting_offsets: str = "earliest", rethinkdb_retry_s: float = 5.0,
          sinks=None):
    """Start the alert query and the quarantine query; returns (alert query, quarantine query, writer)."""
    from pyspark.sql import functions as F

    from ingest import land
    from streaming.sinks import AlertSinks

    routed_rows = land.routed(land.parsed_messages(read_kafka(spark, settings, max_offsets_per_trigger,
                                                              starting_offsets)))
    reading_rows = readings(routed_rows).observe("readings", F.count(F.lit(1)).alias("readings"))
    thresholds = Thresholds(spark, settings, threshold_refresh_s)
    sinks = sinks or AlertSinks(settings, spool_path(settings), rethinkdb_retry_s)
    sinks.feed.flush()  # alerts spooled by an earlier run go out first
    sinks.feed.start_retrying()
    writer = BatchWriter(sinks, thresholds)
    alert_trigger = {"availableNow": True} if once else {"processingTime": trigger_interval}
    alert_query = (
        alerts(with_thresholds(reading_rows, thresholds.frame), rules, buckets, watermark_delay)
        .writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", str(checkpoint(settings)))
        .outputMode("update")
        .foreachBatch(writer)
        .trigger(**alert_trigger)
        .start()
    )
    quarantine_rows = quarantined(routed_rows).observe(
        "quarantine", F.count(F.lit(1)).alias("records_quarantined"))
    quarantine_query = (
        quarantine_rows.coalesce(1)
        .writeStream.queryName(QUERY_NAME + "-quarantine")
        .format("parquet")
        .option("path", str(job_dir(settings) / "quarantine"))
        .option("checkpointLocation", str(quarantine_checkpoint(settings)))
        .partitionBy("date")
        .trigger(**({"availableNow": True} if once else {"processingTime": quarantine_trigger}))
        .start()
    )
    return alert_query, quarantine_query, writer


def rules_from_args(args: argparse.Namespace) -> episodes.Rules:
    return episodes.Rules(**{f.name: getattr(args, f.name) for f in fields(episodes.Rules)})


_RULE_HELP = {
    "multiplier": "an episode opens above threshold_w x this",
    "clear_multiplier": "it closes below threshold_w x this (hysteresis)",
    "min_readings": "consecutive readings above the raise level that open an episode",
    "min_duration_s": "...or seconds above the raise level that open it",
    "clear_readings": "consecutive readings below the clear level that close it",
    "cooldown_s": "a run starting this soon after a close re-opens the same episode",
    "stale_close_s": "an open episode of a meter silent this long (event time) closes at its last reading",
    "critical_ratio": "severity critical when peak_w >= threshold_w x this, else warning",
    "overshoot_on_mains": "raise overshoot alerts on mains meters too",
    "no_data_after_s": "silence (event time, against the watermark) that opens a no_data alert",
    "no_data_min_readings": "readings a meter must have sent before its silence counts",
    "new_peak_margin": "a mains reading above record x this is a new peak",
    "new_peak_warmup_s": "history a mains meter needs before new peaks are reported",
    "new_peak_cooldown_s": "at most one new_peak alert per mains meter per this many seconds",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streaming/alerts.py", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true",
                        help="process everything available now, then stop (tests, replays)")
    parser.add_argument("--trigger", default="1 second", help="micro-batch interval (default 1 second)")
    parser.add_argument("--quarantine-trigger", default="1 minute",
                        help="interval of the quarantine query (default 1 minute)")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=None,
                        help="Kafka records per micro-batch (default: no limit)")
    parser.add_argument("--watermark-delay", default="2 minutes",
                        help="readings this far behind the newest event time are late and dropped (default 2 minutes)")
    parser.add_argument("--buckets", type=int, default=8,
                        help="state keys (buckets of houses); fixed for the life of a checkpoint (default 8)")
    parser.add_argument("--threshold-refresh-s", type=float, default=300.0,
                        help="re-read the thresholds table this often, in seconds (default 300)")
    parser.add_argument("--starting-offsets", default="earliest",
                        help="Kafka offsets of a first start without checkpoint: earliest or latest (default earliest)")
    parser.add_argument("--rethinkdb-retry-s", type=float, default=5.0,
                        help="retry interval for alerts spooled while RethinkDB is unreachable (default 5)")
    parser.add_argument("--live-power", action=argparse.BooleanOptionalAction, default=True,
                        help="also write readings to Cassandra recent_power for the dashboard's live graph, "
                             "from the latest offsets (streaming/live_power.py; default on)")
    defaults = episodes.Rules()
    for f in fields(episodes.Rules):
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                                default=default, help=f"{_RULE_HELP[f.name]} (default {default})")
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(default), default=default,
                                help=f"{_RULE_HELP[f.name]} (default {default})")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_topic", "data_dir", "spark_master", "cassandra_hosts",
                         "cassandra_keyspace", "rethinkdb_host", "rethinkdb_port", "rethinkdb_db",
                         "spark_shuffle_partitions")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.WARNING)
    settings = config.from_args(args)

    from smw import spark as spark_builder

    spark = spark_builder.session("smw-alerts", settings)
    spark.streams.addListener(progress_listener())
    alert_query, quarantine_query, writer = start(
        spark, settings, rules_from_args(args), once=args.once, trigger_interval=args.trigger,
        quarantine_trigger=args.quarantine_trigger, max_offsets_per_trigger=args.max_offsets_per_trigger,
        watermark_delay=args.watermark_delay, buckets=args.buckets, threshold_refresh_s=args.threshold_refresh_s,
        starting_offsets=args.starting_offsets, rethinkdb_retry_s=args.rethinkdb_retry_s,
    )
    queries = [alert_query, quarantine_query]
    if args.live_power and not args.once:
        from streaming import live_power

        queries.append(live_power.start(spark, settings))
    log.info("alerting on topic %s with %s", settings.kafka_topic, rules_from_args(args))
    spark_builder.stop_on_signals(queries, log)
    try:
        status = spark_builder.await_queries(queries, log, "alert job")
    finally:
        if not writer.sinks.feed.flush():
            log.error("%d alerts still spooled for RethinkDB in %s; they are sent on the next start",
                      writer.sinks.feed.pending(), spool_path(settings))
        writer.sinks.close()
        spark.stop()
    log.info("%d alert documents written, %d out-of-order readings ignored",
             writer.totals["alerts"], writer.totals["out_of_order"])
    return status


if __name__ == "__main__":
    sys.exit(main())

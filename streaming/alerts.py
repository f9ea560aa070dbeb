"""Raise overshoot, no-data and new-peak alerts from the Kafka readings into RethinkDB and Cassandra.

    spark-submit streaming/alerts.py [--once] [--trigger "1 second"] [--multiplier 2.0] ...
    python -m streaming.alerts --help

Kafka records are parsed and validated once by the contract's Spark form
(`smw.contract`); malformed records go to a quarantine (Parquet, the landing
quarantine's columns, `smw.zones.alerts_quarantine`) written by a second, slower
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

from smw import alert, config, contract, jobs, zones
from streaming import episodes

log = logging.getLogger("streaming.alerts")

QUERY_NAME = "alerts"
QUARANTINE_QUERY_NAME = "alerts-quarantine"
# The columns the episode rules read; the Python workers get nothing else.
DETECTOR_COLUMNS = ["house_id", "meter", "appliance", "ts_s", "power_w", "threshold_w", "normal_peak_w"]
# Alert rows as the detector yields them: an alert's raised fields, the row's order within
# the batch (`seq`), and a count of out-of-order readings carried on a marker row.
ALERT_ROW_DDL = alert.spark_ddl("seq bigint, out_of_order bigint")
ALERT_ROW_COLUMNS = [*alert.RAISED_NAMES, "seq", "out_of_order"]


# -- transforms ------------------------------------------------------------------


def with_thresholds(reading_rows, threshold_rows):
    """Readings with `threshold_w` and `normal_peak_w` of their meter (null where none is known)."""
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
        _detector(rules), ALERT_ROW_DDL, state_schema, "update", GroupStateTimeout.EventTimeTimeout
    )


def _detector(rules: episodes.Rules):
    """The function applyInPandasWithState calls per bucket (runs in the Python workers)."""

    def detect_bucket(key, batches, state):
        import pandas as pd

        meters = episodes.MeterStates.from_bytes(state.get[0]) if state.exists else episodes.MeterStates()
        frames = [b for b in batches if len(b)]
        batch = (pd.concat(frames, ignore_index=True)[DETECTOR_COLUMNS] if frames
                 else pd.DataFrame(columns=DETECTOR_COLUMNS))
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
        frame = pd.DataFrame(rows, columns=ALERT_ROW_COLUMNS)
        frame["out_of_order"] = frame["out_of_order"].fillna(0).astype("int64")
        frame["seq"] = frame["seq"].fillna(-1).astype("int64")
        frame["meter"] = frame["meter"].fillna(-1).astype("int64")
        yield frame

    return detect_bucket


# -- I/O -----------------------------------------------------------------------


def read_thresholds(spark, settings: config.Settings):
    """(house_id, meter, threshold_w, normal_peak_w) of the Cassandra thresholds table."""
    return (
        spark.read.format("org.apache.spark.sql.cassandra")
        .options(keyspace=settings.cassandra_keyspace, table="thresholds")
        .load()
        .select("house_id", "meter", "threshold_w", "normal_peak_w")
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
        raised = [r for r in rows if r["id"] is not None]
        for row in raised:
            row.pop("out_of_order")
            row["meter"] = int(row["meter"])
        written = self.sinks.write(raised)
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


def log_progress(p) -> None:
    """Log one batch of the alert query (records, readings, where the time went, late readings
    dropped by the watermark) or what the quarantine query stored."""
    if p.name != QUERY_NAME:
        quarantined = jobs.observed(p, "quarantine").get("records_quarantined")
        if quarantined:
            log.warning("batch %d: %d records broke the message contract and were quarantined",
                        p.batchId, quarantined)
        return
    late = sum(op.numRowsDroppedByWatermark for op in p.stateOperators)
    readings = jobs.observed(p, "readings").get("readings", 0)
    log.info("batch %d: %d Kafka records, %d readings in %.2f s (%s), watermark %s, %d late readings dropped",
             p.batchId, p.numInputRows, readings, p.batchDuration / 1000.0, phases(p.durationMs),
             p.eventTime.get("watermark", "-"), late)
    if late:
        log.warning("batch %d: %d readings arrived behind the watermark and were not evaluated", p.batchId, late)


# -- entry point -----------------------------------------------------------------


def start(spark, settings: config.Settings, rules: episodes.Rules, *, once: bool = False,
          trigger_interval: str = "1 second", quarantine_trigger: str = "1 minute",
          max_offsets_per_trigger: int | None = None, watermark_delay: str = "2 minutes", buckets: int = 8,
          threshold_refresh_s: float = 300.0, starting_offsets: str = "earliest", rethinkdb_retry_s: float = 5.0,
          sinks=None):
    """Start the alert query and the quarantine query; returns (alert query, quarantine query, writer)."""
    from pyspark.sql import functions as F

    from streaming.sinks import AlertSinks

    records = contract.read_kafka(spark, settings, starting_offsets=starting_offsets,
                                  max_offsets_per_trigger=max_offsets_per_trigger)
    routed_rows = contract.routed(contract.parsed_messages(records))
    reading_rows = (contract.readings(routed_rows).select("house_id", "meter", "appliance", "ts_s", "power_w")
                    .observe("readings", F.count(F.lit(1)).alias("readings")))
    thresholds = Thresholds(spark, settings, threshold_refresh_s)
    sinks = sinks or AlertSinks(settings, zones.alerts_spool(settings), rethinkdb_retry_s)
    sinks.feed.flush()  # alerts spooled by an earlier run go out first
    sinks.feed.start_retrying()
    writer = BatchWriter(sinks, thresholds)
    alert_trigger = {"availableNow": True} if once else {"processingTime": trigger_interval}
    alert_query = (
        alerts(with_thresholds(reading_rows, thresholds.frame), rules, buckets, watermark_delay)
        .writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", str(zones.checkpoint(settings, QUERY_NAME)))
        .outputMode("update")
        .foreachBatch(writer)
        .trigger(**alert_trigger)
        .start()
    )
    quarantine_rows = contract.quarantined(routed_rows).observe(
        "quarantine", F.count(F.lit(1)).alias("records_quarantined"))
    quarantine_query = (
        quarantine_rows.coalesce(1)
        .writeStream.queryName(QUARANTINE_QUERY_NAME)
        .format("parquet")
        .option("path", str(zones.alerts_quarantine(settings)))
        .option("checkpointLocation", str(zones.checkpoint(settings, QUARANTINE_QUERY_NAME)))
        .partitionBy("date")
        .trigger(**({"availableNow": True} if once else {"processingTime": quarantine_trigger}))
        .start()
    )
    return alert_query, quarantine_query, writer


def rules_from_args(args: argparse.Namespace) -> episodes.Rules:
    return config.options_from_args(episodes.Rules, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streaming/alerts.py", description=__doc__.splitlines()[0])
    jobs.add_stream_arguments(parser, trigger="1 second", starting_offsets="earliest")
    parser.add_argument("--quarantine-trigger", default="1 minute",
                        help="interval of the quarantine query (default 1 minute)")
    parser.add_argument("--watermark-delay", default="2 minutes",
                        help="readings this far behind the newest event time are late and dropped (default 2 minutes)")
    parser.add_argument("--buckets", type=int, default=8,
                        help="state keys (buckets of houses); fixed for the life of a checkpoint (default 8)")
    parser.add_argument("--threshold-refresh-s", type=float, default=300.0,
                        help="re-read the thresholds table this often, in seconds (default 300)")
    parser.add_argument("--rethinkdb-retry-s", type=float, default=5.0,
                        help="retry interval for alerts spooled while RethinkDB is unreachable (default 5)")
    parser.add_argument("--live-power", action=argparse.BooleanOptionalAction, default=True,
                        help="also write readings to Cassandra recent_power for the dashboard's live graph, "
                             "from the latest offsets (streaming/live_power.py; default on)")
    config.add_options(parser, episodes.Rules)
    config.add_arguments(parser, "kafka_bootstrap", "kafka_topic", "data_dir", "spark_master", "cassandra_hosts",
                         "cassandra_keyspace", "rethinkdb_host", "rethinkdb_port", "rethinkdb_db",
                         "spark_shuffle_partitions")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    jobs.configure_logging("cassandra")
    settings = config.from_args(args)
    rules = rules_from_args(args)
    with jobs.session("smw-alerts", settings, listener=jobs.progress_listener(log, log_progress)) as spark:
        alert_query, quarantine_query, writer = start(
            spark, settings, rules, once=args.once, trigger_interval=args.trigger,
            quarantine_trigger=args.quarantine_trigger, max_offsets_per_trigger=args.max_offsets_per_trigger,
            watermark_delay=args.watermark_delay, buckets=args.buckets, threshold_refresh_s=args.threshold_refresh_s,
            starting_offsets=args.starting_offsets, rethinkdb_retry_s=args.rethinkdb_retry_s,
        )
        queries = [alert_query, quarantine_query]
        if args.live_power and not args.once:
            from streaming import live_power

            queries.append(live_power.start(spark, settings))
        log.info("alerting on topic %s with %s", settings.kafka_topic, rules)
        try:
            status = jobs.serve(queries, log, "alert job")
        finally:
            if not writer.sinks.feed.flush():
                log.error("%d alerts still spooled for RethinkDB in %s; they are sent on the next start",
                          writer.sinks.feed.pending(), zones.alerts_spool(settings))
            writer.sinks.close()
    log.info("%d alert documents written, %d out-of-order readings ignored",
             writer.totals["alerts"], writer.totals["out_of_order"])
    return status


if __name__ == "__main__":
    sys.exit(main())

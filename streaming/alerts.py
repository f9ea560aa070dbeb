"""Raise overshoot, no-data and new-peak alerts from the Kafka readings into RethinkDB and Cassandra.

    spark-submit streaming/alerts.py [--once] [--trigger "1 second"] [--multiplier 2.0] ...
    python -m streaming.alerts --help

One Structured Streaming query reads the topic, parses each record once against the
contract (`smw.contract`, readings dated in the future quarantined) and hands every
micro-batch to `AlertBatches` (foreachBatch), which works so that a batch's cost follows
its readings and the meters that are doing something, not the size of the fleet:

1. In the JVM, one row per series of a message (`summaries`): readings, first and last
   timestamp, highest power, and the readings as two arrays; the rows reach the driver
   by one Arrow collect (one Spark job per batch), the arrays left packed.
2. In the driver, against each meter's state (`streaming.episodes.MeterStates`, kept for
   every meter) and thresholds (`Thresholds`, read from Cassandra and refreshed every
   `--threshold-refresh-s` without restarting): series wholly behind the watermark are
   dropped (late), and `episodes.plan` picks the meters whose readings can matter (a
   reading above the raise level, a run or episode in progress, an open no_data alert, a
   possible new peak); every other meter only moves its counters, vectorised.
3. Only the arrays of those meters' series are unpacked (`series_readings`), and their
   readings go through the episode rules one by one; then silence against the watermark
   opens no_data alerts and closes episodes of meters gone quiet, for every meter at once.
4. Alerts go to Cassandra `alerts_by_house` then RethinkDB `alerts` (upserts keyed by a
   deterministic id); malformed records to the Parquet quarantine
   (`smw.zones.alerts_quarantine`, one folder per batch); the changed meter state to
   `streaming.statelog` beside the checkpoint.

A batch that Spark did not commit (a crash) runs again with the same offsets from the
meter state after the batch before it, so it raises the same alerts with the same ids.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from smw import config, contract, jobs, zones
from streaming import episodes
from streaming.statelog import StateLog

log = logging.getLogger("streaming.alerts")

QUERY_NAME = "alerts"
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 5000


# -- transforms ------------------------------------------------------------------


def messages(kafka_records, max_future_skew_s: float):
    """Parsed records (`smw.contract.parsed_messages`) with `event_time`, the newest reading of a
    valid message, for Spark's event-time statistics."""
    from pyspark.sql import functions as F

    parsed = contract.parsed_messages(kafka_records, max_future_skew_s)
    newest = F.array_max(F.transform(F.col("msg.series"), lambda s: F.array_max(s["ts_s"])))
    return parsed.withColumn("event_time", F.when(F.col("error").isNull(), F.timestamp_seconds(newest)))


# No value that changes from batch to batch is compiled into these plans (the watermark is
# applied in the driver): Spark generates each plan's code once and reuses it every batch.


def series(parsed):
    """One row per series of a valid message: house_id, meter, appliance, its readings (ts_s, power_w)."""
    from pyspark.sql import functions as F

    rows = parsed.where(F.col("error").isNull()).select(
        F.col("msg.house_id").alias("house_id"), F.explode("msg.series").alias("s"))
    return rows.select("house_id", F.col("s.meter").cast("long").alias("meter"), F.col("s.appliance").alias("appliance"),
                       F.col("s.ts_s").alias("ts_s"), F.col("s.power_w").alias("power_w"))


SUMMARY_COLUMNS = ["house_id", "meter", "appliance", "readings", "min_ts_s", "max_ts_s", "max_w"]


def summaries(series_rows):
    """Per series: its summary (`SUMMARY_COLUMNS`: readings, first and last timestamp, highest
    power), computed in the JVM, and its readings as two arrays (ts_s, power_w)."""
    from pyspark.sql import functions as F

    return series_rows.select("house_id", "meter", "appliance", F.size("ts_s").alias("readings"),
                              F.array_min("ts_s").alias("min_ts_s"), F.array_max("ts_s").alias("max_ts_s"),
                              F.array_max("power_w").alias("max_w"), "ts_s", "power_w")


def collect_arrow(frame) -> pa.Table:
    """The rows of a DataFrame in the driver as an Arrow table, by the Arrow collect `toPandas`
    uses; array columns stay Arrow lists (no Python object per row)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    batches = frame._collect_as_arrow()
    return pa.Table.from_batches(batches) if batches else to_arrow_schema(frame.schema).empty_table()


def series_readings(table: pa.Table, picked: np.ndarray) -> pd.DataFrame:
    """The readings (house_id, meter, ts_s, power_w) of the series at positions `picked` of a
    `summaries` table; `series` is each reading's position in `picked`."""
    chosen = table.take(pa.array(picked, type=pa.int64()))
    parent = pc.list_parent_indices(chosen["ts_s"]).to_numpy()
    return pd.DataFrame({
        "house_id": chosen["house_id"].to_numpy(zero_copy_only=False)[parent],
        "meter": chosen["meter"].to_numpy()[parent],
        "ts_s": pc.list_flatten(chosen["ts_s"]).to_numpy(),
        "power_w": pc.list_flatten(chosen["power_w"]).to_numpy(),
        "series": parent,
    })


# -- thresholds ------------------------------------------------------------------


class Thresholds:
    """Each meter's threshold_w, normal_peak_w and min_run_s from the Cassandra `thresholds`
    table, kept in the driver beside the meter rows (`aligned`).

    A background thread re-reads the table every `refresh_s`; a batch picks the new rows up
    when it starts, so a change applies within one refresh interval, without a restart.
    """

    def __init__(self, settings: config.Settings, refresh_s: float):
        self.settings = settings
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fresh: dict | None = None
        self._by_meter = self.read()
        self._aligned = np.empty((0, 3))

    def read(self) -> dict[tuple[str, int], tuple[float, float, float]]:
        """{(house_id, meter): (threshold_w, normal_peak_w, min_run_s)} of every meter with a
        threshold (the others NaN where none is known)."""
        from smw import cql

        def known(value) -> float:
            return np.nan if value is None else value

        handle, session = cql.connect(self.settings)
        try:
            rows = session.execute("SELECT house_id, meter, threshold_w, normal_peak_w, min_run_s FROM thresholds")
            found = {(r.house_id, r.meter): (r.threshold_w, known(r.normal_peak_w), known(r.min_run_s))
                     for r in rows if r.threshold_w is not None}
        finally:
            handle.shutdown()
        log.info("thresholds loaded: %d meters", len(found))
        return found

    def start_refreshing(self) -> None:
        def loop():
            while not self._stop.wait(self.refresh_s):
                try:
                    fresh = self.read()
                except Exception as exc:  # noqa: BLE001 - keep the old thresholds, say why, try again
                    log.warning("thresholds not refreshed (%s); keeping the previous ones", exc)
                    continue
                with self._lock:
                    self._fresh = fresh

        threading.Thread(target=loop, name="thresholds-refresh", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def aligned(self, states: episodes.MeterStates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(threshold_w, normal_peak_w, min_run_s) per row of `states` (NaN where none), with the
        newest thresholds read."""
        with self._lock:
            fresh, self._fresh = self._fresh, None
        if fresh is not None:
            self._by_meter, self._aligned = fresh, np.empty((0, 3))
        known = len(self._aligned)
        if known < len(states):
            added = [self._by_meter.get((h, int(m)), (np.nan, np.nan, np.nan))
                     for h, m in zip(states.house_id[known:], states.meter[known:])]
            self._aligned = np.concatenate([self._aligned, np.asarray(added, dtype=np.float64).reshape(-1, 3)])
        return self._aligned[:, 0], self._aligned[:, 1], self._aligned[:, 2]


# -- the micro-batch --------------------------------------------------------------


class AlertBatches:
    """foreachBatch: a micro-batch of parsed records -> alerts, quarantine, meter state."""

    def __init__(self, settings: config.Settings, rules: episodes.Rules, sinks, thresholds: Thresholds,
                 watermark_delay_s: float, state_log: StateLog):
        self.settings = settings
        self.rules = rules
        self.sinks = sinks
        self.thresholds = thresholds
        self.watermark_delay_s = watermark_delay_s
        self.state_log = state_log
        self.states: episodes.MeterStates | None = None
        self.newest_ts_s = 0.0
        self.last_batch_id = -1
        self.totals = {"alerts": 0, "out_of_order": 0, "late": 0, "quarantined": 0, "readings": 0}
        self.last_batch: dict = {}
        self._lock = threading.Lock()

    @property
    def watermark_s(self) -> float:
        """Event time behind which readings are late: the newest reading so far less the delay."""
        return self.newest_ts_s - self.watermark_delay_s if self.newest_ts_s else 0.0

    def _restore(self, batch_id: int) -> None:
        self.states, meta = self.state_log.load(batch_id)
        self.newest_ts_s = float(meta.get("newest_ts_s", 0.0))
        self.last_batch_id = batch_id - 1

    def __call__(self, batch_df, batch_id: int) -> None:
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        started = time.perf_counter()
        if self.states is None or batch_id != self.last_batch_id + 1:
            self._restore(batch_id)
        states, rules, watermark_s = self.states, self.rules, self.watermark_s
        outcome = episodes.Outcome()
        emit = episodes._Emitter(rules, outcome)
        observation = Observation(f"alerts-batch-{batch_id}")
        counted = batch_df.observe(observation, F.count(F.when(F.col("error").isNotNull(), 1)).alias("malformed"))
        # One Spark job per batch: the batch is read from Kafka and parsed once, and each series
        # comes to the driver summarised, with its readings as Arrow arrays that only the
        # series of the meters that need them are ever unpacked from.
        table = collect_arrow(summaries(series(counted)))
        summarised_s = time.perf_counter() - started
        quarantined = int(observation.get["malformed"])
        found = table.select(SUMMARY_COLUMNS).to_pandas()
        # Readings behind the watermark are late: a series wholly behind it is dropped here;
        # a meter with a series across it is read, and its late readings dropped, below.
        on_time_series = (found["max_ts_s"] >= watermark_s).to_numpy()
        late = int(found.loc[~on_time_series, "readings"].sum())
        summary = episodes.Summary.from_frame(found[on_time_series])
        rows = states.rows(summary.house_id, summary.meter, summary.appliance)
        threshold_w, normal_peak_w, min_run_s = self.thresholds.aligned(states)
        straddling = summary.min_ts_s < watermark_s
        raise_w = episodes.raise_levels(threshold_w[rows], normal_peak_w[rows], states.appliance[rows], rules)
        run_w = episodes.run_levels(threshold_w[rows], min_run_s[rows], raise_w, rules)
        needs = straddling | episodes.plan(states, rows, summary, raise_w, rules, run_w)
        episodes.apply_summary(states, rows, summary, needs, outcome)
        if needs.any():
            needed = np.zeros(len(states), dtype=bool)
            needed[rows[needs]] = True
            series_at = np.flatnonzero(on_time_series)
            series_state = states.rows(found["house_id"].to_numpy()[series_at], found["meter"].to_numpy()[series_at])
            chosen = needed[series_state]
            readings = series_readings(table, series_at[chosen])
            # Each reading's meter row follows from its series: no lookup per reading.
            reading_rows = series_state[chosen][readings["series"].to_numpy()]
            on_time = readings["ts_s"].to_numpy() >= watermark_s
            late += int((~on_time).sum())
            readings, reading_rows = readings[on_time], reading_rows[on_time]
            readings = readings.assign(threshold_w=threshold_w[reading_rows], normal_peak_w=normal_peak_w[reading_rows],
                                       min_run_s=min_run_s[reading_rows])
            episodes.apply_readings(states, readings, rules, emit, outcome)
        if quarantined:
            self._quarantine(batch_df, batch_id, quarantined)
        if len(summary):
            self.newest_ts_s = max(self.newest_ts_s, float(summary.max_ts_s.max()))
        changed = episodes.apply_silence(states, watermark_s, rules, emit) if watermark_s > 0 else np.empty(0)
        written = self.sinks.write(outcome.alerts)
        self.state_log.save(batch_id, states, np.concatenate([rows, changed]), {"newest_ts_s": self.newest_ts_s})
        self.last_batch_id = batch_id
        readings_kept = int(summary.readings.sum())
        with self._lock:
            for name, value in (("alerts", written), ("out_of_order", outcome.out_of_order), ("late", late),
                                ("quarantined", quarantined), ("readings", readings_kept)):
                self.totals[name] += value
            self.last_batch = {"batch_id": batch_id, "alerts": written, "readings": readings_kept,
                               "meters": len(summary), "meters_read": int(needs.sum()),
                               "summary_s": summarised_s, "seconds": time.perf_counter() - started}
        if written or outcome.out_of_order or late or quarantined:
            log.info("batch %d: %d alert documents written; %d readings out of order and %d behind the "
                     "watermark ignored, %d records quarantined", batch_id, written, outcome.out_of_order, late,
                     quarantined)

    def _quarantine(self, batch_df, batch_id: int, count: int) -> None:
        """The batch's malformed records, in a folder of their own: a batch run again rewrites it."""
        rows = contract.quarantined(contract.routed(batch_df))
        rows.coalesce(1).write.mode("overwrite").partitionBy("date").parquet(
            str(zones.alerts_quarantine(self.settings) / f"batch={batch_id}"))
        log.warning("batch %d: %d records broke the message contract and were quarantined in %s", batch_id,
                    count, zones.alerts_quarantine(self.settings))


# -- progress ------------------------------------------------------------------


def phases(duration_ms: dict) -> str:
    """Where a micro-batch's time went, from its progress report: 'addBatch 0.91 s, walCommit 0.05 s, ...'."""
    shown = sorted(((name, ms) for name, ms in duration_ms.items() if name != "triggerExecution" and ms >= 10),
                   key=lambda item: -item[1])
    return ", ".join(f"{name} {ms / 1000.0:.2f} s" for name, ms in shown) or "-"


def log_progress(p) -> None:
    """Log one micro-batch of the alert query: records, readings, where its time went."""
    readings = jobs.observed(p, "readings").get("readings") or 0
    log.info("batch %d: %d Kafka records, %d readings in %.2f s (%s), newest reading %s",
             p.batchId, p.numInputRows, readings, p.batchDuration / 1000.0, phases(p.durationMs),
             p.eventTime.get("max", "-"))


# -- entry point -----------------------------------------------------------------


def start(spark, settings: config.Settings, rules: episodes.Rules, *, once: bool = False,
          trigger_interval: str = "1 second", max_offsets_per_trigger: int | None = DEFAULT_MAX_OFFSETS_PER_TRIGGER,
          watermark_delay_s: float = 120.0, threshold_refresh_s: float = 300.0, starting_offsets: str = "earliest",
          rethinkdb_retry_s: float = 5.0, sinks=None, snapshot_every: int = 500):
    """Start the alert query; returns (query, the AlertBatches that handles its micro-batches)."""
    from pyspark.sql import functions as F

    from streaming.sinks import AlertSinks

    records = contract.read_kafka(spark, settings, starting_offsets=starting_offsets,
                                  max_offsets_per_trigger=max_offsets_per_trigger)
    readings = F.aggregate(F.col("msg.series"), F.lit(0), lambda total, s: total + F.size(s["ts_s"]))
    parsed = (messages(records, float(settings.max_future_skew_s))
              # Spark's event-time statistics (newest reading per batch) for the progress reports.
              .withWatermark("event_time", f"{int(watermark_delay_s)} seconds")
              .observe("readings", F.sum(F.when(F.col("error").isNull(), readings)).alias("readings")))
    thresholds = Thresholds(settings, threshold_refresh_s)
    sinks = sinks or AlertSinks(settings, zones.alerts_spool(settings), rethinkdb_retry_s)
    sinks.feed.flush()  # alerts spooled by an earlier run go out first
    sinks.feed.start_retrying()
    thresholds.start_refreshing()
    state_log = StateLog(zones.checkpoint(settings, QUERY_NAME) / "meter-state", snapshot_every)
    batches = AlertBatches(settings, rules, sinks, thresholds, watermark_delay_s, state_log)
    query = (
        parsed.writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", str(zones.checkpoint(settings, QUERY_NAME)))
        .foreachBatch(batches)
        .trigger(**({"availableNow": True} if once else {"processingTime": trigger_interval}))
        .start()
    )
    return query, batches


def close(batches: AlertBatches) -> None:
    """Stop refreshing thresholds and close the sinks (after the query has stopped)."""
    batches.thresholds.stop()
    if not batches.sinks.feed.flush():
        log.error("%d alerts still spooled for RethinkDB in %s; they are sent on the next start",
                  batches.sinks.feed.pending(), batches.sinks.feed.spool_path)
    batches.sinks.close()


def rules_from_args(args: argparse.Namespace) -> episodes.Rules:
    return config.options_from_args(episodes.Rules, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streaming/alerts.py", description=__doc__.splitlines()[0])
    jobs.add_stream_arguments(parser, trigger="1 second", max_offsets_per_trigger=DEFAULT_MAX_OFFSETS_PER_TRIGGER,
                              starting_offsets="earliest")
    parser.add_argument("--watermark-delay-s", type=float, default=120.0,
                        help="readings this far behind the newest reading so far are late and dropped (default 120)")
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
                         "spark_shuffle_partitions", "max_future_skew_s")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    jobs.configure_logging("cassandra")
    settings = config.from_args(args)
    jobs.apply_verbose(args, log)
    rules = rules_from_args(args)
    with jobs.session("smw-alerts", settings, listener=jobs.progress_listener(log, log_progress)) as spark:
        query, batches = start(
            spark, settings, rules, once=args.once, trigger_interval=args.trigger,
            max_offsets_per_trigger=args.max_offsets_per_trigger, watermark_delay_s=args.watermark_delay_s,
            threshold_refresh_s=args.threshold_refresh_s, starting_offsets=args.starting_offsets,
            rethinkdb_retry_s=args.rethinkdb_retry_s,
        )
        queries = [query]
        if args.live_power and not args.once:
            from streaming import live_power

            queries.append(live_power.start(spark, settings))
        log.info("alerting on topic %s with %s", settings.kafka_topic, rules)
        try:
            status = jobs.serve(queries, log, "alert job")
        finally:
            close(batches)
    totals = batches.totals
    log.info("%d readings: %d alert documents written, %d readings out of order and %d behind the watermark "
             "ignored, %d records quarantined", totals["readings"], totals["alerts"], totals["out_of_order"],
             totals["late"], totals["quarantined"])
    return status


if __name__ == "__main__":
    sys.exit(main())

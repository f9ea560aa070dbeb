"""Live power: Kafka readings into Cassandra `recent_power`, for the dashboard's live graph.

    spark-submit streaming/live_power.py [--trigger "2 seconds"] [--starting-offsets latest]

The alert job starts the same query beside its own (`--live-power`, the default), so
one Spark application serves both. Readings are parsed and validated by the contract's
Spark form, `smw.contract` (malformed records are the alert job's and the landing job's
to quarantine) and written per (house, meter, UTC hour) partition; the table's TTL
(7 days) ages them out. Writes are upserts on (house, meter, hour, ts): a batch redone
after a crash writes the same rows.
"""
from __future__ import annotations

import argparse
import logging
import sys

from smw import config, contract, jobs, zones

log = logging.getLogger("streaming.live_power")

QUERY_NAME = "live-power"
TABLE = "recent_power"

def power_rows(reading_rows):
    """(house_id, meter, hour_start, ts, power_w) rows of `recent_power` from valid readings."""
    from pyspark.sql import functions as F

    ts = F.timestamp_micros((F.col("ts_s") * 1_000_000).cast("long"))
    return reading_rows.select(
        "house_id", F.col("meter").cast("int").alias("meter"), F.date_trunc("hour", ts).alias("hour_start"),
        ts.alias("ts"), F.col("power_w").cast("double").alias("power_w"))


def start(spark, settings: config.Settings, *, trigger_interval: str = "2 seconds", starting_offsets: str = "latest",
          max_offsets_per_trigger: int | None = None, once: bool = False):
    """Start the live power query on its own Kafka source; returns the query."""
    records = contract.read_kafka(spark, settings, starting_offsets=starting_offsets,
                                  max_offsets_per_trigger=max_offsets_per_trigger)
    return (
        power_rows(contract.readings(contract.routed(contract.parsed_messages(records))))
        .writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", str(zones.checkpoint(settings, QUERY_NAME)))
        # The connector's own streaming sink: no Python round trip per micro-batch.
        .format("org.apache.spark.sql.cassandra")
        .options(keyspace=settings.cassandra_keyspace, table=TABLE)
        .outputMode("append")
        .trigger(**({"availableNow": True} if once else {"processingTime": trigger_interval}))
        .start()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streaming/live_power.py", description=__doc__.splitlines()[0])
    jobs.add_stream_arguments(parser, trigger="2 seconds", starting_offsets="latest")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_topic", "data_dir", "spark_master", "cassandra_hosts",
                         "cassandra_keyspace")
    args = parser.parse_args(argv)
    jobs.configure_logging()
    settings = config.from_args(args)
    with jobs.session("smw-live-power", settings) as spark:
        query = start(spark, settings, trigger_interval=args.trigger, starting_offsets=args.starting_offsets,
                      max_offsets_per_trigger=args.max_offsets_per_trigger, once=args.once)
        log.info("writing live power from topic %s into %s.%s", settings.kafka_topic, settings.cassandra_keyspace,
                 TABLE)
        return jobs.serve([query], log, "live power job")


if __name__ == "__main__":
    sys.exit(main())

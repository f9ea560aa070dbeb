"""The one Spark session builder: connector jars, Cassandra and local defaults.

`python -m batch.nightly ...` launches its own JVM, so the builder passes the
jars fetched by `make setup` as `spark.jars` and the master from `SPARK_MASTER`.
Under `spark-submit` the JVM already exists: the jars come from the
`spark-defaults.conf` that `make setup` writes into `.deps/spark-conf` (the
Makefile exports `SPARK_CONF_DIR`), or from `--jars`, and `--master` wins.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from smw import config, jars


def under_spark_submit() -> bool:
    """True inside a driver started by spark-submit (it hands us its gateway)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_conf_dir(settings: config.Settings | None = None) -> Path:
    settings = settings or config.load()
    return Path(settings.jars_dir).parent / "spark-conf"


def base_conf(settings: config.Settings) -> dict[str, str]:
    """Settings every job shares, whatever launched it."""
    conf = {
        "spark.sql.session.timeZone": "UTC",  # the server's zone must never leak into results
        "spark.sql.shuffle.partitions": settings.spark_shuffle_partitions,
        "spark.cassandra.connection.host": settings.cassandra_hosts,
        "spark.cassandra.connection.port": settings.cassandra_port,
        "spark.sql.extensions": "com.datastax.spark.connector.CassandraSparkExtensions",
        # Unlogged batches per partition of up to 16 KiB instead of 1 KiB: the nightly's
        # hourly rollup (a partition per house-day) writes in half the time on one node.
        "spark.cassandra.output.batch.size.bytes": "16384",
        # Batches in flight per task: one node acknowledges a write after a group commit-log
        # sync, so throughput follows concurrency; 16 is where the hourly write stops gaining
        # (demo: 17.9 s at the default 5, 12.5 s at 16, 12.6 s at 32).
        "spark.cassandra.output.concurrent.writes": "16",
    }
    if settings.cassandra_username:
        conf["spark.cassandra.auth.username"] = settings.cassandra_username
        conf["spark.cassandra.auth.password"] = settings.cassandra_password
    return conf


def launch_conf(settings: config.Settings) -> dict[str, str]:
    """What only a JVM we launch ourselves can take: jars, master, memory, interpreter."""
    return {
        "spark.master": settings.spark_master,
        "spark.jars": ",".join(str(p) for p in jars.jars("spark", settings)),
        "spark.driver.memory": settings.spark_driver_memory,
        # The throughput collector: G1's concurrent threads compete with the tasks for two
        # cores (nightly over 10M readings: 24.4 s with G1, 22.6 s with ParallelGC).
        "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }


def write_spark_defaults(settings: config.Settings | None = None) -> Path:
    """Write spark-defaults.conf so that plain `spark-submit` finds the jars."""
    settings = settings or config.load()
    folder = spark_conf_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    conf = {k: v for k, v in launch_conf(settings).items() if k != "spark.master"}
    target = folder / "spark-defaults.conf"
    lines = ["# Written by `make setup` (smw.spark.write_spark_defaults); do not edit."]
    lines += [f"{key} {value}" for key, value in sorted(conf.items())]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def session(app_name: str, settings: config.Settings | None = None, conf: dict[str, str] | None = None):
    """A SparkSession with the connector jars on the classpath, for python -m and spark-submit alike."""
    # PySpark's Python workers must run the project's interpreter (pyarrow lives there).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    settings = settings or config.load()
    options = base_conf(settings)
    if under_spark_submit():
        from pyspark import SparkConf

        master = SparkConf().get("spark.master", "")
    else:
        options.update(launch_conf(settings))
        master = settings.spark_master
    if master.startswith("local"):
        # Driver RPC and UI on loopback; a cluster's executors need a reachable address.
        os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_driver_host)
        options["spark.driver.host"] = settings.spark_driver_host
        options["spark.driver.bindAddress"] = settings.spark_driver_host
    options.update(conf or {})
    builder = SparkSession.builder.appName(app_name)
    for key, value in options.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    loaded = spark.sparkContext.getConf().get("spark.jars", "")
    if "spark-cassandra-connector" not in loaded:
        raise RuntimeError(
            "the Spark connector jars are not on the classpath: run `make setup`, then either "
            f"export SPARK_CONF_DIR={spark_conf_dir(settings)} before spark-submit or pass --jars"
        )
    return spark


def stop_on_signals(queries, logger) -> None:
    """SIGTERM and SIGINT stop the streaming queries. Safe between and within batches: an
    unfinished batch is redone from its checkpoint on the next start."""
    import signal

    def stop(signum, _frame):
        logger.info("signal %d: stopping", signum)
        for query in queries:
            query.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def await_queries(queries, logger, what: str) -> int:
    """Wait until every query has stopped; 0, or 1 (logged) if one failed."""
    from pyspark.errors import StreamingQueryException

    try:
        for query in queries:
            query.awaitTermination()
    except StreamingQueryException as exc:
        logger.error("%s failed: %s", what, exc)
        return 1
    return 0

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

from smw import config, jars, ship


def _shipped_by_submit() -> bool:
    """Whether spark-submit was already given an environment archive (`--archives ...#environment`,
    as in `--deploy-mode cluster`, where the driver runs without this checkout)."""
    return under_spark_submit() and f"#{ship.ENV_NAME}" in submitted_conf().get("spark.archives", "")


def submitted_conf():
    """The configuration spark-submit gave its driver (--master, --conf, spark-defaults.conf). A SparkConf
    made before the gateway is joined is empty, so join it first (spark-submit's JVM is already up)."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return SparkConf()


def under_spark_submit() -> bool:
    """True inside a driver started by spark-submit (it hands us its gateway)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_conf_dir(settings: config.Settings | None = None) -> Path:
    settings = settings or config.load()
    return Path(settings.jars_dir).parent / "spark-conf"


def class_archive(settings: config.Settings | None = None) -> Path:
    """The JVM class-data archive of Spark's classes (`make setup` writes it: `archive_classes`)."""
    return spark_conf_dir(settings).parent / "spark-cds" / "spark.jsa"


def spark_home() -> str:
    """The Spark that spark-submit runs: SPARK_HOME, else the pyspark package's own."""
    if os.environ.get("SPARK_HOME"):
        return os.environ["SPARK_HOME"]
    import pyspark

    return os.path.dirname(pyspark.__file__)


def spark_submit() -> str:
    """The venv's spark-submit."""
    return os.path.join(os.path.dirname(sys.executable), "spark-submit")


def submit_env(settings: config.Settings | None = None) -> dict[str, str]:
    """The environment of a spark-submit child: the venv first on PATH (spark-submit finds
    pyspark through `python3`), this checkout's spark-defaults.conf, and the driver on
    loopback unless SPARK_LOCAL_IP says otherwise."""
    settings = settings or config.load()
    return {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            "SPARK_CONF_DIR": str(spark_conf_dir(settings)),
            "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", settings.spark_driver_host)}


# The throughput collector: G1's concurrent threads compete with the tasks for two cores
# (nightly over 10M readings: 24.4 s with G1, 22.6 s with ParallelGC).
DRIVER_JAVA_OPTIONS = "-XX:+UseParallelGC"


def base_conf(settings: config.Settings) -> dict[str, str]:
    """Settings every job shares, whatever launched it."""
    conf = {
        "spark.sql.session.timeZone": "UTC",  # the server's zone must never leak into results
        # DataFrames reach the driver's pandas as Arrow batches, not as pickled rows.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # The command-line tools report their own progress; Spark's stage bars would garble it.
        "spark.ui.showConsoleProgress": "false",
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
    # Reads and writes at one level (LOCAL_QUORUM by default: on a keyspace of 3 replicas a
    # job goes on through the loss of one node and reads what it wrote).
    # (an unknown level is a ValueError here, not a failed task later)
    conf["spark.cassandra.input.consistency.level"] = settings.cassandra_consistency_level
    conf["spark.cassandra.output.consistency.level"] = settings.cassandra_consistency_level
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
        # The class archive maps Spark's ~10,000 classes already parsed and verified instead
        # of loading them from the jars at every start (a trivial job: 6.7 s without, 4.1 s
        # with). A missing archive is skipped silently, a stale one with a warning.
        "spark.driver.extraJavaOptions": f"{DRIVER_JAVA_OPTIONS} -XX:SharedArchiveFile={class_archive(settings)}",
        # Spark's jars ahead of the configuration folder on the JVM class path: the archive
        # can only cover class path entries before the first non-empty folder.
        "spark.driver.extraClassPath": os.path.join(spark_home(), "jars", "*"),
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }


def spark_log(settings: config.Settings | None = None) -> Path:
    """Where Spark's own log goes (its INFO lines; the console gets its warnings only)."""
    settings = settings or config.load()
    return Path(settings.var_dir) / "log" / "spark.log"


# Spark's JVM log: warnings and errors on the console (SMW_SPARK_CONSOLE_LEVEL=info brings
# everything back), everything from INFO up in spark_log() (50 MB, then 3 older files). A few
# libraries' notices that say nothing to a user of this machine stay in the file.
LOG4J2 = """\
# Written by `make setup` (smw.spark.write_spark_defaults); do not edit.
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
rootLogger.appenderRef.console.level = ${{env:SMW_SPARK_CONSOLE_LEVEL:-warn}}
rootLogger.appenderRef.file.ref = file
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{HH:mm:ss}} %p %c{{1}}: %m%n%ex
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yyyy-MM-dd HH:mm:ss}} %p %c: %m%n%ex
# A driver started by pyspark counts as a shell (its JVM's main class is the gateway), whose
# console Spark turns to WARN with two lines saying so, unless this logger's level is the root's.
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = info
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
# "adaptive execution is not supported in streaming", "configurations supplied but not used":
# every streaming job says them on every start, and nothing is to be done about them.
logger.streamwrite.name = org.apache.spark.sql.execution.streaming.ResolveWriteToStream
logger.streamwrite.level = error
logger.kafkaconfig.name = org.apache.kafka.clients.admin.AdminClientConfig
logger.kafkaconfig.level = error
"""


def write_spark_defaults(settings: config.Settings | None = None) -> Path:
    """Write spark-defaults.conf so that plain `spark-submit` finds the jars, and
    log4j2.properties (`LOG4J2`) beside it: both are read from SPARK_CONF_DIR."""
    settings = settings or config.load()
    folder = spark_conf_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    conf = {k: v for k, v in launch_conf(settings).items() if k != "spark.master"}
    target = folder / "spark-defaults.conf"
    lines = ["# Written by `make setup` (smw.spark.write_spark_defaults); do not edit."]
    lines += [f"{key} {value}" for key, value in sorted(conf.items())]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "log4j2.properties").write_text(LOG4J2.format(log=spark_log(settings)), encoding="utf-8")
    return target


def session(app_name: str, settings: config.Settings | None = None, conf: dict[str, str] | None = None):
    """A SparkSession with the connector jars on the classpath, for python -m and spark-submit alike."""
    # PySpark's Python workers must run the project's interpreter (pyarrow lives there).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    settings = settings or config.load()
    options = base_conf(settings)
    if under_spark_submit():
        master = submitted_conf().get("spark.master", "")
    else:
        options.update(launch_conf(settings))
        master = settings.spark_master
    if master.startswith("local"):
        # Driver RPC and UI on loopback; a cluster's executors need a reachable address.
        os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_driver_host)
        options["spark.driver.host"] = settings.spark_driver_host
        options["spark.driver.bindAddress"] = settings.spark_driver_host
    shipment = None
    if master and not ship.is_local_master(master) and not _shipped_by_submit():
        # Executors elsewhere cannot read this checkout or its virtualenv: ship both (smw.ship).
        shipment = ship.prepare(settings)
        options.update(shipment.conf())
        # The executors connect back to the driver (tasks, the jars of spark.jars, both archives) at
        # SPARK_DRIVER_HOST: an address of this machine that they can reach.
        options["spark.driver.host"] = settings.spark_driver_host
        options["spark.driver.bindAddress"] = settings.spark_driver_host
    options.update(conf or {})
    builder = SparkSession.builder.appName(app_name)
    for key, value in options.items():
        builder = builder.config(key, value)
    if shipment is None:
        spark = builder.getOrCreate()
    else:
        # PySpark takes the workers' interpreter from PYSPARK_PYTHON when the context starts.
        driver_side = os.environ.get("PYSPARK_PYTHON")
        os.environ["PYSPARK_PYTHON"] = ship.EXECUTOR_PYTHON
        try:
            spark = builder.getOrCreate()
        finally:
            if driver_side is None:
                os.environ.pop("PYSPARK_PYTHON", None)
            else:
                os.environ["PYSPARK_PYTHON"] = driver_side
        spark.sparkContext.addPyFile(str(shipment.code))
    if os.environ.get("SPARK_LOG_LEVEL"):
        # Otherwise log4j2.properties decides: warnings on the console, INFO in spark_log().
        spark.sparkContext.setLogLevel(os.environ["SPARK_LOG_LEVEL"])
    loaded = spark.sparkContext.getConf().get("spark.jars", "")
    if "spark-cassandra-connector" not in loaded:
        raise RuntimeError(
            "the Spark connector jars are not on the classpath: run `make setup`, then either "
            f"export SPARK_CONF_DIR={spark_conf_dir(settings)} before spark-submit or pass --jars"
        )
    return spark


def archive_classes(settings: config.Settings | None = None) -> Path:
    """Run a small job that touches what the project's jobs use (Arrow, Parquet, shuffles,
    Python workers) in a JVM that writes the classes it loaded to `class_archive()` on exit.

    The archive is written beside and renamed into place only once the JVM has exited
    cleanly: a truncated archive would crash every JVM that maps it.
    """
    import subprocess

    settings = settings or config.load()
    target = class_archive(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    command = [spark_submit(), "--master", "local[2]",
               "--conf", f"spark.driver.extraJavaOptions={DRIVER_JAVA_OPTIONS} -XX:ArchiveClassesAtExit={partial}",
               os.path.abspath(__file__), "exercise"]
    result = subprocess.run(command, env=submit_env(settings), capture_output=True, text=True)
    if result.returncode != 0 or not partial.exists() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the class archive was not written (exit {result.returncode}):\n{result.stderr[-3000:]}")
    partial.replace(target)
    return target


def _exercise() -> None:
    """The training job of `archive_classes` (run under spark-submit)."""
    import tempfile

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    spark = session("smw-class-archive")
    rows = 20_000
    frame = pd.DataFrame({
        "house_id": np.where(np.arange(rows) % 2 == 0, "h1", "h2"), "meter": (np.arange(rows) % 5).astype("int32"),
        "label": "mains", "appliance": "mains", "ts_s": np.arange(rows, dtype=np.float64),
        "power_w": np.linspace(0.0, 1000.0, rows), "date": np.where(np.arange(rows) < rows // 2, "2024-04-01", "2024-04-02"),
    })
    with tempfile.TemporaryDirectory(prefix="smw-class-archive-") as folder:
        spark.createDataFrame(frame).write.partitionBy("date").parquet(folder + "/readings")
        readings = spark.read.parquet(folder + "/readings")
        names = readings.select("house_id", "meter", "label", "appliance").distinct().toPandas()

        def per_partition(batches):
            for batch in batches:
                yield pa.RecordBatch.from_pydict({"n": [batch.num_rows]}, schema=pa.schema([("n", pa.int64())]))

        from pyspark.sql import functions as F

        counted = readings.repartition(4, "house_id", "meter").mapInArrow(per_partition, "n long").cache()
        counted.count()
        totals = readings.groupBy("house_id", "date").agg(F.sum("power_w").alias("energy"), F.min("ts_s"))
        joined = totals.join(F.broadcast(spark.createDataFrame(names)), "house_id")
        joined.count()
        joined.write.mode("overwrite").parquet(folder + "/out")
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m smw.spark", description="Spark set-up steps of `make setup`.")
    parser.add_argument("step", choices=["defaults", "archive-classes", "exercise"],
                        help="defaults: write spark-defaults.conf; archive-classes: write the JVM class archive; "
                             "exercise: the job archive-classes runs")
    args = parser.parse_args(argv)
    if args.step == "defaults":
        print(write_spark_defaults())
    elif args.step == "archive-classes":
        print(archive_classes())
    else:
        _exercise()
    return 0


if __name__ == "__main__":
    sys.exit(main())

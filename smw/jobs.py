"""The Spark job runner every job's `main` uses: logging, the session, progress, signals, waiting.

    def main(argv=None):
        args = parser.parse_args(argv)
        jobs.configure_logging()
        with jobs.session("smw-land", config.from_args(args), listener=progress) as spark:
            return jobs.serve([start(spark, ...)], log, "landing")

SIGTERM and SIGINT stop a streaming job cleanly between or within batches: an
unfinished batch is redone from its checkpoint on the next start.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Callable

from smw import config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(*quiet: str, level: int = logging.INFO) -> None:
    """Log to stderr with timestamps; py4j's chatter and the `quiet` loggers only from WARNING up."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for name in ("py4j", *quiet):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def quiet_logger(name: str):
    """Silence a library's logger for a block: clients that log each failed connection attempt
    (with a traceback) before they raise, where the caller's own one-line error says it all."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def session(app_name: str, settings: config.Settings, listener=None, conf: dict[str, str] | None = None):
    """A SparkSession (`smw.spark.session`) stopped on exit, with an optional query listener."""
    from smw import spark as spark_builder

    from py4j.protocol import Py4JError

    spark = spark_builder.session(app_name, settings, conf)
    if listener is not None:
        spark.streams.addListener(listener)
    try:
        yield spark
    except Exception as exc:
        from smw import kafka_clients

        if isinstance(exc, kafka_clients.KafkaAuthError):  # one line, no traceback
            raise SystemExit(f"error: {exc}") from None
        raise
    finally:
        try:
            spark.stop()
        except (Py4JError, ConnectionError):
            # A SIGTERM to the whole process group (a service manager's stop) ends the JVM too: Py4J
            # then fails on its open connection, or is refused a new one.
            logging.getLogger(__name__).info("Spark had already stopped")


def progress_listener(logger: logging.Logger, on_progress: Callable):
    """A listener that logs each query's start, failure and stop, and hands every progress
    report (`StreamingQueryProgress`) to `on_progress`."""
    from pyspark.sql.streaming import StreamingQueryListener

    class Progress(StreamingQueryListener):
        def onQueryStarted(self, event):
            logger.info("query %s started (id %s)", event.name, event.id)

        def onQueryProgress(self, event):
            on_progress(event.progress)

        def onQueryIdle(self, event):  # Spark 3.5+
            logger.debug("query %s idle", event.id)

        def onQueryTerminated(self, event):
            if event.exception:
                logger.error("query %s failed: %s", event.id, event.exception)
            else:
                logger.info("query %s stopped", event.id)

    return Progress()


def add_verbose(parser) -> None:
    """--verbose: Spark's own log on the console as well (it always goes to var/log/spark.log)."""
    parser.add_argument("--verbose", action="store_true",
                        help="Spark's own log (INFO) on the console too; by default only its warnings, the "
                             "rest in var/log/spark.log (under spark-submit: SMW_SPARK_CONSOLE_LEVEL=info)")


def apply_verbose(args, logger: logging.Logger) -> None:
    """Before the session starts: a JVM this driver launches reads the console level at start."""
    if not getattr(args, "verbose", False):
        return
    from smw import spark as spark_builder

    if spark_builder.under_spark_submit():
        logger.warning("--verbose cannot reach a JVM spark-submit has started; set SMW_SPARK_CONSOLE_LEVEL=info "
                       "before spark-submit (make ... VERBOSE=1)")
    os.environ["SMW_SPARK_CONSOLE_LEVEL"] = "info"


def add_stream_arguments(parser, *, trigger: str, max_offsets_per_trigger: int | None = None,
                         starting_offsets: str | None = None) -> None:
    """The flags every streaming job takes: --once, --trigger, --max-offsets-per-trigger,
    --verbose and, for a job that may start from the latest offsets, --starting-offsets."""
    add_verbose(parser)
    parser.add_argument("--once", action="store_true", help="process everything available now, then stop")
    parser.add_argument("--trigger", default=trigger, help=f"micro-batch interval (default {trigger})")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=max_offsets_per_trigger,
                        help="Kafka records (each a batch of readings) per micro-batch "
                             f"(default {max_offsets_per_trigger or 'no limit'})")
    if starting_offsets:
        parser.add_argument("--starting-offsets", default=starting_offsets, choices=("earliest", "latest"),
                            help=f"Kafka offsets of a first start without checkpoint (default {starting_offsets})")


def observed(progress, name: str) -> dict:
    """The metrics a query's `observe(name, ...)` reported in this progress (empty if none)."""
    row = progress.observedMetrics.get(name)
    return row.asDict() if row is not None else {}


def stop_on_signals(logger: logging.Logger):
    """SIGTERM and SIGINT ask the streaming queries to stop; returns the event they set.

    The handler only sets the event: it runs on the main thread, which is usually inside a
    py4j call waiting for the JVM, and a second py4j call from there would be a reentrant
    read of the same socket. `await_queries` stops the queries once it sees the event.
    """
    import signal
    import threading

    stopping = threading.Event()

    def stop(signum, _frame):
        if stopping.is_set():
            # A second signal: the user does not want to wait. The checkpoint makes this safe too.
            logger.warning("signal %d again: exiting now", signum)
            os._exit(128 + signum)
        logger.info("signal %d: stopping (the current batch is redone on the next start)", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Once stopping, a JVM that ended with the same signal makes py4j log each broken call
    # with a traceback; `await_queries` says what happened in one line.
    for name in ("py4j.clientserver", "py4j.java_gateway", ""):  # "": py4j logs some on the root logger
        logging.getLogger(name).addFilter(lambda _record: not stopping.is_set())
    return stopping


def between_batches(query, timeout_s: float = 10.0) -> None:
    """Wait (up to `timeout_s`) until the query is between micro-batches: stopped there, it
    kills no running task (Spark logs each killed task as an error with its stack)."""
    deadline = time.monotonic() + timeout_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.1)


def await_queries(queries, logger: logging.Logger, what: str, stopping=None, poll_s: float = 0.5) -> int:
    """Wait until every query has stopped, or `stopping` is set (then stop them); 0, or 1
    (logged) if one failed."""
    from py4j.protocol import Py4JError
    from pyspark.errors import StreamingQueryException

    try:
        while True:
            active = [query for query in queries if query.isActive]
            if stopping is not None and stopping.is_set():
                for query in active:
                    between_batches(query)
                    query.stop()
                break
            if not active:
                break
            active[0].awaitTermination(poll_s)
        for query in queries:  # raises the failure of a query that ended with one
            query.awaitTermination()
    except StreamingQueryException as exc:
        said = str(exc)
        if "SaslAuthenticationException" in said or "Authentication failed" in said:
            # Spark's Kafka consumers (on the executors) were refused: the credentials, not the job.
            logger.error("%s failed: Kafka refused the SASL credentials (%s); check KAFKA_SASL_USERNAME and "
                         "KAFKA_SASL_PASSWORD (and KAFKA_SASL_MECHANISM, KAFKA_SECURITY_PROTOCOL)", what,
                         _first_line_with(said, "Authentication failed"))
        else:
            logger.error("%s failed: %s", what, exc)
        return 1
    except (Py4JError, ConnectionError):
        if stopping is None or not stopping.is_set():
            raise
        # The signal went to the whole process group (a service manager's stop, `kill -- -PGID`):
        # the JVM ended with it. The checkpoint resumes the unfinished batch.
        logger.info("%s stopped (Spark's JVM ended with the same signal)", what)
        return 0
    logger.info("%s stopped", what)
    return 0


def _first_line_with(text: str, needle: str) -> str:
    for line in text.splitlines():
        if needle in line:
            return line.strip()[:300]
    return text.splitlines()[0][:300] if text else ""


def serve(queries, logger: logging.Logger, what: str) -> int:
    """Run streaming queries until they end or a signal stops them; the exit status."""
    return await_queries(queries, logger, what, stop_on_signals(logger))

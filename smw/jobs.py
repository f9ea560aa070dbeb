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

    spark = spark_builder.session(app_name, settings, conf)
    if listener is not None:
        spark.streams.addListener(listener)
    try:
        yield spark
    finally:
        spark.stop()


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


def add_stream_arguments(parser, *, trigger: str, max_offsets_per_trigger: int | None = None,
                         starting_offsets: str | None = None) -> None:
    """The flags every streaming job takes: --once, --trigger, --max-offsets-per-trigger and,
    for a job that may start from the latest offsets, --starting-offsets."""
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


def stop_on_signals(queries, logger: logging.Logger) -> None:
    """SIGTERM and SIGINT stop the streaming queries."""
    import signal

    def stop(signum, _frame):
        logger.info("signal %d: stopping", signum)
        for query in queries:
            query.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def await_queries(queries, logger: logging.Logger, what: str) -> int:
    """Wait until every query has stopped; 0, or 1 (logged) if one failed."""
    from pyspark.errors import StreamingQueryException

    try:
        for query in queries:
            query.awaitTermination()
    except StreamingQueryException as exc:
        logger.error("%s failed: %s", what, exc)
        return 1
    return 0


def serve(queries, logger: logging.Logger, what: str) -> int:
    """Run streaming queries until they end or a signal stops them; the exit status."""
    stop_on_signals(queries, logger)
    return await_queries(queries, logger, what)

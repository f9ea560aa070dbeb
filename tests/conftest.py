"""Fixtures shared by every test folder.

Integration tests talk to the services started by `make up` (`make test` starts
them). They never skip: a missing service is a failure that says how to start it.
Each test run works in its own keyspace, RethinkDB database and Kafka topics, so
it never touches the product's data.
"""
from __future__ import annotations

import os
import uuid

import pytest

# pyspark.testing imports pandas-on-Spark, which wants this set before pyspark loads.
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")

from smw import config, cql, rethink
from tools import services

TEST_NAMESPACE = "smw_test"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cluster: starts Spark masters, workers or brokers of its own and takes minutes; "
                   "left out unless the -m expression names it (pytest -m cluster)")


def pytest_collection_modifyitems(config, items):
    """Run tests that restart shared services after all the others; leave out the `cluster` tests
    unless the -m expression names them (`pytest -m cluster`)."""
    if "cluster" not in (config.getoption("markexpr") or ""):
        skipped = [item for item in items if item.get_closest_marker("cluster") is not None]
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = [item for item in items if item.get_closest_marker("cluster") is None]
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


@pytest.fixture(scope="session")
def settings() -> config.Settings:
    """Local-stack settings pointed at the test keyspace and database."""
    return config.load().replace(cassandra_keyspace=TEST_NAMESPACE, rethinkdb_db=TEST_NAMESPACE)


def require(service: services.Service) -> None:
    if not service.ready():
        pytest.fail(
            f"{service.name} is not answering on {service.host}:{service.port}: "
            "start the local stack with `make up` (make test does this)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def kafka_ready(settings):
    require(services.Kafka(settings))
    return settings


# Tables only the tests use. Created with the schema, before any test runs Spark: the
# Spark Cassandra Connector caches table metadata and may not see a table created
# a moment before it writes to it.
TEST_TABLES = (
    "CREATE TABLE IF NOT EXISTS spark_roundtrip ("
    " house_id text, meter int, ts_s double, power_w double, PRIMARY KEY ((house_id), meter, ts_s))",
)


@pytest.fixture(scope="session")
def cassandra_session(settings):
    """A driver session in the test keyspace, with the product schema and the test tables applied."""
    require(services.Cassandra(settings))
    handle, session = cql.connect(settings, keyspace=False)
    cql.apply_schema(session, settings)
    for statement in TEST_TABLES:
        session.execute(statement)
    yield session
    handle.shutdown()


@pytest.fixture(scope="session")
def rethinkdb_ready(settings):
    from smw import init

    require(services.RethinkDB(settings))
    init.create_rethinkdb(settings)
    return settings


@pytest.fixture
def rethinkdb_conn(rethinkdb_ready):
    with rethink.connection(rethinkdb_ready) as conn:
        yield conn


@pytest.fixture
def topic(kafka_ready):
    """A fresh Kafka topic with 3 partitions, deleted afterwards."""
    from smw.init import create_topics, delete_topic

    name = f"test-{uuid.uuid4().hex[:12]}"
    create_topics(kafka_ready, {name: 3})
    yield name
    delete_topic(kafka_ready, name)


@pytest.fixture(scope="session")
def spark(settings):
    """One local SparkSession for the whole run, with the connector jars."""
    from smw import spark as spark_builder

    session = spark_builder.session(
        "smw-tests",
        settings.replace(spark_master="local[2]", spark_shuffle_partitions="2"),
        conf={"spark.ui.enabled": "false"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sigkill_after_commits():
    """sigkill_after_commits(command, commits, batches, log_path): run a streaming job's `command`
    in its own session, its output in `log_path`, until its checkpoint's `commits` folder holds
    `batches` committed batches (180 s at most), then SIGKILL it and every process it started.
    Fails with the end of the log if the job exits first or is slower."""
    import signal
    import subprocess
    import time

    def run(command, commits, batches, log_path) -> None:
        with open(log_path, "wb") as log_file:
            job = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=config.ROOT,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and len(list(commits.glob("[0-9]*"))) < batches:
                assert job.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.2)
            assert len(list(commits.glob("[0-9]*"))) >= batches, log_path.read_text()[-3000:]
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()

    return run

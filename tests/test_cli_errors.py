"""A user's mistake on the command line is one clear line on stderr and a non-zero exit:
no usage dump, no traceback, no library log lines before it."""
import subprocess
import sys

import pytest

from smw import config

# A loopback address where nothing listens: "unreachable" without leaving the machine.
UNREACHABLE_HOST = "127.0.0.9"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=config.ROOT, capture_output=True, text=True,
                          timeout=120)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    subprocess.run([sys.executable, "-m", "datasets.generate", "--houses", "1", "--days", "1", "--period-s", "300",
                    "--out", str(out), "--no-progress"], cwd=config.ROOT, check=True, capture_output=True, timeout=120)
    return out


def test_replay_from_a_missing_dataset(tmp_path):
    one_line_error(run("ingest.replay", "--source", f"parquet:{tmp_path}/nope", "--no-progress"),
                   f"{tmp_path}/nope does not exist", "datasets.generate")


def test_replay_to_an_unreachable_kafka(dataset):
    one_line_error(run("ingest.replay", "--source", f"parquet:{dataset}/readings", "--kafka-bootstrap",
                       "127.0.0.1:1", "--no-progress"), "cannot reach Kafka at 127.0.0.1:1", "KAFKA_BOOTSTRAP")


def test_houses_from_a_missing_file(tmp_path):
    one_line_error(run("batch.houses", str(tmp_path / "houses.parquet")), "no such file", "datasets.generate")


def test_houses_into_an_unreachable_cassandra(dataset):
    one_line_error(run("batch.houses", str(dataset / "houses.parquet"), "--cassandra-hosts", UNREACHABLE_HOST),
                   f"Cassandra is unreachable at {UNREACHABLE_HOST}:9042", "CASSANDRA_HOSTS")


def test_init_against_services_that_are_not_there():
    one_line_error(run("smw.init", "--only", "kafka", "--kafka-bootstrap", "127.0.0.1:1"),
                   "initialisation failed", "NoBrokersAvailable", "make up")
    one_line_error(run("smw.init", "--only", "cassandra", "--cassandra-hosts", UNREACHABLE_HOST),
                   f"Cassandra is unreachable at {UNREACHABLE_HOST}:9042")


@pytest.mark.integration
def test_houses_into_a_keyspace_that_does_not_exist(dataset, cassandra_session):
    one_line_error(run("batch.houses", str(dataset / "houses.parquet"), "--cassandra-keyspace", "no_such_keyspace"),
                   "keyspace 'no_such_keyspace' does not exist", "make init")


@pytest.mark.integration
def test_replay_to_a_topic_that_does_not_exist(dataset, kafka_ready):
    result = run("ingest.replay", "--source", f"parquet:{dataset}/readings", "--kafka-topic", "no-such-topic-here",
                 "--no-progress")
    one_line_error(result, "topic 'no-such-topic-here' does not exist", "make init")

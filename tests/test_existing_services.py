"""Setup against services that are already there: `make init` and the job targets start a local
service only when the configuration places it on a loopback address (and LOCAL_SERVICES is not 0),
never one configured elsewhere, and a service that cannot be reached is one clear line."""
import os
import subprocess
import sys

import pytest

from smw import config

# TEST-NET-1 (RFC 5737): an address that is not this machine and answers nothing.
ELSEWHERE = "192.0.2.1"
REMOTE = {"KAFKA_BOOTSTRAP": f"{ELSEWHERE}:9092", "CASSANDRA_HOSTS": ELSEWHERE, "RETHINKDB_HOST": ELSEWHERE}


def run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=config.ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr without make's own closing line."""
    return [line for line in result.stderr.strip().splitlines() if not line.startswith("make")]


@pytest.mark.parametrize(("service", "settings", "local"), [
    ("kafka", {"kafka_bootstrap": "127.0.0.1:9092"}, True),
    ("kafka", {"kafka_bootstrap": "localhost:9092,127.0.0.2:9093"}, True),
    ("kafka", {"kafka_bootstrap": "127.0.0.1:9092,broker-2:9092"}, False),
    ("kafka", {"kafka_bootstrap": "[::1]:9092"}, True),
    ("cassandra", {"cassandra_hosts": "10.0.0.5"}, False),
    ("cassandra", {"cassandra_hosts": "127.0.0.1"}, True),
    ("rethinkdb", {"rethinkdb_host": "rethink.example"}, False),
])
def test_a_service_is_local_only_on_loopback_addresses(service, settings, local):
    assert config.Settings(**settings).is_local(service) is local


def test_ensure_starts_nothing_configured_elsewhere(tmp_path):
    result = run([sys.executable, "-m", "tools.services", "ensure"], SMW_VAR_DIR=str(tmp_path), **REMOTE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and all("not a local address, not started here" in line for line in lines), lines
    assert {"KAFKA_BOOTSTRAP", "CASSANDRA_HOSTS", "RETHINKDB_HOST"} <= set(" ".join(lines).replace("(", " ")
                                                                             .replace(")", " ").split())
    assert not list(tmp_path.iterdir())  # no pid file, no data folder: nothing was started


def test_ensure_with_local_services_off_starts_nothing(tmp_path):
    result = run([sys.executable, "-m", "tools.services", "ensure"], SMW_VAR_DIR=str(tmp_path), LOCAL_SERVICES="0",
                 KAFKA_BOOTSTRAP="127.0.0.1:1", CASSANDRA_PORT="1", RETHINKDB_PORT="1")
    assert result.returncode == 0 and not result.stdout.strip(), result
    assert not list(tmp_path.iterdir())


def test_a_bad_local_services_value_is_one_line(tmp_path):
    result = run([sys.executable, "-m", "tools.services", "ensure"], SMW_VAR_DIR=str(tmp_path), LOCAL_SERVICES="yes")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: LOCAL_SERVICES='yes': use auto (or 1) or 0"]


def test_init_against_hosts_elsewhere_names_the_setting_not_make_up():
    result = run([sys.executable, "-m", "smw.init", "--only", "kafka", "--kafka-bootstrap", f"{ELSEWHERE}:9092"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: initialisation failed: kafka at {ELSEWHERE}:9092"), lines
    assert "KAFKA_BOOTSTRAP" in lines[0] and "make up" not in lines[0]
    result = run([sys.executable, "-m", "smw.init", "--only", "rethinkdb", "--rethinkdb-port", "1"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "rethinkdb at 127.0.0.1:1" in lines[0], result.stderr
    assert "make up" in lines[0]  # the local stack's address: start it


def test_replication_settings_are_checked_before_connecting():
    result = run([sys.executable, "-m", "smw.init", "--only", "kafka", "--kafka-bootstrap", "127.0.0.1:1",
                  "--kafka-replication-factor", "2", "--kafka-min-insync-replicas", "3"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: KAFKA_MIN_INSYNC_REPLICAS (3) must be between 1 and KAFKA_REPLICATION_FACTOR (2): "
        "acks=all could never be satisfied"]


def test_make_batch_pointed_elsewhere_starts_nothing_and_says_what_failed(tmp_path):
    result = run(["make", "--no-print-directory", "batch"], SMW_VAR_DIR=str(tmp_path), **REMOTE)
    assert result.returncode != 0
    assert "started it" not in result.stdout and "(pid" not in result.stdout, result.stdout
    assert result.stdout.count("not a local address, not started here") == 3, result.stdout
    assert not list(tmp_path.iterdir())
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"error: initialisation failed: kafka at {ELSEWHERE}:9092"), lines


@pytest.mark.integration
def test_make_init_uses_local_services_it_did_not_start(tmp_path, kafka_ready, cassandra_session, rethinkdb_ready):
    # An empty var folder: no pid file says these services are ours, but they answer on their addresses.
    result = run(["make", "--no-print-directory", "init"], SMW_VAR_DIR=str(tmp_path), CASSANDRA_KEYSPACE="smw_test",
                 RETHINKDB_DB="smw_test")
    assert result.returncode == 0, result.stderr
    using = [line for line in result.stdout.splitlines() if "(not started by make up): using it" in line]
    assert [line.split()[0] for line in using] == ["kafka", "cassandra", "rethinkdb"], result.stdout
    assert "topics created" in result.stdout and "keyspace smw_test" in result.stdout
    assert not (tmp_path / "kafka").exists()

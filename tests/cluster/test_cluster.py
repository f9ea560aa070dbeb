"""The multi-node stack of `make cluster-up`: idempotent start, every node seen, credentials enforced,
Spark workers that cannot read the checkout, one node killed and started again.

Needs the cluster running (`make test-cluster` starts it, then runs these). Marked `cluster`, which
`make test` leaves out.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid

import pytest

from smw import config
from tests.cluster import faults
from tools import cluster as cluster_tool

pytestmark = pytest.mark.cluster

PROBE_JOB = config.ROOT / "tests" / "cluster" / "checkout_probe_job.py"


def run_tool(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cluster", *args], cwd=config.ROOT, capture_output=True,
                          text=True, timeout=timeout_s)


def test_up_twice_is_idempotent(cluster):
    before = {node.name: node.pid() for node in cluster.nodes}
    for _ in range(2):
        result = run_tool("up")
        assert result.returncode == 0, result.stderr
        for node in cluster.nodes:
            assert f"{node.name:<10} ready on {node.host}:{node.port} (already running, pid {before[node.name]})" \
                in result.stdout
        assert " started (pid" not in result.stdout
        assert "cluster    whole in" in result.stdout
    assert {node.name: node.pid() for node in cluster.nodes} == before

    # What a client needs, readable by its owner only.
    mode = stat.S_IMODE(cluster.env_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    env = cluster_tool.read_env_file(cluster.env_file)
    assert env["KAFKA_BOOTSTRAP"] == "127.0.0.1:19092,127.0.0.2:19092,127.0.0.3:19092"
    assert (env["KAFKA_SECURITY_PROTOCOL"], env["KAFKA_SASL_MECHANISM"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert env["KAFKA_SASL_USERNAME"] and env["KAFKA_SASL_PASSWORD"]
    assert (env["KAFKA_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    assert (env["CASSANDRA_HOSTS"], env["CASSANDRA_PORT"]) == ("127.0.0.1,127.0.0.2,127.0.0.3", "19042")
    assert env["CASSANDRA_USERNAME"] and env["CASSANDRA_PASSWORD"]
    assert env["CASSANDRA_REPLICATION"] == "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
    assert env["SPARK_MASTER"] == "spark://127.0.0.1:17077" and env["LOCAL_SERVICES"] == "0"
    assert stat.S_IMODE(cluster.internal_file.stat().st_mode) == 0o600
    # The file is shell syntax: sourced, it gives the same values.
    sourced = subprocess.run(["bash", "-c", f"set -a; . {cluster.env_file}; set +a; env -0"], capture_output=True,
                             check=True).stdout.decode().split("\0")
    assert {k: v for k, _, v in (line.partition("=") for line in sourced) if k in env} == env


def test_three_brokers_three_cassandra_nodes_two_workers(cluster):
    creds = cluster.credentials()
    assert cluster_tool.kafka_brokers(cluster.kafka_bootstrap, creds.kafka_client) == [1, 2, 3]
    for node in cluster.kafka:  # each broker answers the clients' user itself
        assert cluster_tool.broker_metadata(f"{node.host}:{node.port}", creds.kafka_client) == [1, 2, 3]
    for node in cluster.cassandra:
        assert cluster_tool.cassandra_view(node.host, node.port, creds.cassandra_admin) == (3, 3)
        handle, session = cluster_tool.cassandra_session([node.host], node.port, creds.cassandra_client,
                                                         only_first=True)
        try:
            local = session.execute("SELECT data_center, rack FROM system.local").one()
            peers = {row.peer for row in session.execute("SELECT peer FROM system.peers_v2")}
        finally:
            handle.shutdown()
        assert (local.data_center, local.rack) == ("dc1", f"rack{node.index}")
        assert peers == {other.host for other in cluster.cassandra if other is not node}
    state = cluster.spark_master.master_state()
    alive = sorted((w["host"], w["port"]) for w in state["workers"] if w["state"] == "ALIVE")
    assert alive == [("127.0.0.2", 17078), ("127.0.0.3", 17078)]


def test_status_shows_every_node_ready_and_the_workers_blind(cluster):
    result = run_tool("status", timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    for node in cluster.nodes:
        assert node.name in lines and " ready " in lines[node.name] and "MiB" in lines[node.name]
    for worker in cluster.spark_workers:
        assert f"sees {config.ROOT} empty" in lines[worker.name]
    assert "whole: 3 brokers, 3 Cassandra nodes UP, 2 Spark workers ALIVE" in result.stdout


def test_default_topic_settings(cluster):
    """A topic created without a replication factor gets 3 replicas; every broker's min.insync.replicas is 2."""
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    from smw import kafka_clients

    settings = cluster_tool.kafka_settings(cluster.kafka_bootstrap, cluster.credentials().kafka_client)
    admin = kafka_clients.admin(settings, request_timeout_ms=15000)
    name = f"cluster-test-{uuid.uuid4().hex[:8]}"
    try:
        admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=-1)], timeout_ms=15000)
        deadline = time.monotonic() + 30
        while not (partitions := admin.describe_topics([name])[0]["partitions"]) and time.monotonic() < deadline:
            time.sleep(0.2)  # the broker that answers may not have the new topic's metadata yet
        assert sorted(len(p["replicas"]) for p in partitions) == [3, 3]
        for broker in ("1", "2", "3"):
            answer = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker)])[0]
            configs = {entry[0]: entry[1] for entry in answer.resources[0][4]}
            assert (configs["min.insync.replicas"], configs["default.replication.factor"]) == ("2", "3")
    finally:
        admin.delete_topics([name])
        admin.close()


def test_a_wrong_kafka_password_is_refused(cluster):
    creds = cluster.credentials()
    user, password = creds.kafka_client
    for login in ((user, password + "-wrong"), ("nobody", password), (creds.kafka_broker.user, password)):
        started = time.monotonic()
        with pytest.raises(cluster_tool.AuthRefused) as refused:
            cluster_tool.broker_metadata(cluster.kafka_bootstrap[0], login)
        assert time.monotonic() - started < 5
        message = str(refused.value)
        assert f"refused the SASL/SCRAM-SHA-512 login of user {login[0]!r}" in message
        assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in message  # the broker's own words


def test_a_kafka_client_without_sasl_is_cut_off(cluster):
    """A request sent without the SASL handshake first: the broker closes the connection unanswered."""
    import socket

    node = cluster.kafka[0]
    with socket.create_connection((node.host, node.port), timeout=5) as raw:
        # MetadataRequest v1 for no topics: api key 3, version 1, correlation id 7, client id "test".
        body = b"\x00\x03\x00\x01\x00\x00\x00\x07\x00\x04test\x00\x00\x00\x00"
        raw.sendall(len(body).to_bytes(4, "big") + body)
        assert raw.recv(4) == b""


def test_a_wrong_cassandra_password_is_refused(cluster):
    creds = cluster.credentials()
    node = cluster.cassandra[0]
    user, password = creds.cassandra_client
    logins = [(user, password + "-wrong"), cluster_tool.DEFAULT_CASSANDRA_SUPERUSER]
    for login in logins:
        with pytest.raises(cluster_tool.AuthRefused) as refused:
            cluster_tool.cassandra_session([node.host], node.port, login)
        message = str(refused.value)
        assert f"refused the credentials of role {login[0]!r}" in message
        assert f"Provided username {login[0]} and/or password are incorrect" in message  # Cassandra's own words
    # The clients' role is no superuser: it cannot read the role table (the administrator can).
    handle, session = cluster_tool.cassandra_session([node.host], node.port, creds.cassandra_client)
    try:
        from cassandra import Unauthorized

        with pytest.raises(Unauthorized):
            session.execute("SELECT role FROM system_auth.roles")
    finally:
        handle.shutdown()


def executor_python() -> str:
    """An interpreter outside the checkout for the executors (the venv lives inside it)."""
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    assert not python.startswith(str(config.ROOT) + os.sep), f"{python} is inside the checkout"
    return python


def test_a_worker_cannot_read_the_checkout(cluster):
    target = config.ROOT / "README.md"
    assert target.read_bytes()  # the driver (this machine, outside the namespaces) reads it
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYARROW_IGNORE_TIMEZONE": "1"}
    result = subprocess.run([sys.executable, str(PROBE_JOB), cluster.spark_master.url, str(target), executor_python()],
                            capture_output=True, text=True, timeout=300, env=env, cwd=config.ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(answers) == 4
    assert {answer["host"] for answer in answers} == {"127.0.0.2", "127.0.0.3"}  # an executor on each worker
    for answer in answers:
        assert answer["outcome"] == "FileNotFoundError", answer
        assert answer["root_entries"] == [], answer  # the checkout's path is an empty tmpfs
        assert answer["cwd"].startswith(str(cluster.cs.home_dir)), answer
        assert answer["host"] in {"127.0.0.2", "127.0.0.3"}, answer


def gone(pid: int) -> bool:
    """No such process, or only its exit status left for its parent (init reaps it soon)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            status = handle.read()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@pytest.mark.disruptive
def test_kill_and_start_one_node_of_each_kind(cluster):
    """SIGKILL a broker, a Cassandra node and a worker; the cluster says what is missing; each comes
    back with its data (same Kafka cluster id and Cassandra host id) and the cluster is whole again."""
    creds = cluster.credentials()
    victim = cluster.cassandra[2]
    handle, session = cluster_tool.cassandra_session([victim.host], victim.port, creds.cassandra_client,
                                                     only_first=True)
    host_id = session.execute("SELECT host_id FROM system.local").one().host_id
    handle.shutdown()
    meta = (cluster.kafka[2].data_dir / "meta.properties").read_text()

    names = ["kafka-3", "cassandra-3", "spark-worker-2"]
    with faults.whole_again(cluster):  # also when a check fails: the tests after this one need every node
        pids = {name: cluster_tool.kill(name, cluster) for name in names}
        for name, pid in pids.items():
            assert cluster.node(name).pid() is None
            assert gone(pid), f"{name} (pid {pid}) still runs"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            problems = [what for what, _nodes in cluster.missing(cluster.health())]
            if len(problems) >= 3 and any("[1, 2]" in p for p in problems):
                break
            time.sleep(1)
        assert any("cassandra-3 is not running" in p for p in problems), problems
        assert any("spark:" in p for p in problems) and any("kafka:" in p for p in problems), problems

        for name in names:
            assert cluster_tool.start(name, cluster, timeout_s=240) == cluster.node(name).pid()
        cluster.wait_whole(240)
    assert (cluster.kafka[2].data_dir / "meta.properties").read_text() == meta
    handle, session = cluster_tool.cassandra_session([victim.host], victim.port, creds.cassandra_client,
                                                     only_first=True)
    try:
        assert session.execute("SELECT host_id FROM system.local").one().host_id == host_id
    finally:
        handle.shutdown()

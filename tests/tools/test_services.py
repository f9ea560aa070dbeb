"""The launcher: idempotent up/down, stale pid files, restart after kill -9."""
import os
import signal
import socket
import time
import uuid

import pytest

from smw import config, cql
from tools import services

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_rethinkdb(tmp_path):
    """A second reqlite of our own, in a temporary var dir on a free port."""
    settings = config.load().replace(var_dir=str(tmp_path / "var"), rethinkdb_port=str(free_port()))
    service = services.RethinkDB(settings)
    yield service
    service.stop(timeout_s=10)


def listening(service) -> bool:
    return services._port_open(service.host, service.port)


def test_up_twice_status_down_twice(private_rethinkdb, capsys):
    service = private_rethinkdb
    services.up([service], timeout_s=30)
    first_pid = service.pid()
    assert first_pid and service.ready()
    services.up([service], timeout_s=30)
    assert service.pid() == first_pid
    assert "already running" in capsys.readouterr().out

    assert services.status([service]) is True
    line = capsys.readouterr().out.splitlines()[1].split()
    assert line[:2] == ["rethinkdb", str(first_pid)] and line[3] == "ready"

    services.down([service])
    assert service.pid() is None and not service.pid_file.exists() and not listening(service)
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    services.down([service])
    assert "not running" in capsys.readouterr().out
    assert services.status([service]) is False


def test_stale_pid_file_is_replaced(private_rethinkdb):
    service = private_rethinkdb
    service.home.mkdir(parents=True)
    service.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not ours
    assert service.pid() is None
    service.stop()  # must not signal the test process
    services.up([service], timeout_s=30)
    assert service.pid() not in (None, os.getpid())


def test_port_taken_by_a_stranger_is_a_clear_error(private_rethinkdb):
    service = private_rethinkdb
    with socket.socket() as stranger:
        stranger.bind((service.host, service.port))
        stranger.listen()
        with pytest.raises(services.ServiceError, match="already in use"):
            service.start()


def test_bind_is_loopback_only(private_rethinkdb):
    service = private_rethinkdb
    services.up([service], timeout_s=30)
    pid = service.pid()
    inode_lines = open("/proc/net/tcp").read().splitlines()[1:]
    port_hex = f"{service.port:04X}"
    listeners = [line.split()[1] for line in inode_lines if line.split()[1].endswith(":" + port_hex)
                 and line.split()[3] == "0A"]
    assert listeners == ["0100007F:" + port_hex], listeners  # 127.0.0.1 only
    assert pid


@pytest.mark.disruptive
def test_cassandra_restarted_after_kill_9_keeps_data():
    settings = config.load()
    node = services.Cassandra(settings)
    if not node.ready():
        pytest.fail("Cassandra is not running: start the local stack with `make up`", pytrace=False)
    handle, session = cql.connect(settings.replace(cassandra_keyspace="smw_test"), keyspace=False)
    key = f"kill-9-{uuid.uuid4().hex[:8]}"
    try:
        cql.apply_schema(session, settings.replace(cassandra_keyspace="smw_test"))
        session.execute(session.prepare("INSERT INTO houses (house_id, zip) VALUES (?, ?)"), (key, "02139"))
    finally:
        handle.shutdown()

    old_pid = node.pid()
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while node.pid() == old_pid and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.pid() is None

    services.up([node], timeout_s=float(settings.service_timeout_s))
    assert node.pid() not in (None, old_pid)

    handle, session = cql.connect(settings.replace(cassandra_keyspace="smw_test"))
    try:
        row = session.execute(session.prepare("SELECT zip FROM houses WHERE house_id = ?"), (key,)).one()
    finally:
        handle.shutdown()
    assert row is not None and row.zip == "02139"


def test_kafka_cluster_ids_never_look_like_an_option(monkeypatch):
    # One random id in 64 starts with '-': kafka-storage format would take it for a flag.
    ids = iter([uuid.UUID(bytes=b"\xfb" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(services.uuid, "uuid4", lambda: next(ids))
    assert services.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"  # the '-w...' id was drawn again
    monkeypatch.undo()
    drawn = [services.new_cluster_id() for _ in range(500)]
    assert all(len(c) == 22 and not c.startswith("-") for c in drawn)

"""The app in a child process: configured from Settings and SMW_WEB_* options, stopped by its pid."""
import http.client
import json
import socket

import pytest

from smw import config
from tools import server as server_module
from tools.browser import descendants, still_running
from tools.server import ServerError, ServerProcess, make_user

pytestmark = pytest.mark.integration


def test_settings_round_trip_through_the_environment():
    settings = config.load(dotenv=None).replace(cassandra_keyspace="ks_x", rethinkdb_port="1234")
    assert config.load(settings.environ(), dotenv=None) == settings


def get(server, path, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_child_server_uses_settings_and_web_options_and_stops(settings, rethinkdb_ready, cassandra_session, house_id):
    _name, token = make_user(settings, "household", [house_id])
    with ServerProcess(settings, {"MAX_RANGE_DAYS": 3, "SSE_HEARTBEAT_S": 60}, stop_timeout_s=5) as server:
        process = server.process
        status, body = get(server, f"/api/houses/{house_id}", token)  # the test keyspace: the house exists
        assert status == 200 and json.loads(body)["house_id"] == house_id
        assert get(server, f"/api/houses/{house_id}")[0] == 401  # auth is on by default
        status, body = get(server, f"/api/houses/{house_id}/daily?from=2024-01-01&to=2024-01-04", token)
        assert status == 400 and "3 days" in json.loads(body)["error"]
        stream = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        stream.request("GET", f"/alerts/stream?house_id={house_id}", headers={"Authorization": f"Bearer {token}"})
        response = stream.getresponse()
        while response.fp.readline() != b": ready\n":
            pass
    stream.close()
    assert process.returncode == 0  # ended by its SIGTERM handler with a stream open, not killed
    assert server.process is None and server.log_path is None


def test_a_child_that_dies_is_reported_with_its_log(settings, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(server_module, "free_port", lambda host: taken.getsockname()[1])
        server = ServerProcess(settings, ready_timeout_s=20)
        with pytest.raises(ServerError, match="(?s)exited with status 1 before answering.*Address already in use"):
            server.start()
    assert server.process is None and server.log_path.exists()  # kept for a look
    server.log_path.unlink()


def test_forked_server_processes_share_the_port_and_stop_together(settings, rethinkdb_ready, cassandra_session,
                                                                   house_id):
    _name, token = make_user(settings, "admin")
    with ServerProcess(settings, processes=2, threads=4) as server:
        children = descendants(server.process.pid)
        assert len(children) == 2
        for _ in range(8):
            status, body = get(server, f"/api/houses/{house_id}", token)
            assert status == 200
    assert server.process is None
    assert still_running(children) == []

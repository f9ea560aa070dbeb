"""Over a thousand open alert streams in one server process: each costs a coroutine and a socket on the
event loop, not a thread, and the server's pages and API keep answering while they are open."""
import http.client
import time

import pytest

from tests.webapp.conftest import D1, D2, make_alert
from tools.server import ServerProcess, make_user
from tools.sse_clients import SSEClients
from webapp import streams

pytestmark = pytest.mark.integration

STREAMS = 1100  # beyond the 1,023 sockets that select() can watch, and far beyond the server's 4 threads


def get(server, path: str, headers: dict) -> tuple[int, http.client.HTTPResponse, bytes, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return response.status, response, body, time.monotonic() - started
    finally:
        conn.close()


def test_over_a_thousand_streams_stay_open_while_pages_and_the_api_answer(settings, rethinkdb_ready, house_days,
                                                                           insert_alert):
    house_id = house_days
    _name, token = make_user(settings, "household", [house_id])
    headers = {"Authorization": f"Bearer {token}"}
    stream_path = f"/alerts/stream?house_id={house_id}"
    web = {"SSE_MAX_STREAMS_PER_USER": STREAMS, "SSE_HEARTBEAT_S": 5}
    with ServerProcess(settings, web, threads=4) as server:
        clients = SSEClients(server.url, headers, stream_path, STREAMS)
        try:
            clients.open(timeout_s=90)
            status, response, body, _took = get(server, stream_path, headers)  # one more than the user may hold
            assert status == 503 and response.getheader("Retry-After") == str(streams.RETRY_AFTER_S)
            assert f"at most {STREAMS} open alert streams".encode() in body
            for path in (f"/houses/{house_id}", f"/api/houses/{house_id}/daily?from={D1}&to={D2}"):
                status, _response, body, took = get(server, path, headers)
                assert status == 200 and body and took < 2.0, (path, status, took)
            alert = make_alert(house_id)
            delays = clients.delays(alert["id"].encode(), lambda: insert_alert(alert), timeout_s=15)
            assert len(delays) == STREAMS, f"{len(delays)} of {STREAMS} streams got the alert"
            assert clients.connected == STREAMS
        finally:
            clients.close()

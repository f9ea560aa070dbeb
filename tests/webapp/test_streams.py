"""Bounds on long-lived answers: alert streams and /blip waits per user and per process, the resume window."""
import http.client
import time

import pytest
from werkzeug.exceptions import ServiceUnavailable

from tests.webapp.conftest import D1, D2, bearer, make_alert
from tests.webapp.test_alerts import open_stream, replayed_ids, wait_for
from tools.server import ServerProcess, make_user
from webapp import alert_store, streams

pytestmark = pytest.mark.integration


def test_limiter_bounds_each_key_and_the_total_and_releases_once():
    limiter = streams.StreamLimiter()
    first = limiter.acquire("alert streams", "user:a", 2, 3)
    limiter.acquire("alert streams", "user:a", 2, 3)
    with pytest.raises(ServiceUnavailable) as refused:
        limiter.acquire("alert streams", "user:a", 2, 3)
    assert dict(refused.value.get_headers())["Retry-After"] == str(streams.RETRY_AFTER_S)
    limiter.acquire("/blip waits", "user:a", 2, 3)  # another kind has its own count
    with pytest.raises(ServiceUnavailable):
        limiter.acquire("alert streams", "user:b", 2, 3)  # the process total
    first()
    first()  # a second release changes nothing
    assert limiter.total == 2 and limiter.count("alert streams", "user:a") == 1
    limiter.acquire("alert streams", "user:b", 2, 3)
    assert limiter.total == 3


def test_streams_max_keeps_a_reserve_of_threads():
    assert streams.streams_max_for(64, 16) == 48
    assert streams.streams_max_for(16, 16) == 8
    assert streams.streams_max_for(4, 16) == 2
    assert streams.streams_max_for(1016, 16) == 1000
    assert streams.streams_max_for(1, 16) == 1


def refused(response) -> dict:
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(streams.RETRY_AFTER_S)
    return response.get_json()


def test_alert_streams_per_user_are_bounded(app, client, make_user, house_id):
    app.config["SSE_MAX_STREAMS_PER_USER"] = 2
    url = f"/alerts/stream?house_id={house_id}"
    opened = [open_stream(client, url) for _ in range(2)]
    for _, events in opened:
        wait_for(events, lambda kind, value: kind == "comment" and value == "ready", 5)
    assert "at most 2 open alert streams" in refused(client.get(url))["error"]
    _other, token = make_user("admin")  # another user is counted apart
    other, events = open_stream(app.test_client(), url, bearer(token))
    wait_for(events, lambda kind, value: kind == "comment" and value == "ready", 5)
    other.close()
    opened[0][0].close()
    opened[0][0].response.close()
    again, events = open_stream(client, url)  # a closed stream frees its place
    wait_for(events, lambda kind, value: kind == "comment" and value == "ready", 5)
    for stream in (again, opened[1][0]):
        stream.close()
        stream.response.close()
    assert app.extensions["smw_streams"].total == 0
    assert app.extensions["smw_alert_hub"].subscriber_count == 0


def test_the_process_bound_covers_every_user(app, client, make_user, house_id):
    app.config["STREAMS_MAX"] = 1
    url = f"/alerts/stream?house_id={house_id}"
    stream, events = open_stream(client, url)
    wait_for(events, lambda kind, value: kind == "comment" and value == "ready", 5)
    _other, token = make_user("admin")
    assert "as many open streams" in refused(app.test_client().get(url, headers=bearer(token)))["error"]
    stream.close()
    stream.response.close()
    assert app.extensions["smw_streams"].total == 0


def test_blip_waits_per_user_are_bounded(app, client, pulse_meter):
    app.config["BLIP_MAX_WAITS_PER_USER"] = 1
    app.config["BLIP_MAX_WAIT_S"] = 30
    meter_id, store = pulse_meter
    store([[int(time.time() * 1000) - 5000, 900]])
    waiting = client.get(f"/blip/{meter_id}", buffered=False)
    assert waiting.status_code == 200
    assert "at most 1 open /blip waits" in refused(client.get(f"/blip/{meter_id}"))["error"]
    waiting.close()
    app.config["BLIP_MAX_WAIT_S"] = 0.3
    assert client.get(f"/blip/{meter_id}").status_code == 200
    assert app.extensions["smw_streams"].total == 0


def test_resume_replays_at_most_the_resume_window(app, client, house_id, insert_alert):
    app.config["SSE_RESUME_MAX_S"] = 3600
    now_s = time.time()
    old = insert_alert(make_alert(house_id, updated_ts_s=now_s - 7200, start_ts_s=now_s - 7200))
    recent = insert_alert(make_alert(house_id, updated_ts_s=now_s - 600, start_ts_s=now_s - 600))
    resume_ms = int((now_s - 3 * 86400) * 1000)
    stream, events = open_stream(client, f"/alerts/stream?house_id={house_id}", {"Last-Event-ID": str(resume_ms)})
    replayed = replayed_ids(events)
    assert recent["id"] in replayed and old["id"] not in replayed
    stream.close()
    stream.response.close()


class CountingStore:
    """A store that counts the queries changed_since sends to Cassandra."""

    def __init__(self, store):
        self.store, self.queries = store, 0

    def many(self, statement, param_list, concurrency=32):
        self.queries += len(param_list)
        return self.store.many(statement, param_list, concurrency)


def test_resume_reads_the_history_of_a_bounded_number_of_houses(app, rethinkdb_conn, house_id, insert_alert):
    counting = CountingStore(app.extensions["smw_cassandra"])
    alert = insert_alert(make_alert(house_id))
    since_s = alert["updated_ts_s"] - 1
    few = frozenset([house_id, house_id + "-b"])
    found = alert_store.changed_since(rethinkdb_conn, counting, since_s, few, 1000, 32)
    assert counting.queries == 2 and alert["id"] in [a["id"] for a in found]
    many = frozenset([house_id] + [f"{house_id}-{n}" for n in range(40)])
    found = alert_store.changed_since(rethinkdb_conn, counting, since_s, many, 1000, 32)
    assert counting.queries == 2 and alert["id"] in [a["id"] for a in found]  # the live store alone
    found = alert_store.changed_since(rethinkdb_conn, counting, since_s, None, 1000, 32)
    assert counting.queries == 2 and alert["id"] in [a["id"] for a in found]


def read_until_ready(response) -> None:
    while b": ready" not in response.fp.readline():
        pass


def test_pages_and_api_answer_while_a_server_holds_its_most_streams(settings, rethinkdb_ready, house_days):
    house_id = house_days
    _name, token = make_user(settings, "admin")
    headers = {"Authorization": f"Bearer {token}"}
    # at most 2 streams in the process (streams hold no thread: the 2 worker threads serve everything else)
    with ServerProcess(settings, {"SSE_HEARTBEAT_S": 0.2, "STREAMS_MAX": 2}, threads=2) as server:
        held = []
        for _ in range(2):
            conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
            conn.request("GET", f"/alerts/stream?house_id={house_id}", headers=headers)
            response = conn.getresponse()
            assert response.status == 200
            read_until_ready(response)
            held.append(conn)
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", f"/alerts/stream?house_id={house_id}", headers=headers)
        response = conn.getresponse()
        assert response.status == 503 and response.getheader("Retry-After") == str(streams.RETRY_AFTER_S)
        assert b"open streams" in response.read()
        for _ in range(10):
            started = time.monotonic()
            conn.request("GET", f"/api/houses/{house_id}/daily?from={D1}&to={D2}", headers=headers)
            response = conn.getresponse()
            assert response.status == 200 and len(response.read()) > 0
            assert time.monotonic() - started < 5
        held.pop().close()  # the server notices at its next heartbeat and frees the place
        deadline = time.monotonic() + 5
        while True:
            conn.request("GET", f"/alerts/stream?house_id={house_id}", headers=headers)
            response = conn.getresponse()
            if response.status == 200:
                break
            response.read()
            assert time.monotonic() < deadline, "a closed stream did not free its place"
            time.sleep(0.2)
        conn.close()
        for held_conn in held:
            held_conn.close()

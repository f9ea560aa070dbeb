"""The live alert feed: Server-Sent Events from the RethinkDB changefeed, resume by Last-Event-ID."""
import json
import queue
import threading
import time

import pytest

from tests.webapp.conftest import make_alert, utc

pytestmark = pytest.mark.integration


class Stream:
    """An SSE response read by a thread; close() stops it at the next chunk (heartbeats come every 0.5 s)."""

    def __init__(self, response):
        self.response = response
        self.events: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=read_events, args=(self,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(5)


def read_events(stream: Stream) -> None:
    """Parse an SSE byte stream into ('comment', text) and ('alert', (id, dict)) items."""
    buffer, events = "", stream.events
    for chunk in stream.response.response:
        if stream.stop.is_set():
            stream.response.close()  # runs the generator's cleanup: the subscriber leaves the hub
            return
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
            if block.startswith(":"):
                events.put(("comment", block[2:]))
            elif fields.get("event") == "alert":
                events.put(("alert", (fields["id"], json.loads(fields["data"]))))


def open_stream(client, url, headers=None):
    response = client.get(url, headers=headers or {}, buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    stream = Stream(response)
    return stream, stream.events


def replayed_ids(events, timeout_s: float = 5) -> list[str]:
    """The ids of the alerts a stream sends before its ": ready" comment (its initial state)."""
    replayed = []
    while True:
        kind, value = events.get(timeout=timeout_s)
        if kind == "comment" and value == "ready":
            return replayed
        if kind == "alert":
            replayed.append(value[1]["id"])


def wait_for(events, predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while True:
        kind, value = events.get(timeout=max(deadline - time.monotonic(), 0.001))
        if predicate(kind, value):
            return value


def test_sse_delivers_an_inserted_alert_within_one_second(client, house_id, insert_alert):
    response, events = open_stream(client, f"/alerts/stream?house_id={house_id}")
    wait_for(events, lambda kind, value: kind == "comment" and value == "ready", 5)
    alert = make_alert(house_id)
    started = time.monotonic()
    insert_alert(alert)
    event_id, received = wait_for(events, lambda kind, value: kind == "alert" and value[1]["id"] == alert["id"], 1.0)
    assert time.monotonic() - started < 1.0
    assert received == alert and event_id == str(round(alert["updated_ts_s"] * 1000))
    closed = dict(alert, state="closed", end_ts_s=alert["start_ts_s"] + 60, updated_ts_s=alert["updated_ts_s"] + 60)
    insert_alert(closed)
    _, update = wait_for(events, lambda kind, value: kind == "alert" and value[1]["state"] == "closed", 1.0)
    assert update["end_ts_s"] == closed["end_ts_s"]
    response.close()


def test_sse_filters_by_house_and_starts_with_recent_alerts(client, house_id, insert_alert):
    earlier = insert_alert(make_alert(house_id))
    response, events = open_stream(client, f"/alerts/stream?house_id={house_id}")
    _, first = wait_for(events, lambda kind, value: kind == "alert", 5)
    assert first["id"] == earlier["id"]
    insert_alert(make_alert(house_id + "-other"))
    mine = insert_alert(make_alert(house_id))
    _, received = wait_for(events, lambda kind, value: kind == "alert", 2)
    assert received["id"] == mine["id"]  # the other house's alert was not sent
    response.close()


def test_resume_with_last_event_id_replays_live_and_history_alerts(client, cassandra_session, house_id, insert_alert):
    now_s = time.time()
    before = insert_alert(make_alert(house_id, updated_ts_s=now_s - 100, start_ts_s=now_s - 100))
    live = insert_alert(make_alert(house_id, updated_ts_s=now_s - 10, start_ts_s=now_s - 20))
    # only in the Cassandra history (the live store no longer has it)
    cassandra_session.execute(
        "INSERT INTO alerts_by_house (house_id, start_ts, alert_id, kind, meter, appliance, state, end_ts, updated_at) "
        "VALUES (%s, %s, 'hist-1', 'no_data', 7, 'oven', 'closed', %s, %s)",
        (house_id, utc(2000, 1, 1).fromtimestamp(now_s - 3600, utc(2000, 1, 1).tzinfo),
         utc(2000, 1, 1).fromtimestamp(now_s - 5, utc(2000, 1, 1).tzinfo),
         utc(2000, 1, 1).fromtimestamp(now_s - 5, utc(2000, 1, 1).tzinfo)))
    resume_ms = int((now_s - 50) * 1000)
    response, events = open_stream(client, f"/alerts/stream?house_id={house_id}", {"Last-Event-ID": str(resume_ms)})
    replayed = replayed_ids(events)
    assert replayed == [live["id"], "hist-1"]  # oldest update first; `before` was already seen
    assert before["id"] not in replayed
    response.close()
    assert client.get("/alerts/stream", headers={"Last-Event-ID": "12345678901234567"}).status_code == 400


def test_one_changefeed_serves_every_subscriber(app, client, house_id, insert_alert):
    streams = [open_stream(client, f"/alerts/stream?house_id={house_id}") for _ in range(5)]
    for _, events in streams:
        wait_for(events, lambda kind, value: kind == "comment" and value == "ready", 5)
    hub = app.extensions["smw_alert_hub"]
    assert hub.subscriber_count == 5
    alert = insert_alert(make_alert(house_id))
    for _, events in streams:
        wait_for(events, lambda kind, value: kind == "alert" and value[1]["id"] == alert["id"], 1.0)
    assert [t.name for t in threading.enumerate()].count("alert-changefeed") == 1
    for response, _ in streams:
        response.close()


def test_alert_list_api(client, house_id, insert_alert):
    opened = insert_alert(make_alert(house_id, start_ts_s=time.time() - 5))
    closed = insert_alert(make_alert(house_id, state="closed"))
    body = client.get(f"/api/alerts?house_id={house_id}").get_json()
    assert [a["id"] for a in body["alerts"]] == [closed["id"], opened["id"]]
    assert [a["id"] for a in client.get(f"/api/alerts?house_id={house_id}&state=open").get_json()["alerts"]] == [opened["id"]]
    assert client.get("/api/alerts?state=maybe").status_code == 400


def test_streams_end_when_the_hub_stops(app, client, house_id):
    stream, events = open_stream(client, f"/alerts/stream?house_id={house_id}")
    wait_for(events, lambda kind, value: kind == "comment" and value == "ready", 5)
    app.extensions["smw_alert_hub"].stop()
    stream.thread.join(2)  # well before the next heartbeat would have been the only thing to come
    assert not stream.thread.is_alive()
    late = client.get(f"/alerts/stream?house_id={house_id}", buffered=False)
    assert b": ready" in b"".join(late.response)  # a stream opened after the stop ends after its initial state


def test_open_alerts_are_the_most_recently_started(rethinkdb_conn, house_id, insert_alert):
    from webapp.alert_store import open_alerts
    future_s = time.time() + 10**6  # newer than anything other tests left in the database
    older, newer, newest = (insert_alert(make_alert(house_id, start_ts_s=future_s + i)) for i in range(3))
    insert_alert(make_alert(house_id, start_ts_s=future_s + 3, state="closed"))
    assert [a["id"] for a in open_alerts(rethinkdb_conn, 2)] == [newest["id"], newer["id"]]

"""Live alerts: the page and its Server-Sent Events stream.

Under `python -m webapp` a stream is authorised, bounded, subscribed and given its initial state
(the bounded resume read) in a worker thread, then waits for changes as a coroutine on the
server's event loop (webapp/asgi.py), holding no thread; under the development server and the
test client the worker thread serves it to the end."""
from __future__ import annotations

import functools
import json
import logging
import queue
import time

from flask import Blueprint, Response, current_app, g, render_template, request

from smw import rethink
from webapp import params
from webapp.alert_store import (AlertHub, LoopSubscriber, Subscriber, alerts_for_house, alerts_for_houses,
                                changed_since, recent_alerts, updated_key)
from webapp.auth import visible_houses
from webapp.db import cassandra
from webapp.streams import event_loop, hand_over, open_stream

log = logging.getLogger(__name__)

bp = Blueprint("alerts", __name__)


def hub() -> AlertHub:
    app = current_app._get_current_object()
    found = app.extensions.get("smw_alert_hub")
    if found is None:
        found = app.extensions.setdefault("smw_alert_hub", AlertHub(app.config["SMW_SETTINGS"]))
    return found


def event_id(alert: dict) -> str:
    """The resume cursor: the alert's last update in epoch milliseconds."""
    return str(int(round(updated_key(alert) * 1000)))


def sse_event(alert: dict) -> str:
    return f"id: {event_id(alert)}\nevent: alert\ndata: {json.dumps(alert, separators=(',', ':'))}\n\n"


class Sent:
    """The last update of each alert a stream has sent, so that a change its initial state already
    held is not sent again."""

    def __init__(self):
        self.updated: dict[str, float] = {}

    def event(self, alert: dict) -> str | None:
        """The alert's SSE event, or None when the stream sent it at this update or a later one."""
        if alert["id"] in self.updated and self.updated[alert["id"]] >= updated_key(alert):
            return None
        self.updated[alert["id"]] = updated_key(alert)
        return sse_event(alert)


async def changes_on_loop(subscriber: LoopSubscriber, head: str, sent: Sent, heartbeat_s: float, write) -> None:
    """A stream's answer after its initial state, as a coroutine on the event loop."""
    await write(head)
    while True:
        alert = await subscriber.get(heartbeat_s)
        if alert is None:
            await write(": keepalive\n\n")
        elif alert is Subscriber.OVERFLOW:
            log.warning("live alert client too slow; closing its stream")
            return
        elif alert is Subscriber.CLOSED:
            return  # the server is shutting down; the browser reconnects with Last-Event-ID
        else:
            event = sent.event(alert)
            if event is not None:
                await write(event)


@bp.get("/alerts")
def page():
    """The live alerts page."""
    house_id = request.args.get("house_id") or None
    if house_id is not None:
        params.name("house_id", house_id)
    return render_template("alerts.html", house_id=house_id)


@bp.get("/alerts/stream")
def stream():
    """Server-Sent Events: recent alerts (or those changed since Last-Event-ID), then every change,
    of ?house_id= or of every house the user sees (never another household's)."""
    house_id = request.args.get("house_id") or None
    if house_id is not None:
        params.name("house_id", house_id)
    # the policy let ?house_id= through only for a house the user sees
    house_ids = frozenset([house_id]) if house_id is not None else visible_houses(g.user)
    resume_from = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    since_ts_s = params.digits("Last-Event-ID", resume_from) / 1000 if resume_from else None
    config = current_app.config
    if since_ts_s is not None:  # a resume replays at most SSE_RESUME_MAX_S back
        since_ts_s = max(since_ts_s, time.time() - float(config["SSE_RESUME_MAX_S"]))
    settings = config["SMW_SETTINGS"]
    store = cassandra()
    heartbeat_s = float(config["SSE_HEARTBEAT_S"])
    snapshot_limit = int(config["SSE_SNAPSHOT_LIMIT"])
    house_limit = int(config["HOUSE_LIMIT"])
    history_houses = int(config["SSE_RESUME_MAX_HOUSES"])
    release = open_stream("alert streams", "SSE_MAX_STREAMS_PER_USER")  # 503 beyond the bounds
    loop = event_loop()
    try:
        feed = hub()
        # before the initial state is read: nothing falls in between
        subscriber = feed.subscribe(house_ids, loop=loop)
    except BaseException:
        release()
        raise

    def initial_state() -> list[dict]:
        with rethink.connection(settings) as conn:
            if since_ts_s is not None:
                return changed_since(conn, store, since_ts_s, house_ids, house_limit, history_houses)
            if house_ids is None:
                found = recent_alerts(conn, snapshot_limit)
            elif len(house_ids) == 1:
                found = alerts_for_house(conn, next(iter(house_ids)), snapshot_limit)
            else:
                found = alerts_for_houses(conn, sorted(house_ids)[:house_limit], snapshot_limit)
        return sorted(found, key=updated_key)

    sent = Sent()

    def events():
        try:
            yield "retry: 2000\n\n"
            for alert in initial_state():
                yield sent.event(alert) or ""
            yield ": ready\n\n"
            while True:
                try:
                    alert = subscriber.queue.get(timeout=heartbeat_s)
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                if alert is Subscriber.OVERFLOW:
                    log.warning("live alert client too slow; closing its stream")
                    return
                if alert is Subscriber.CLOSED:
                    return  # the server is shutting down; the browser reconnects with Last-Event-ID
                event = sent.event(alert)
                if event is not None:  # else already sent by the initial state
                    yield event
        finally:
            feed.unsubscribe(subscriber)

    if loop is None:  # this thread serves the stream to its end
        body = events()
    else:  # the initial state is read here; then the stream waits on the event loop, holding no thread
        try:
            head = "".join(["retry: 2000\n\n", *(sent.event(alert) or "" for alert in initial_state()), ": ready\n\n"])
        except BaseException:
            feed.unsubscribe(subscriber)
            release()
            raise
        hand_over(functools.partial(changes_on_loop, subscriber, head, sent, heartbeat_s))
        body = iter(())  # not a list: no Content-Length
    response = Response(body, mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    # on close, also when the stream never started (a generator's finally would not run then)
    response.call_on_close(lambda: feed.unsubscribe(subscriber))
    response.call_on_close(release)
    return response

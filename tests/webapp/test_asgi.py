"""The event-loop front (webapp/asgi.py) driven directly: the WSGI environ it builds, large and refused
answers, and the streams it takes over from the views, which end and free their place when the client
leaves."""
import asyncio
import time
from urllib.parse import unquote

import pytest

from tests.webapp.conftest import bearer, make_alert
from webapp.asgi import BATCH_BYTES, MAX_BODY_BYTES, Front


def scope(path: str, query: bytes = b"", method: str = "GET", headers=()) -> dict:
    return {"type": "http", "http_version": "1.1", "method": method, "scheme": "http", "path": unquote(path),
            "raw_path": path.encode(), "query_string": query, "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8000"), *headers],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


class Exchange:
    """One request's receive and send: a body, then a wait until leave() (the client closes)."""

    def __init__(self, body: bytes = b""):
        self.body = body
        self.messages: list[dict] = []
        self.left = asyncio.Event()
        self.changed = asyncio.Event()

    async def receive(self) -> dict:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.messages.append(message)
        self.changed.set()

    @property
    def status(self) -> int:
        return self.messages[0]["status"]

    @property
    def headers(self) -> dict:
        return {name.decode().lower(): value.decode() for name, value in self.messages[0]["headers"]}

    @property
    def text(self) -> str:
        return b"".join(m.get("body", b"") for m in self.messages[1:]).decode()

    async def wait_for(self, predicate, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.text):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(deadline - time.monotonic(), 0.001))


def serve(front: Front, request: dict, exchange: Exchange) -> None:
    asyncio.run(front(request, exchange.receive, exchange.send))


def test_the_environ_is_the_wsgi_one():
    seen = {}

    def wsgi(environ, start_response):
        seen.update(environ)
        seen["body"] = environ["wsgi.input"].read()
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-One", "1")])
        return [b"made"]

    front = Front(wsgi, 1)
    exchange = Exchange(b"a=1")
    serve(front, scope("/a%20b/%C3%A9", b"x=1&y=%20", "POST", [
        (b"content-type", b"application/x-www-form-urlencoded"), (b"content-length", b"3"),
        (b"accept", b"text/html"), (b"accept", b"*/*"), (b"x_forwarded_for", b"10.0.0.1")]), exchange)
    front.shutdown()
    assert exchange.status == 201 and exchange.headers["x-one"] == "1" and exchange.text == "made"
    assert seen["PATH_INFO"] == "/a b/\xc3\xa9"  # PEP 3333: the bytes as latin-1
    assert seen["QUERY_STRING"] == "x=1&y=%20" and seen["REQUEST_METHOD"] == "POST"
    assert seen["CONTENT_TYPE"] == "application/x-www-form-urlencoded" and seen["CONTENT_LENGTH"] == "3"
    assert seen["HTTP_ACCEPT"] == "text/html,*/*"
    assert "HTTP_X_FORWARDED_FOR" not in seen  # a name with "_" could pass for X-Forwarded-For
    assert seen["REMOTE_ADDR"] == "127.0.0.1" and seen["HTTP_HOST"] == "127.0.0.1:8000"
    assert seen["body"] == b"a=1"


def test_a_large_answer_goes_out_in_batches_and_is_closed():
    closed = []

    class Body:
        def __iter__(self):
            return (bytes([65 + n % 26]) * 10_000 for n in range(100))

        def close(self):
            closed.append(True)

    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    front = Front(wsgi, 2)
    exchange = Exchange()
    serve(front, scope("/big"), exchange)
    front.shutdown()
    assert len(exchange.text) == 1_000_000 and exchange.text.startswith("A" * 10_000)
    assert len(exchange.messages) - 1 >= 1_000_000 // BATCH_BYTES and closed == [True]


def test_a_body_over_the_limit_is_refused():
    called = []
    front = Front(lambda environ, start_response: called.append(True), 1)
    exchange = Exchange(b"x" * (MAX_BODY_BYTES + 1))
    serve(front, scope("/api/x", method="PUT"), exchange)
    front.shutdown()
    assert exchange.status == 413 and called == []


@pytest.mark.integration
def test_an_alert_stream_waits_on_the_loop_and_ends_when_the_client_leaves(app, make_user, house_id, insert_alert):
    _user, token = make_user("household", [house_id])
    limiter, front = app.extensions["smw_streams"], Front(app, 2)
    alert = make_alert(house_id)

    async def scenario() -> Exchange:
        exchange = Exchange()
        request = scope("/alerts/stream", f"house_id={house_id}".encode(),
                        headers=[(b"authorization", bearer(token)["Authorization"].encode())])
        answering = asyncio.ensure_future(front(request, exchange.receive, exchange.send))
        await exchange.wait_for(lambda text: ": ready" in text, 10)
        assert exchange.status == 200 and exchange.headers["content-type"].startswith("text/event-stream")
        assert "content-security-policy" in exchange.headers  # the app's after_request hooks ran
        assert front.streams and limiter.total == 1 and app.extensions["smw_alert_hub"].subscriber_count == 1
        await asyncio.get_running_loop().run_in_executor(None, insert_alert, alert)
        await exchange.wait_for(lambda text: alert["id"] in text, 2)
        exchange.left.set()  # the client closes the connection
        await asyncio.wait_for(answering, 2)
        return exchange

    exchange = asyncio.run(scenario())
    front.shutdown()
    assert "\nevent: alert\ndata: {" in exchange.text and alert["id"] in exchange.text.split(": ready")[1]
    assert limiter.total == 0 and app.extensions["smw_alert_hub"].subscriber_count == 0
    assert not front.streams


@pytest.mark.integration
def test_a_refused_stream_is_answered_by_the_app(app, house_id):
    front = Front(app, 1)
    exchange = Exchange()
    serve(front, scope("/alerts/stream", f"house_id={house_id}".encode()), exchange)
    front.shutdown()
    assert exchange.status == 401 and exchange.headers["www-authenticate"].startswith("Bearer")
    assert app.extensions["smw_streams"].total == 0


@pytest.mark.integration
def test_a_blip_wait_on_the_loop_answers_the_next_point(app, make_user, pulse_meter):
    meter_id, store = pulse_meter
    _user, token = make_user("admin")
    app.config["BLIP_KEEPALIVE_S"] = 0.2
    app.config["BLIP_MAX_WAIT_S"] = 0
    store([[int(time.time() * 1000) - 5000, 900]])
    front = Front(app, 2)
    stamp_ms = int(time.time() * 1000)

    async def scenario() -> Exchange:
        exchange = Exchange()
        request = scope(f"/blip/{meter_id}", headers=[(b"authorization", f"Bearer {token}".encode())])
        answering = asyncio.ensure_future(front(request, exchange.receive, exchange.send))
        await exchange.wait_for(lambda text: text.startswith(" "), 5)  # a keepalive space while it waits
        assert app.extensions["smw_streams"].total == 1 and front.streams
        await asyncio.get_running_loop().run_in_executor(None, store, [[stamp_ms, 1234]])
        await asyncio.wait_for(answering, 5)
        return exchange

    exchange = asyncio.run(scenario())
    front.shutdown()
    assert exchange.status == 200 and exchange.text.strip() == f"[{stamp_ms},1234]"
    assert app.extensions["smw_streams"].total == 0 and not front.streams

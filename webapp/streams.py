"""Long-lived answers (alert SSE streams, /blip long polls): their bounds in each server process, and
how a view hands the rest of its answer to the server's event loop.

Under `python -m webapp` an open stream waits as a coroutine on the event loop (webapp/asgi.py)
and costs a socket, not a thread; still, without a bound one user (or a few thousand browser
tabs) could hold every socket the process may open. So each kind of stream is bounded per
user (per client address for anonymous open meters) and all of them together per process;
beyond a bound the answer is 503 with Retry-After and a JSON error, and the client tries again
later. The views check the bounds, subscribe and read what has to block in their worker
thread, then `hand_over()` a coroutine when `event_loop()` is set; without a loop (the
development server, Flask's test client) they serve the stream from that thread.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from flask import Flask, current_app, g, request
from werkzeug.exceptions import ServiceUnavailable

RETRY_AFTER_S = 10
LOOP_KEY = "smw.event_loop"  # in the WSGI environ under the event-loop server (webapp/asgi.py): its loop
STREAM_KEY = "smw.stream"    # set by a view that hands the rest of its answer to that loop


def event_loop():
    """The event loop that serves this request's stream, or None (the development server and the
    test client: the view answers its stream from its own thread)."""
    return request.environ.get(LOOP_KEY)


def hand_over(stream) -> None:
    """Let the event loop write the rest of this request's answer: `stream(write)` is a coroutine
    function, awaited on the loop once the view's response (status, headers) is out; it awaits
    `write(text)` for each part and returns at the end. The response's call_on_close callbacks
    run when it returns or the client leaves. Only when event_loop() is not None."""
    request.environ[STREAM_KEY] = stream


def streams_max_for(capacity: int, reserve: int) -> int:
    """Open streams a process allows out of `capacity` (its open-file limit under `python -m webapp`):
    all but a reserve of min(reserve, capacity / 2), which stays for pages, the API and the data stores."""
    return max(1, capacity - min(max(reserve, 0), capacity // 2))


class StreamLimiter:
    """Counts of open streams per (kind, key) and in total; acquire() returns a release function."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: Counter = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def count(self, kind: str, key: str) -> int:
        with self._lock:
            return self._open[(kind, key)]

    def acquire(self, kind: str, key: str, per_key: int, total: int | None) -> Callable[[], None]:
        """Count one more open stream; ServiceUnavailable when the key holds per_key streams of this
        kind already or the process `total` (None: no process bound). Call the release function once
        the stream ends (more calls do nothing)."""
        slot = (kind, key)
        with self._lock:
            if self._open[slot] >= per_key:
                raise ServiceUnavailable(
                    f"at most {per_key} open {kind} per user; close one or try again later",
                    retry_after=RETRY_AFTER_S)
            if total is not None and self._total >= total:
                raise ServiceUnavailable("the server holds as many open streams as it can; try again later",
                                         retry_after=RETRY_AFTER_S)
            self._open[slot] += 1
            self._total += 1
        released = threading.Lock()

        def release() -> None:
            if released.acquire(blocking=False):
                with self._lock:
                    self._open[slot] -= 1
                    if self._open[slot] <= 0:
                        del self._open[slot]
                    self._total -= 1
        return release


def client_key() -> str:
    """Whom a stream is counted against: the signed-in user, else the client's address."""
    user = g.get("user")
    return f"user:{user.username}" if user is not None else f"addr:{request.remote_addr}"


def open_stream(kind: str, per_key_setting: str) -> Callable[[], None]:
    """Count an open stream of this request's user against `per_key_setting` and STREAMS_MAX."""
    config = current_app.config
    total = config.get("STREAMS_MAX")
    return current_app.extensions["smw_streams"].acquire(
        kind, client_key(), int(config[per_key_setting]), None if total is None else int(total))


def init_app(app: Flask) -> None:
    app.extensions["smw_streams"] = StreamLimiter()

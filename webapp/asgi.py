"""The event-loop front of the web app: every request on one asyncio loop, the Flask app in a thread pool,
the long-lived answers (alert SSE streams, /blip long polls) as coroutines on the loop.

    python -m webapp          # uvicorn (uvloop, httptools) serving `Front(create_app())`

Every request, a stream's included, first runs through Flask in a worker thread, so the Host
check, authentication, the access policy of its endpoint, parameter checks, the stream bounds
(webapp/streams.py) and the security headers are the app's own code and nothing here. A page
or an API route answers there as under any WSGI server: the worker builds the whole answer and
the loop writes it (one hand-over to the thread and one back, the least a thread pool costs).
A stream view that finds an event loop in its request (`streams.event_loop()`) does what must
block in the worker (its bounded resume read, the wait for the meter's first poll) and hands
the rest of its answer to the loop as a coroutine (`streams.hand_over`): the worker is free at
once, and an open stream costs a coroutine and a socket, not a thread. A stream ends when its
coroutine returns, when the client leaves (noticed at once: the loop sees the socket close), or
when the app's streams are stopped (`webapp.stop_streams`, on SIGTERM and Ctrl-C).

The Flask app itself stays a WSGI app: the development server and Flask's test client run the
same views, which then answer their streams from the worker thread as before.
"""
from __future__ import annotations

import asyncio
import io
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_to_bytes

from webapp.streams import LOOP_KEY, STREAM_KEY

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # request bodies are small forms and JSON documents (a tariff is at most 16 KiB)
BATCH_BYTES = 256 * 1024      # a larger answer goes out in batches of about this size, each read in a worker
TOO_LARGE = (413, [(b"content-type", b"application/json"), (b"connection", b"close")],
             b'{"error": "the request body is larger than 1 MiB", "status": 413}')


class Answer:
    """What a worker made of one request: status, headers, the body read so far, and what is left
    (a WSGI iterator still to read, or a coroutine function the loop runs to write a stream)."""

    __slots__ = ("status", "headers", "body", "rest", "iterable", "stream")

    def __init__(self, status, headers, body, rest=None, iterable=None, stream=None):
        self.status, self.headers, self.body = status, headers, body
        self.rest, self.iterable, self.stream = rest, iterable, stream


class Front:
    """An ASGI app over a WSGI app (the Flask app) run in a pool of `threads` worker threads."""

    def __init__(self, wsgi_app, threads: int, multiprocess: bool = False):
        self.wsgi_app = wsgi_app
        self.threads = threads
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="web")
        self.multiprocess = multiprocess
        self.streams: set[asyncio.Task] = set()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # no lifespan or websocket protocol is asked for (see serve())
            return
        loop = asyncio.get_running_loop()
        body = b""
        headers = scope["headers"]
        if scope["method"] not in ("GET", "HEAD") or any(
                name in (b"content-length", b"transfer-encoding") for name, _ in headers):
            body = await read_body(receive)
            if body is None:
                status, answer_headers, content = TOO_LARGE
                await send({"type": "http.response.start", "status": status, "headers": answer_headers})
                await send({"type": "http.response.body", "body": content})
                return
        environ = self.environ(scope, body, loop)
        answer = await loop.run_in_executor(self.executor, self.call, environ)
        start = {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        if answer.stream is not None:
            await self.stream(answer, start, receive, send)
        elif answer.rest is not None:
            await self.rest(loop, answer, start, send)
        else:
            await send(start)
            await send({"type": "http.response.body", "body": answer.body})

    def environ(self, scope, body: bytes, loop) -> dict:
        """The WSGI environ of an ASGI request (PEP 3333: the path percent-decoded, as latin-1)."""
        server = scope.get("server") or ("localhost", 80)
        client = scope.get("client") or ("", 0)
        environ = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(scope["raw_path"]).decode("latin-1"),
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
            "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
            "REMOTE_ADDR": client[0],
            "REMOTE_PORT": str(client[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": io.BytesIO(body),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": self.multiprocess,
            "wsgi.run_once": False,
            LOOP_KEY: loop,
        }
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            if "_" in name:
                continue  # X_Forwarded_For would read as X-Forwarded-For: dropped, as waitress and nginx do
            value = raw_value.decode("latin-1")
            if name == "content-type":
                key = "CONTENT_TYPE"
            elif name == "content-length":
                key = "CONTENT_LENGTH"
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            environ[key] = environ[key] + "," + value if key in environ else value
        return environ

    def call(self, environ: dict) -> Answer:
        """In a worker: run the WSGI app and read its answer, up to BATCH_BYTES of it."""
        started: list = []
        chunks: list[bytes] = []

        def start_response(status, headers, exc_info=None):
            if exc_info is not None and started and started[2]:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers, False]
            return chunks.append

        iterable = self.wsgi_app(environ, start_response)
        stream = environ.get(STREAM_KEY)
        if stream is not None and environ["REQUEST_METHOD"] != "HEAD" and started and started[0][0] == "2":
            # the view handed the rest of its answer to the loop
            return Answer(*answer_head(started), b"".join(chunks), iterable=iterable, stream=stream)
        iterator = iter(iterable)
        try:
            batch = next_batch(iterator)
        except BaseException:
            close(iterable)
            raise
        body = b"".join(chunks) + batch
        if len(batch) >= BATCH_BYTES:  # maybe more to come: the loop asks for it batch by batch
            return Answer(*answer_head(started), body, rest=iterator, iterable=iterable)
        close(iterable)
        return Answer(*answer_head(started), body)

    async def rest(self, loop, answer: Answer, start: dict, send) -> None:
        """Write a large answer batch by batch, each read from its iterator in a worker."""
        try:
            await send(start)
            body = answer.body
            while body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
                body = await loop.run_in_executor(self.executor, next_batch, answer.rest)
            await send({"type": "http.response.body", "body": b""})
        finally:
            await loop.run_in_executor(self.executor, close, answer.iterable)

    async def stream(self, answer: Answer, start: dict, receive, send) -> None:
        """Run a stream's coroutine until it returns or the client leaves; then close its WSGI answer
        (which runs the view's call_on_close callbacks: the stream's place is free again)."""

        async def write(chunk) -> None:
            if isinstance(chunk, str):
                chunk = chunk.encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        writer = gone = None
        try:
            await send(start)
            if answer.body:
                await write(answer.body)
            writer = asyncio.ensure_future(answer.stream(write))
            gone = asyncio.ensure_future(disconnected(receive))
            self.streams.add(writer)
            await asyncio.wait((writer, gone), return_when=asyncio.FIRST_COMPLETED)
            if writer.done() and not writer.cancelled() and writer.exception() is not None:
                log.error("stream failed", exc_info=writer.exception())
            if not gone.done():
                await send({"type": "http.response.body", "body": b""})
        finally:
            tasks = [task for task in (writer, gone) if task is not None]
            self.streams.discard(writer)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            close(answer.iterable)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def answer_head(started: list) -> tuple[int, list]:
    status, headers = started[0], started[1]
    started[2] = True
    return int(status[:3]), [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def next_batch(iterator) -> bytes:
    """Up to about BATCH_BYTES more of a WSGI answer; b"" at its end."""
    chunks, size = [], 0
    for chunk in iterator:
        chunks.append(chunk)
        size += len(chunk)
        if size >= BATCH_BYTES:
            break
    return b"".join(chunks)


def close(iterable) -> None:
    closer = getattr(iterable, "close", None)
    if closer is not None:
        closer()


async def read_body(receive) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY_BYTES."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts)  # the client left; the view will not get far
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def disconnected(receive) -> None:
    """Returns when the client closes its connection."""
    while (await receive())["type"] != "http.disconnect":
        pass

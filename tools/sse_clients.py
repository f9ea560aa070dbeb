"""Many Server-Sent Events clients in one thread: an asyncio loop holds every stream (a socket each, no
thread each), for the web benchmark and the tests that open thousands of alert streams.

    clients = SSEClients(url, headers, "/alerts/stream?house_id=h1", 1000).open()
    delays = clients.delays(b"the-alert-id", lambda: insert(alert), timeout_s=10)
    clients.close()
"""
from __future__ import annotations

import asyncio
import resource
import threading
import time
from urllib.parse import urlparse

OPENING_AT_ONCE = 64  # streams being opened at the same time (the server prepares each one in a worker thread)


def raise_open_files_limit(needed: int) -> None:
    """Raise this process's soft limit of open files to the hard limit when `needed` sockets would not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class StreamRefused(RuntimeError):
    """A stream answered something else than 200."""


class SSEClients:
    """`count` streams of `path` with `headers`, opened by open() and held until close(); each reads its
    stream to the end, noting when a line holds a marker that delays() waits for."""

    def __init__(self, url: str, headers: dict[str, str], path: str, count: int):
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.request = "".join([f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n",
                                *(f"{name}: {value}\r\n" for name, value in headers.items()),
                                "\r\n"]).encode()
        self.count = count
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sse-clients", daemon=True)
        self.tasks: list[asyncio.Task] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.marker: bytes | None = None
        self.seen: list[float] = []
        self.all_seen: asyncio.Event | None = None
        self.ended = 0  # streams the server ended

    def open(self, timeout_s: float = 120.0) -> "SSEClients":
        """Open every stream and wait until each has sent its initial state (": ready");
        StreamRefused when one answers otherwise."""
        raise_open_files_limit(self.count + 256)
        self.thread.start()
        opening = asyncio.run_coroutine_threadsafe(self._open_all(), self.loop)
        try:
            opening.result(timeout_s)
        except BaseException:
            opening.cancel()
            self.close()
            raise
        return self

    async def _open_all(self) -> None:
        self.all_seen = asyncio.Event()
        gate = asyncio.Semaphore(OPENING_AT_ONCE)
        opened = [asyncio.ensure_future(self._open(gate)) for _ in range(self.count)]
        try:
            readers = await asyncio.gather(*opened)
        except BaseException:
            for task in opened:
                task.cancel()
            raise
        self.tasks = [asyncio.ensure_future(self._read(reader)) for reader in readers]

    async def _open(self, gate: asyncio.Semaphore) -> asyncio.StreamReader:
        async with gate:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.writers.append(writer)
            writer.write(self.request)
            status_line = await reader.readline()
            status = int(status_line.split()[1]) if status_line else 0
            if status != 200:
                raise StreamRefused(f"an alert stream answered {status_line.decode(errors='replace').strip()!r}")
            while b": ready" not in await reader.readline():  # headers, then the initial state
                pass
            return reader

    async def _read(self, reader: asyncio.StreamReader) -> None:
        noted = False
        while True:
            line = await reader.readline()
            if not line:
                self.ended += 1
                return
            if not noted and self.marker is not None and self.marker in line:
                noted = True
                self.seen.append(time.perf_counter())
                if len(self.seen) >= self.count:
                    self.all_seen.set()

    def delays(self, marker: bytes, trigger, timeout_s: float = 10.0) -> list[float]:
        """Call trigger() (which makes the server send `marker`) and wait until every stream has it or
        timeout_s: how long after the call each stream that got it read it (s), fastest first."""
        async def arm() -> None:
            self.marker, self.seen = marker, []
            self.all_seen.clear()

        async def wait() -> None:
            try:
                await asyncio.wait_for(self.all_seen.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass

        asyncio.run_coroutine_threadsafe(arm(), self.loop).result()
        started = time.perf_counter()
        trigger()
        asyncio.run_coroutine_threadsafe(wait(), self.loop).result()
        return sorted(t - started for t in list(self.seen))

    @property
    def connected(self) -> int:
        """Streams still open (neither refused nor ended by the server)."""
        return sum(1 for task in self.tasks if not task.done())

    def close(self) -> None:
        """Close every stream and stop the loop."""
        async def close_all() -> None:
            for task in self.tasks:
                task.cancel()
            for writer in self.writers:
                writer.close()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()

"""Serve the web application: uvicorn's event loop in front of the Flask app (webapp/asgi.py).

    python -m webapp [--host 127.0.0.1] [--port 8000] [--threads 64] [--processes 1]

Pages and API requests run in a pool of --threads worker threads per process. Live-alert
SSE streams and /blip long polls are authorised and prepared in a worker like any request,
then wait as coroutines on the event loop: they hold no thread, so thousands of them can be
open while the pages and the API keep answering. Their number is bounded per user
(SMW_WEB_SSE_MAX_STREAMS_PER_USER, SMW_WEB_BLIP_MAX_WAITS_PER_USER) and per process
(SMW_WEB_STREAMS_MAX; left null, the open-file limit, raised to its hard limit at start, less
a reserve of min(SMW_WEB_STREAMS_RESERVE_FILES, limit / 2) for everything else).
--processes N > 1 forks N servers that accept on one listening socket (Unix only):
one Python process serves on one core at a time (the GIL).
SIGTERM and Ctrl-C end the streams, let the requests under way finish, and exit 0.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import resource
import signal
import socket
import threading
import time

import uvicorn

from webapp import create_app, shutdown, stop_streams
from webapp.asgi import Front
from webapp.auth import is_loopback
from webapp.streams import streams_max_for

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
GRACEFUL_STOP_S = 5   # requests still under way this long after a stop signal are cancelled
KEEP_ALIVE_S = 30     # an idle keep-alive connection is closed after this long
BACKLOG = 2048
PR_SET_PDEATHSIG = 1


class StopServers(Exception):
    """SIGTERM or Ctrl-C reached the parent of forked servers."""


class Server(uvicorn.Server):
    """uvicorn's server, stopped by `signals`: the app's streams end first (in a thread: stopping the
    alert feed waits for its thread), then uvicorn closes the listener, finishes the requests under
    way and returns. Unlike uvicorn's own handling, the signal is not raised again afterwards, so the
    process exits 0."""

    def __init__(self, config: uvicorn.Config, on_stop, signals: tuple[int, ...]):
        super().__init__(config)
        self.on_stop, self.signals = on_stop, signals

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in self.signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit:
            log.info("signal %d: stopping", sig)
            threading.Thread(target=self.on_stop, name="stop-streams", daemon=True).start()
        super().handle_exit(sig, frame)


def open_files_limit() -> int:
    """The soft limit of open files, first raised to the hard limit: each open stream is a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit to %d: %s", hard, exc)
    return soft


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (an IPv6 address or name too)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def serve_app(args: argparse.Namespace, listener: socket.socket | None = None, forked: bool = False) -> None:
    """Serve one app on the listening socket (None: args.host and args.port) until SIGTERM (or Ctrl-C
    when not forked), then close it."""
    if listener is None:
        listener = listen(args.host, args.port)
    files = open_files_limit()
    app = create_app()
    if app.config["STREAMS_MAX"] is None:  # keep sockets for pages, the API and the data stores
        app.config["STREAMS_MAX"] = streams_max_for(files, int(app.config["STREAMS_RESERVE_FILES"]))
    front = Front(app, args.threads, multiprocess=forked)
    config = uvicorn.Config(
        front, loop="uvloop", http="httptools", ws="none", lifespan="off", interface="asgi3",
        log_config=None, access_log=False, proxy_headers=False,  # the client address is the peer's
        server_header=False, headers=[("Server", "smw")], backlog=BACKLOG,
        timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=GRACEFUL_STOP_S)
    if forked:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards Ctrl-C as SIGTERM
    server = Server(config, lambda: stop_streams(app),
                    (signal.SIGTERM,) if forked else (signal.SIGTERM, signal.SIGINT))
    log.info("process %d: %d worker threads, at most %d open streams", os.getpid(), args.threads,
             app.config["STREAMS_MAX"])
    try:
        server.run(sockets=[listener])
    finally:
        stop_streams(app)
        front.shutdown()
        shutdown(app)


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (elsewhere: nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def serve_forked(args: argparse.Namespace) -> None:
    """Fork args.processes servers on one listening socket and wait for them; stop them on SIGTERM."""
    listener = listen(args.host, args.port)
    children: list[int] = []
    for _ in range(args.processes):
        pid = os.fork()  # before create_app: no thread and no connection exists yet
        if pid == 0:
            status = 0
            try:
                die_with_parent()
                serve_app(args, listener, forked=True)
            except BaseException:
                log.exception("server process failed")
                status = 1
            finally:
                os._exit(status)  # never return into the parent's code
        children.append(pid)
    log.info("server processes %s", children)

    def stop(signum, _frame) -> None:
        raise StopServers(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while children:
            pid, status = os.wait()
            if pid in children:
                children.remove(pid)
                log.error("server process %d exited (status %d); stopping the others", pid, status)
                break
    except StopServers as signum:
        log.info("signal %s: stopping server processes", signum)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while children:
        for pid in list(children):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                children.remove(pid)
            elif time.monotonic() > deadline:
                log.warning("server process %d ignored SIGTERM; killing it", pid)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                children.remove(pid)
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webapp", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("SMW_WEB_HOST", "127.0.0.1"), help="bind address (env SMW_WEB_HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SMW_WEB_PORT", "8000")), help="port (env SMW_WEB_PORT)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("SMW_WEB_THREADS", "64")),
                        help="worker threads per process: requests served at once; open streams hold none (env SMW_WEB_THREADS)")
    parser.add_argument("--processes", type=int, default=int(os.environ.get("SMW_WEB_PROCESSES", "1")),
                        help="server processes sharing the port, Unix only (env SMW_WEB_PROCESSES)")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.threads < 1:
        parser.error("--processes and --threads must be at least 1")
    try:
        app = create_app()  # settings are checked here, before any server starts
    except (ValueError, OSError) as exc:
        parser.error(f"configuration: {exc}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    if not is_loopback(args.host) and not app.config["SESSION_COOKIE_SECURE"]:
        log.warning("serving on %s, beyond this machine, with SESSION_COOKIE_SECURE off: session cookies travel "
                    "without TLS and can be stolen on the way; serve through HTTPS and turn it on", args.host)
    log.info("serving on http://%s:%d with %d process(es) x %d threads", args.host, args.port, args.processes,
             args.threads)
    if args.processes == 1:
        serve_app(args)
    else:
        serve_forked(args)


if __name__ == "__main__":
    main()

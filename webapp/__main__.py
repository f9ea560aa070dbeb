"""Serve the web application with waitress, a production WSGI server.

    python -m webapp [--host 127.0.0.1] [--port 8000] [--threads 64] [--processes 1]

Each live-alerts client and /blip long poll holds one server thread while it is connected:
they may take all but min(SMW_WEB_STREAMS_RESERVE_THREADS, threads / 2) of --threads (per
process, SMW_WEB_STREAMS_MAX to set it), so pages and the API always keep some.
--processes N > 1 forks N servers that accept on one listening socket (Unix only):
one Python process serves on one core at a time (the GIL).
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import time

from waitress import serve

from webapp import create_app, shutdown, stop_streams
from webapp.auth import is_loopback
from webapp.streams import streams_max_for

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1


class StopServers(Exception):
    """SIGTERM or Ctrl-C reached the parent of forked servers."""


def serve_app(args: argparse.Namespace, sockets: list[socket.socket] | None = None) -> None:
    """Serve one app until SIGTERM or Ctrl-C, then close it."""
    app = create_app()
    if app.config["STREAMS_MAX"] is None:  # keep threads for pages and the API
        app.config["STREAMS_MAX"] = streams_max_for(args.threads, int(app.config["STREAMS_RESERVE_THREADS"]))

    def stop(signum, _frame) -> None:
        # On SystemExit waitress waits (up to 5 s) for its threads before serve() returns:
        # end the SSE streams first, so that they finish at once.
        log.info("signal %d: stopping", signum)
        stop_streams(app)
        raise SystemExit(0)

    # SIGTERM (a service manager, or a test stopping its server) and Ctrl-C end the process cleanly.
    signal.signal(signal.SIGTERM, stop)
    if sockets is None:
        signal.signal(signal.SIGINT, stop)
        where = {"host": args.host, "port": args.port}
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards Ctrl-C as SIGTERM
        where = {"sockets": sockets}
    try:
        serve(app, threads=args.threads, connection_limit=max(100, args.threads * 2), channel_timeout=300,
              ident="smw", **where)
    finally:
        shutdown(app)


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (elsewhere: nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def serve_forked(args: argparse.Namespace) -> None:
    """Fork args.processes servers on one listening socket and wait for them; stop them on SIGTERM."""
    listener = socket.create_server((args.host, args.port), backlog=1024)
    children: list[int] = []
    for _ in range(args.processes):
        pid = os.fork()  # before create_app: no thread and no connection exists yet
        if pid == 0:
            status = 0
            try:
                die_with_parent()
                serve_app(args, [listener])
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
                        help="worker threads per process: concurrent requests plus open SSE streams (env SMW_WEB_THREADS)")
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

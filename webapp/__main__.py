"""Serve the web application with waitress, a production WSGI server.

    python -m webapp [--host 127.0.0.1] [--port 8000] [--threads 64]

Each live-alerts client holds one server thread while it is connected, so
--threads bounds the SSE clients plus the concurrent API requests.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal

from waitress import serve

from webapp import create_app, shutdown, stop_streams

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webapp", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("SMW_WEB_HOST", "127.0.0.1"), help="bind address (env SMW_WEB_HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SMW_WEB_PORT", "8000")), help="port (env SMW_WEB_PORT)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("SMW_WEB_THREADS", "64")),
                        help="worker threads: concurrent requests plus open SSE streams (env SMW_WEB_THREADS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("serving on http://%s:%d with %d threads", args.host, args.port, args.threads)
    app = create_app()

    def stop(signum, _frame) -> None:
        # On SystemExit waitress waits (up to 5 s) for its threads before serve() returns:
        # end the SSE streams first, so that they finish at once.
        log.info("signal %d: stopping", signum)
        stop_streams(app)
        raise SystemExit(0)

    # SIGTERM (a service manager, or a test stopping its server) and Ctrl-C end the process cleanly.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        serve(app, host=args.host, port=args.port, threads=args.threads, connection_limit=max(100, args.threads * 2),
              channel_timeout=300, ident="smw")
    finally:
        shutdown(app)


if __name__ == "__main__":
    main()

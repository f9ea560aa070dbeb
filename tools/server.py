"""The web application served by `python -m webapp` in a child process, for tests, screenshots and benchmarks.

A child process rather than a server in a thread of the caller: closing an in-process
server while its threads still stream wrote into file descriptors the kernel had already
handed to the caller's next Cassandra connection (seen with waitress). A child owns its
descriptors, and its server threads do not compete with the caller's threads for the GIL.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode, urlparse

from smw import config

log = logging.getLogger(__name__)

PROBE_PATH = "/api/openapi.json"  # a static file: answers without any data store
LOG_TAIL_CHARS = 4000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    """The child server died or did not answer in time."""


class ServerProcess:
    """`python -m webapp` on 127.0.0.1 and a free port, configured by a Settings and SMW_WEB_* options,
    with `threads` per process and `processes` forked servers.

    The child's web options are exactly `web_config` over the app's defaults: SMW_WEB_*
    variables of the caller's environment are not passed on, so a run is reproducible.
    Stopped by its pid: SIGTERM, then SIGKILL after `stop_timeout_s`.
    """

    def __init__(self, settings: config.Settings, web_config: dict | None = None, threads: int = 32,
                 processes: int = 1, ready_timeout_s: float = 30.0, stop_timeout_s: float = 15.0):
        self.settings = settings
        self.web_config = dict(web_config or {})
        self.threads = threads
        self.processes = processes
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMW_WEB_")}
        env.update(self.settings.environ())
        # create_app reads these with from_prefixed_env, which parses JSON values
        env.update({f"SMW_WEB_{name}": json.dumps(value) for name, value in self.web_config.items()})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> "ServerProcess":
        self.port = free_port(self.host)
        handle, name = tempfile.mkstemp(prefix="smw-web-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(handle, "wb") as log_file:
            # cwd = the repository root, so that `-m webapp` imports this checkout's packages
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webapp", "--host", self.host, "--port", str(self.port),
                 "--threads", str(self.threads), "--processes", str(self.processes)],
                cwd=config.ROOT, env=self.environ(), stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT)
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop(keep_log=True)
            raise
        log.info("web server pid %d on %s", self.process.pid, self.url)
        return self

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.process.poll() is not None:
                raise ServerError(f"web server exited with status {self.process.returncode} before answering; "
                                  f"log {self.log_path}:\n{self.log_tail()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise ServerError(f"web server pid {self.process.pid} did not answer on {self.url} within "
                                  f"{self.ready_timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
        try:
            conn.request("GET", PROBE_PATH)
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return text[-chars:]

    def stop(self, keep_log: bool = False) -> None:
        """Terminate the child by its pid (SIGTERM, SIGKILL after stop_timeout_s) and remove its log."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("web server pid %d ignored SIGTERM for %.0f s; killing it", process.pid,
                            self.stop_timeout_s)
                process.kill()
                process.wait()
        if self.log_path is not None and not keep_log:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        keep_log = exc_type is not None
        if keep_log and self.log_path is not None:
            log.warning("web server log kept in %s", self.log_path)
        self.stop(keep_log=keep_log)


def make_user(settings: config.Settings, role: str = "admin", houses=(), password: str | None = None,
              name: str | None = None) -> tuple[str, str]:
    """A user (a fresh name unless given; replaced if it exists) with an API token in the settings'
    keyspace, whose schema must be applied: (name, token). For tests, benchmarks and screenshots."""
    from webapp import accounts
    from webapp.db import CassandraStore

    name = name or f"{role}-{uuid.uuid4().hex[:8]}"
    store = CassandraStore(settings)
    try:
        accounts.delete_user(store, name)
        hashed = accounts.hash_password(password) if password else None
        accounts.create_user(store, name, role, frozenset(houses), None, hashed)
        return name, accounts.new_token(store, name, "tools")
    finally:
        store.shutdown()


def sign_in(url: str, username: str, password: str) -> str:
    """Sign in through the login form as a browser does; the session's Cookie header value.

    By hand rather than with http.cookiejar, which never sends a Secure cookie over plain
    http (browsers do on loopback, where these servers run)."""
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        conn.request("GET", "/login")
        response = conn.getresponse()
        form = response.read().decode()
        cookie = _session_cookie(response)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        body = urlencode({"username": username, "password": password, "csrf_token": csrf})
        conn.request("POST", "/login", body=body, headers={
            "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        if response.status != 302:
            raise ServerError(f"sign-in of {username} answered {response.status}, not a redirect")
        return _session_cookie(response)
    finally:
        conn.close()


def _session_cookie(response) -> str:
    for header in response.headers.get_all("Set-Cookie") or []:
        if header.startswith("smw_session="):
            return header.split(";", 1)[0]
    raise ServerError("the answer set no session cookie")

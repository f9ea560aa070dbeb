"""The notifier (`python -m webapp.notify`) against real servers: Cassandra, reqlite, a local SMTP
server (aiosmtpd) and a local webhook receiver (http.server), each on a free 127.0.0.1 port.

Every test makes its own users (in the real `users` table) and houses; the notifier starts with
no stored place, so it follows alerts from its start on."""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from smw import config
from webapp import notifications as rules

from tests.webapp.conftest import make_alert

pytestmark = pytest.mark.integration

FAST = ["--poll-s", "0.2", "--retry-base-s", "0.3", "--retry-max-s", "1", "--refresh-s", "0.3",
        "--send-timeout-s", "2", "--resume-margin-s", "30"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class WebhookReceiver:
    """Records every POST (path, headers, raw body) and answers 204; start() and stop() at will."""

    def __init__(self, port: int):
        self.port = port
        self.received: list[dict] = []
        self._server = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"path": self.path, "headers": self.headers, "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args):
                pass

        self._handler = Handler

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of(self, alert_id: str) -> list[dict]:
        return [r for r in self.received if json.loads(r["body"])["id"] == alert_id]


class MailServer:
    """An aiosmtpd server that keeps every message it accepts; start() and stop() at will."""

    def __init__(self, port: int):
        self.port = port
        self.messages: list[email.message.EmailMessage] = []
        self._controller = None

    async def handle_DATA(self, _server, _session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def of(self, alert_id: str) -> list:
        return [m for m in self.messages if f"Alert id: {alert_id}" in m.get_content()]


@pytest.fixture
def receiver():
    found = WebhookReceiver(free_port())
    yield found
    found.stop()


@pytest.fixture
def mail():
    found = MailServer(free_port())
    yield found
    found.stop()


@pytest.fixture
def store(settings, cassandra_session):
    from webapp.db import CassandraStore

    found = CassandraStore(settings)
    # No stored place and nothing queued from earlier runs: the notifier starts from now.
    found.rows("DELETE FROM notifier_state WHERE name = ?", ("alerts",))
    found.rows("DELETE FROM notification_pending WHERE shard = ?", (0,))
    yield found
    found.shutdown()


# The accounts table (infra/cql/005_users.cql), as the notifier reads it; a no-op where the schema has it.
USERS_TABLE = ("CREATE TABLE IF NOT EXISTS users (username text PRIMARY KEY, password_hash text, role text, "
               "houses set<text>, email text, created timestamp)")


@pytest.fixture
def user(store):
    """user(houses, settings_body, role="household") -> username, a row of the users table; deleted afterwards."""
    store.session.execute(USERS_TABLE)
    made = []

    def make(houses, settings_body: dict, role: str = "household") -> str:
        name = f"n-{role}-{uuid.uuid4().hex[:8]}"
        store.rows("INSERT INTO users (username, role, houses) VALUES (?, ?, ?)", (name, role, set(houses)))
        settings = rules.parse_settings(settings_body, rules.Settings(), role == "admin")
        rules.save_settings(store, name, settings, dt.datetime.now(dt.timezone.utc))
        made.append(name)
        return name
    yield make
    for name in made:
        store.rows("DELETE FROM users WHERE username = ?", (name,))
        store.rows("DELETE FROM notification_settings WHERE username = ?", (name,))


class NotifierProcess:
    """`python -m webapp.notify` in a child process, its log in a file."""

    def __init__(self, settings: config.Settings, smtp_port: int, log_path: Path, extra: tuple[str, ...] = ()):
        self.settings, self.smtp_port, self.log_path, self.extra = settings, smtp_port, log_path, extra
        self.process = None
        self._starts = 0

    def start(self) -> None:
        env = {**os.environ, **self.settings.environ(), "SMW_SMTP_PORT": str(self.smtp_port),
               "SMW_SMTP_FROM": "smw@example.org"}
        self._starts += 1
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "webapp.notify", *FAST, *self.extra], cwd=config.ROOT, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.log().count("alert feed open") >= self._starts or self.process.poll() is not None,
                   60, "the notifier's feed")
        assert self.process.poll() is None, self.log()[-3000:]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def notifier(settings, store, mail, tmp_path):
    found = NotifierProcess(settings, mail.port, tmp_path / "notify.log")
    yield found
    found.stop()


def house() -> str:
    return f"nh-{uuid.uuid4().hex[:10]}"


def outbox(store, alert_id: str, state: str, username: str, channel: str):
    rows = store.rows("SELECT status, attempts, last_error FROM notification_outbox WHERE alert_id = ? AND state = ? "
                      "AND username = ? AND channel = ?", (alert_id, state, username, channel))
    return rows[0] if rows else None


def attempts(store, alert_id: str, state: str, username: str, channel: str) -> int:
    row = outbox(store, alert_id, state, username, channel)
    return (row.attempts or 0) if row is not None else 0


def status(store, alert_id: str, state: str, username: str, channel: str) -> str | None:
    row = outbox(store, alert_id, state, username, channel)
    return row.status if row is not None else None


def verify(request: dict, secret: str) -> bool:
    """What a receiver does: recompute the HMAC of the raw body and compare in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request["headers"]["X-SMW-Signature"])


SECRET = "test-secret-0123456789"


def test_exactly_once_per_state_across_outages_and_restarts(notifier, receiver, mail, user, store, insert_alert):
    """Receivers down at first, then up; the notifier killed and restarted twice; each state change
    reaches each channel exactly once."""
    home = house()
    name = user([home], {"webhook": {"url": receiver.url("/hook"), "secret": SECRET}, "email": "owner@example.org"})
    notifier.start()  # the receiver and the SMTP server are both down
    first = insert_alert(make_alert(home))
    steady = insert_alert(make_alert(home, appliance="oven", meter=7))  # stays open throughout
    # a target that failed is not tried again for the other deliveries of the same pass
    wait_until(lambda: all(sum(attempts(store, a["id"], "open", name, c) for a in (first, steady)) >= 2
                           for c in rules.CHANNELS), 30, "failed attempts on both channels")
    assert receiver.received == [] and mail.messages == []
    assert outbox(store, first["id"], "open", name, "webhook").status == "pending"
    assert "did not accept a delivery" in notifier.log()

    receiver.start()
    mail.start()
    wait_until(lambda: len(receiver.of(first["id"])) and len(mail.of(first["id"])) and len(receiver.of(steady["id"]))
               and len(mail.of(steady["id"])), 30, "the open deliveries")
    assert outbox(store, first["id"], "open", name, "email").status == "delivered"

    # Killed and restarted: the catch-up sees both alerts again, and sends nothing twice.
    notifier.kill()
    notifier.start()
    caught = [int(n) for n in re.findall(r"caught up on (\d+) alert", notifier.log())]
    assert caught[-1] >= 2, notifier.log()[-2000:]  # both alerts were seen again
    # Closed while the SMTP server is down: the webhook gets it at once, the e-mail once it is back.
    mail.stop()
    closed = insert_alert({**first, "state": "closed", "end_ts_s": time.time(), "updated_ts_s": time.time()})
    wait_until(lambda: len(receiver.of(first["id"])) == 2, 30, "the close by webhook")
    wait_until(lambda: attempts(store, first["id"], "closed", name, "email") >= 2, 30, "failed e-mail attempts")
    # Killed with the close e-mail still pending, and closed again while stopped: delivered after the restart.
    notifier.kill()
    mail.start()
    notifier.start()
    wait_until(lambda: len(mail.of(first["id"])) == 2, 30, "the close by e-mail")
    time.sleep(3)  # time for any duplicate to arrive

    for alert_id, states in ((first["id"], ["open", "closed"]), (steady["id"], ["open"])):
        hooks = receiver.of(alert_id)
        assert [json.loads(r["body"])["state"] for r in hooks] == states
        assert len({r["headers"]["X-SMW-Delivery"] for r in hooks}) == len(states)
        mails = mail.of(alert_id)
        assert sorted("closed" in m["Subject"] for m in mails) == sorted(s == "closed" for s in states)
        assert all(m["X-Envelope-To"] == "owner@example.org" for m in mails)
    assert all(verify(r, SECRET) for r in receiver.received)
    assert json.loads(receiver.of(first["id"])[1]["body"]) == closed
    assert all(abs(int(r["headers"]["X-SMW-Timestamp"]) - time.time()) < 120 for r in receiver.received)
    history = rules.deliveries(store, name, 50)
    assert {(d["alert_id"], d["state"], d["channel"], d["status"]) for d in history} == {
        (a, s, c, "delivered") for a, s in ((first["id"], "open"), (first["id"], "closed"), (steady["id"], "open"))
        for c in rules.CHANNELS}


def test_signature_verifies_only_with_the_channels_secret(notifier, receiver, user, insert_alert):
    home = house()
    user([home], {"webhook": {"url": receiver.url("/signed"), "secret": SECRET}})
    receiver.start()
    notifier.start()
    alert = insert_alert(make_alert(home))
    request = wait_until(lambda: receiver.of(alert["id"]), 20, "the webhook")[0]
    assert json.loads(request["body"]) == alert
    assert request["headers"]["X-SMW-Event"] == "alert.open"
    assert request["headers"]["Content-Type"] == "application/json"
    assert verify(request, SECRET)
    assert not verify(request, SECRET + "x")
    assert not verify({**request, "body": request["body"].replace(b'"open"', b'"closed"')}, SECRET)


def test_who_is_notified(notifier, receiver, user, insert_alert, store):
    """Granted household: yes. Household of another house, admin not opted in: nothing.
    Admin opted in: yes. A muted appliance: stored and shown, not delivered."""
    home, elsewhere = house(), house()
    hook = {"secret": SECRET}
    granted = user([home], {"webhook": {"url": receiver.url("/granted"), **hook}})
    other = user([elsewhere], {"webhook": {"url": receiver.url("/other"), **hook}})
    admin_out = user([], {"webhook": {"url": receiver.url("/admin-out"), **hook}}, role="admin")
    admin_in = user([], {"webhook": {"url": receiver.url("/admin-in"), **hook}, "all_houses": True}, role="admin")
    quiet_kinds = user([home], {"webhook": {"url": receiver.url("/no-data-only"), **hook}, "kinds": ["no_data"]})
    now_s = time.time()
    rules.save_mute(store, rules.parse_mute({"house_id": home, "appliance": "dryer", "duration_s": 600}, now_s),
                    granted, now_s)
    receiver.start()
    notifier.start()
    muted = insert_alert(make_alert(home, appliance="dryer", meter=9))
    alert = insert_alert(make_alert(home))
    wait_until(lambda: {r["path"] for r in receiver.of(alert["id"])} >= {"/granted", "/admin-in"}, 20, "deliveries")
    time.sleep(2)  # time for a wrong delivery to arrive
    assert sorted(r["path"] for r in receiver.of(alert["id"])) == ["/admin-in", "/granted"]
    assert receiver.of(muted["id"]) == []
    for name in (granted, admin_in):  # recorded as muted, for the user to see
        assert outbox(store, muted["id"], "open", name, "webhook").status == "muted"
    assert any(d["alert_id"] == muted["id"] and d["status"] == "muted" for d in rules.deliveries(store, granted, 10))
    for name in (other, admin_out, quiet_kinds):
        assert outbox(store, alert["id"], "open", name, "webhook") is None
    # the muted alert is stored as any other
    from smw import rethink
    with rethink.connection(notifier.settings) as conn:
        assert rethink.r.table("alerts").get(muted["id"]).run(conn)["appliance"] == "dryer"


def test_quiet_hours_delay_delivery_until_they_end(notifier, receiver, user, insert_alert, store):
    home = house()
    now = dt.datetime.now(dt.timezone.utc)
    # Quiet from the last minute to the next minute boundary at least 10 s away.
    end = (now + dt.timedelta(seconds=70 if now.second >= 50 else 60)).replace(second=0, microsecond=0)
    start = now - dt.timedelta(minutes=1)
    quiet = {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}
    sleeper = user([home], {"webhook": {"url": receiver.url("/sleeper"), "secret": SECRET}, "quiet_hours": quiet,
                            "tz": "UTC"})
    user([home], {"webhook": {"url": receiver.url("/awake"), "secret": SECRET}})
    receiver.start()
    notifier.start()
    alert = insert_alert(make_alert(home))
    wait_until(lambda: receiver.of(alert["id"]), 20, "the delivery outside quiet hours")
    assert [r["path"] for r in receiver.of(alert["id"])] == ["/awake"]
    assert outbox(store, alert["id"], "open", sleeper, "webhook").status == "pending"
    wait_until(lambda: len(receiver.of(alert["id"])) == 2, (end - now).total_seconds() + 20, "the end of quiet hours")
    arrived_s = time.time()
    assert arrived_s >= end.timestamp()
    assert [r["path"] for r in receiver.of(alert["id"])] == ["/awake", "/sleeper"]


def test_bad_documents_are_counted_and_skipped(notifier, receiver, user, insert_alert):
    home = house()
    user([home], {"webhook": {"url": receiver.url("/hook"), "secret": SECRET}})
    receiver.start()
    notifier.start()
    # Every field present (reqlite's compound index on house and start fails on a document without them).
    insert_alert({**make_alert(home), "severity": "apocalyptic"})
    insert_alert({**make_alert(home), "state": None})
    insert_alert({**make_alert(home), "kind": 42})
    good = insert_alert(make_alert(home))
    wait_until(lambda: receiver.of(good["id"]), 20, "the good alert")
    assert len(receiver.received) == 1
    assert notifier.process.poll() is None
    notifier.stop()
    log = notifier.log()
    for problem in ("unknown severity", "unknown state", "no kind"):
        assert f"alert document with {problem}" in log
    assert "bad 3" in log  # the counters logged at stop


def test_expired_deliveries_are_counted_and_logged(settings, store, mail, user, insert_alert, tmp_path, receiver):
    home = house()
    name = user([home], {"webhook": {"url": receiver.url("/never"), "secret": SECRET}})
    found = NotifierProcess(settings, mail.port, tmp_path / "expire.log", ("--expire-s", "2"))
    found.start()  # the receiver stays down
    try:
        alert = insert_alert(make_alert(home))
        wait_until(lambda: status(store, alert["id"], "open", name, "webhook") == "expired", 20, "the expiry")
        assert attempts(store, alert["id"], "open", name, "webhook") >= 2
        assert "expired after" in found.log()
    finally:
        found.stop()
    assert "expired 1" in found.log()

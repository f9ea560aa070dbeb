"""The notifier: each alert change (open, close) by webhook and e-mail to the users who may see it.

Delivered at least once, with no duplicate per (alert id, state, user, channel).

    python -m webapp.notify [--poll-s 1] [--expire-s 86400] [--smtp-host 127.0.0.1] ...

It follows the RethinkDB changefeed of the alerts table. On start it opens the feed, then
catches up on the alerts changed since its stored place (less a margin), then goes on with
the feed. Each change becomes one outbox row per (alert id, state, user, channel) in
Cassandra, inserted only if absent, so a change seen twice maps to the same row. A separate
loop sends what is due and marks a row delivered only once the channel accepted it; a failed
send is retried with exponential backoff until the row expires. Run one notifier per keyspace.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import signal
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate

from cassandra import DriverException, InvalidRequest, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from rethinkdb.errors import ReqlError

from smw import config, cql, rethink
from smw.alert import RETHINKDB_TABLE, document
from webapp import notifications as rules
from webapp.db import CassandraStore

log = logging.getLogger(__name__)
r = rethink.r

# InvalidRequest: a table missing (make init not run); logged and retried like an outage.
STORE_ERRORS = (DriverException, RequestExecutionException, InvalidRequest, NoHostAvailable, cql.Unavailable)
SHARD = 0  # one pending partition: one notifier per keyspace
CURSOR_NAME = "alerts"
SIGNATURE_HEADER = "X-SMW-Signature"
TIMESTAMP_HEADER = "X-SMW-Timestamp"
DELIVERY_HEADER = "X-SMW-Delivery"
EVENT_HEADER = "X-SMW-Event"


@dataclasses.dataclass(frozen=True)
class Options:
    """The notifier's timings and sizes; each has a flag and an environment variable SMW_NOTIFY_<NAME>."""

    poll_s: float = config.option(1.0, "seconds between passes over the deliveries due")
    retry_base_s: float = config.option(2.0, "first retry delay after a failed send; doubled each time")
    retry_max_s: float = config.option(300.0, "longest retry delay")
    expire_s: float = config.option(86400.0, "a delivery not accepted this long after it was due expires")
    refresh_s: float = config.option(5.0, "users and settings are read again this often")
    resume_margin_s: float = config.option(60.0, "the catch-up starts this long before the stored place")
    batch: int = config.option(10000, "pending deliveries read per pass")
    send_timeout_s: float = config.option(10.0, "timeout of one webhook POST or SMTP session")


def options_from_env(environ=os.environ) -> dict:
    """Option defaults from SMW_NOTIFY_<NAME> variables, typed as the dataclass defaults."""
    found = {}
    for f in dataclasses.fields(Options):
        text = environ.get("SMW_NOTIFY_" + f.name.upper())
        if text:
            try:
                found[f.name] = type(f.default)(text)
            except ValueError:
                raise SystemExit(f"SMW_NOTIFY_{f.name.upper()}={text!r} is not a {type(f.default).__name__}") from None
    return found


def delivery_id(alert_id: str, state: str, username: str, channel: str) -> str:
    """One id per delivery: the same on every retry, so a receiver can tell a repeat."""
    return hashlib.sha256(f"{alert_id}|{state}|{username}|{channel}".encode()).hexdigest()[:32]


def signature(secret: str, body: bytes) -> str:
    """The X-SMW-Signature value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- channels

class ChannelError(Exception):
    """A channel did not accept a delivery (the message is one line)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args, **_kwargs):
        return None  # a redirect is an answer other than 2xx: not accepted


_OPENER = urllib.request.build_opener(_NoRedirects)


def post_webhook(url: str, secret: str, body: bytes, headers: dict, timeout_s: float) -> None:
    """POST the body, signed; returns when the receiver answered 2xx."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "smw-notify", TIMESTAMP_HEADER: str(int(time.time())),
        SIGNATURE_HEADER: signature(secret, body), **headers})
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(65536)
            status = response.status
    except urllib.error.HTTPError as exc:
        raise ChannelError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ChannelError(str(getattr(exc, "reason", exc)) or type(exc).__name__) from None
    if not 200 <= status < 300:
        raise ChannelError(f"HTTP {status}")


def _plain(value) -> str:
    """A value for an e-mail header or line: no control characters."""
    return "".join(ch if ch.isprintable() else " " for ch in str(value))


def _when(ts_s) -> str:
    return "-" if ts_s is None else rules.as_utc(ts_s).strftime("%Y-%m-%d %H:%M:%S UTC")


def email_message(alert: dict, sender: str, to: str, message_key: str) -> EmailMessage:
    message = EmailMessage()
    verb = "opened" if alert["state"] == "open" else "closed"
    message["Subject"] = _plain(f"[SMW] {alert['severity']}: {alert['kind']} {verb} - house {alert['house_id']}, "
                                f"{alert.get('appliance') or 'meter ' + str(alert.get('meter'))}")
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=False)
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<{message_key}@{domain}>"  # the same on a retry: mail clients show it once
    lines = [f"Alert {verb}: {alert['kind']} on {alert.get('appliance')} (meter {alert.get('meter')}) "
             f"in house {alert['house_id']}",
             f"Severity: {alert['severity']}",
             f"Started: {_when(alert.get('start_ts_s'))}",
             f"Ended: {_when(alert.get('end_ts_s'))}",
             f"Peak: {alert.get('peak_w')} W, threshold {alert.get('threshold_w')} W",
             f"Alert id: {alert['id']}"]
    message.set_content("\n".join(_plain(line) for line in lines) + "\n")
    return message


def send_email(settings: config.Settings, message: EmailMessage, timeout_s: float) -> None:
    """Hand the message to the SMTP server; returns when it accepted it."""
    try:
        with smtplib.SMTP(settings.smtp_host, int(settings.smtp_port), timeout=timeout_s) as smtp:
            if settings.smtp_starttls == "1":
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
            smtp.send_message(message)
    except smtplib.SMTPException as exc:
        raise ChannelError(f"SMTP: {type(exc).__name__} {getattr(exc, 'smtp_code', '')}".strip()) from None
    except OSError as exc:
        raise ChannelError(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {exc.strerror or exc}") from None


def shown_target(channel: str, target: str) -> str:
    """A target as logs and the history show it: a webhook's scheme, host and path, no query."""
    if channel != "webhook":
        return target
    parts = urllib.parse.urlsplit(target)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


# ---------------------------------------------------------------- users and their settings

class Directory:
    """Users (the `users` table) and their notification settings, read again every refresh_s."""

    def __init__(self, store: CassandraStore, refresh_s: float, counters: "Counters"):
        self._store = store
        self._refresh_s = refresh_s
        self._counters = counters
        self._read_at = -1e18
        self.accounts: dict[str, rules.Account] = {}
        self.settings: dict[str, rules.Settings] = {}

    def refresh(self, now_s: float, force: bool = False) -> None:
        if not force and now_s - self._read_at < self._refresh_s:
            return
        accounts = {}
        for row in self._store.rows("SELECT username, role, houses FROM users"):
            if row.role not in ("admin", "household") or not row.username:
                self._counters.bad("user row with an unknown role", row.username)
                continue
            accounts[row.username] = rules.Account(row.username, row.role, frozenset(row.houses or ()))
        settings = {row.username: rules.settings_from_row(row) for row in self._store.rows(
            f"SELECT username, {rules.SETTINGS_COLUMNS} FROM notification_settings")}
        self.accounts, self.settings, self._read_at = accounts, settings, now_s

    def recipients(self) -> tuple[list[rules.Account], dict[str, rules.Settings]]:
        return list(self.accounts.values()), self.settings


class Counters:
    """What the notifier did, logged every minute and at stop; bad input is logged once per kind."""

    NAMES = ("changes", "bad", "planned", "muted", "delivered", "failed_attempts", "expired", "dropped")

    def __init__(self):
        self._lock = threading.Lock()
        self.values = dict.fromkeys(self.NAMES, 0)
        self._bad_kinds: set[str] = set()

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self.values[name] += count

    def bad(self, kind: str, what) -> None:
        self.add("bad")
        with self._lock:
            first = kind not in self._bad_kinds
            self._bad_kinds.add(kind)
        (log.warning if first else log.debug)("skipped: %s (%r); counted as bad", kind, what)

    def line(self) -> str:
        with self._lock:
            return ", ".join(f"{name} {value}" for name, value in self.values.items())


# ---------------------------------------------------------------- outbox

class Outbox:
    """The durable outbox (notification_outbox), its queue (notification_pending), the users'
    history (notification_history) and the notifier's place in the feed (notifier_state)."""

    def __init__(self, store: CassandraStore):
        self.store = store

    def _execute(self, statement: str, params: tuple):
        return self.store.session.execute(self.store.prepared(statement), params)

    def add(self, alert: dict, planned: rules.Planned, now_s: float) -> bool:
        """The outbox row of one delivery, if it is not there yet; True if it was new."""
        now = rules.as_utc(now_s)
        payload = json.dumps(alert, separators=(",", ":"), sort_keys=True)
        result = self._execute(
            "INSERT INTO notification_outbox (alert_id, state, username, channel, house_id, kind, severity, appliance, "
            "payload, status, created_at, due_at, next_attempt_at, attempts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) IF NOT EXISTS",
            (alert["id"], alert["state"], planned.username, planned.channel, alert["house_id"], alert["kind"],
             alert["severity"], alert.get("appliance"), payload, planned.status, now, now, now))
        row = None if result.was_applied else result.one()
        if row is not None and row.status != "pending":
            return False  # settled before: nothing to do
        # New, or pending from an earlier run that may have stopped before the rows below: (re)write them.
        if row is None:
            self._history(planned.username, now, alert["id"], alert["state"], planned.channel, alert,
                          planned.status, 0, None, None, None)
        else:
            self._history(planned.username, row.created_at, alert["id"], alert["state"], planned.channel, alert,
                          row.status, row.attempts or 0, row.last_error, row.target, None)
        if planned.status == "pending" or (row is not None and row.status == "pending"):
            self._execute("INSERT INTO notification_pending (shard, alert_id, state, username, channel, "
                          "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
                          (SHARD, alert["id"], alert["state"], planned.username, planned.channel,
                           row.next_attempt_at if row is not None else now))
        return row is None

    def _history(self, username, created, alert_id, state, channel, alert, status, attempts, last_error, target,
                 delivered_at) -> None:
        self._execute(
            "INSERT INTO notification_history (username, created_at, alert_id, state, channel, house_id, kind, "
            "severity, appliance, status, attempts, last_error, target, delivered_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (username, created, alert_id, state, channel, alert["house_id"], alert["kind"], alert["severity"],
             alert.get("appliance"), status, attempts, last_error, target, delivered_at))

    def pending(self, limit: int) -> list:
        return self.store.rows("SELECT alert_id, state, username, channel, next_attempt_at FROM notification_pending "
                               "WHERE shard = ? LIMIT ?", (SHARD, limit))

    def get(self, key: tuple):
        rows = self.store.rows(
            "SELECT alert_id, state, username, channel, house_id, kind, severity, appliance, payload, status, "
            "created_at, due_at, attempts, last_error FROM notification_outbox "
            "WHERE alert_id = ? AND state = ? AND username = ? AND channel = ?", key)
        return rows[0] if rows else None

    def unqueue(self, key: tuple) -> None:
        self._execute("DELETE FROM notification_pending WHERE shard = ? AND alert_id = ? AND state = ? "
                      "AND username = ? AND channel = ?", (SHARD, *key))

    def settle(self, row, status: str, now_s: float, target: str | None, error: str | None) -> None:
        """A final status (delivered, expired, dropped): outbox first, then history, then the queue."""
        key = (row.alert_id, row.state, row.username, row.channel)
        delivered_at = rules.as_utc(now_s) if status == "delivered" else None
        attempts = (row.attempts or 0) + (1 if status == "delivered" else 0)
        self._execute("UPDATE notification_outbox SET status = ?, delivered_at = ?, attempts = ?, last_error = ?, "
                      "target = ? WHERE alert_id = ? AND state = ? AND username = ? AND channel = ?",
                      (status, delivered_at, attempts, error, target, *key))
        self._history(row.username, row.created_at, row.alert_id, row.state, row.channel, _fields(row), status,
                      attempts, error, target, delivered_at)
        self.unqueue(key)

    def retry_at(self, row, next_s: float, attempts: int, error: str | None, target: str | None,
                 due_s: float | None = None) -> None:
        """Keep a delivery pending until next_s (after a failed attempt, or the end of quiet hours)."""
        key = (row.alert_id, row.state, row.username, row.channel)
        when = rules.as_utc(next_s)
        due = rules.as_utc(due_s) if due_s is not None else row.due_at
        self._execute("UPDATE notification_outbox SET next_attempt_at = ?, attempts = ?, last_error = ?, target = ?, "
                      "due_at = ? WHERE alert_id = ? AND state = ? AND username = ? AND channel = ?",
                      (when, attempts, error, target, due, *key))
        self._history(row.username, row.created_at, row.alert_id, row.state, row.channel, _fields(row), "pending",
                      attempts, error, target, None)
        self._execute("UPDATE notification_pending SET next_attempt_at = ? WHERE shard = ? AND alert_id = ? "
                      "AND state = ? AND username = ? AND channel = ?", (when, SHARD, *key))

    def cursor(self) -> float | None:
        rows = self.store.rows("SELECT cursor_ts_s FROM notifier_state WHERE name = ?", (CURSOR_NAME,))
        return rows[0].cursor_ts_s if rows else None

    def set_cursor(self, ts_s: float, now_s: float) -> None:
        self.store.rows("INSERT INTO notifier_state (name, cursor_ts_s, updated_at) VALUES (?, ?, ?)",
                        (CURSOR_NAME, ts_s, rules.as_utc(now_s)))


def _fields(row) -> dict:
    return {"house_id": row.house_id, "kind": row.kind, "severity": row.severity, "appliance": row.appliance}


# ---------------------------------------------------------------- the notifier

class Notifier:
    """The feed follower (a thread) and the sender (run in the caller's thread)."""

    def __init__(self, settings: config.Settings, options: Options):
        self.settings = settings
        self.options = options
        self.counters = Counters()
        self.store = CassandraStore(settings)
        self.outbox = Outbox(self.store)
        self.directory = Directory(self.store, options.refresh_s, self.counters)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.caught_up = threading.Event()
        self._cursor_s: float | None = None
        self._feed_conn = None
        self._failing: dict[tuple[str, str], int] = {}

    # -- following the alert feed ---------------------------------------------------------
    def handle(self, doc) -> None:
        """Plan the deliveries of one alert change (raises a store error to be retried)."""
        if doc is None:
            return  # a deleted document
        self.counters.add("changes")
        problem = rules.check_alert(doc)
        if problem is not None:
            self.counters.bad(f"alert document with {problem}", doc.get("id") if isinstance(doc, dict) else doc)
            return
        alert = document(doc)
        now_s = time.time()
        at_s = alert["updated_ts_s"] if alert["updated_ts_s"] is not None else now_s
        self.directory.refresh(now_s)
        accounts, settings = self.directory.recipients()
        mutes = rules.mutes_of_house(self.store, alert["house_id"])
        new = 0
        for planned in rules.plan(alert, accounts, settings, mutes, at_s):
            if self.outbox.add(alert, planned, now_s):
                new += 1
                self.counters.add("muted" if planned.status == "muted" else "planned")
        if alert["updated_ts_s"] is not None and (self._cursor_s is None or alert["updated_ts_s"] > self._cursor_s):
            self.outbox.set_cursor(alert["updated_ts_s"], now_s)
            self._cursor_s = alert["updated_ts_s"]
        if new:
            self.wake.set()

    def catch_up(self) -> int:
        """Plan every alert changed since the stored place (less the margin), oldest first."""
        self._cursor_s = self.outbox.cursor()
        if self._cursor_s is None:  # a first start: from now on
            self._cursor_s = time.time()
            self.outbox.set_cursor(self._cursor_s, self._cursor_s)
            return 0
        since_s = self._cursor_s - self.options.resume_margin_s
        count = 0
        with rethink.connection(self.settings) as conn:
            # order_by before between: reqlite refuses the other order for this index
            cursor = (r.db(self.settings.rethinkdb_db).table(RETHINKDB_TABLE).order_by(index="updated_ts_s")
                      .between(since_s, r.maxval, index="updated_ts_s").run(conn))
            for doc in cursor:
                if self.stopping.is_set():
                    break
                self.handle(doc)
                count += 1
        return count

    def follow(self) -> None:
        """Open the changefeed, catch up, then plan each change; reconnect on failures."""
        failures = 0
        while not self.stopping.is_set():
            try:
                self._feed_conn = rethink.connect(self.settings)
                feed = r.db(self.settings.rethinkdb_db).table(RETHINKDB_TABLE).changes().run(self._feed_conn)
                # The feed is open before the catch-up reads: a change in between is in both, planned once.
                caught = self.catch_up()
                log.info("alert feed open; caught up on %d alert(s) changed since %s", caught,
                         "the start" if self._cursor_s is None else f"{self._cursor_s:.3f}")
                if failures:
                    log.info("alert feed open again after %d failure(s)", failures)
                failures = 0
                self.caught_up.set()
                for change in feed:
                    self.handle(change.get("new_val") if isinstance(change, dict) else change)
            except (ReqlError, OSError, *STORE_ERRORS) as exc:
                if self.stopping.is_set():
                    break
                failures += 1
                (log.error if failures == 1 else log.debug)("alert feed failed (%s); retrying", exc)
                self.stopping.wait(min(1.0 * failures, 10.0))
            finally:
                conn, self._feed_conn = self._feed_conn, None
                if conn is not None:
                    try:
                        rethink.close(conn)
                    except (ReqlError, OSError):
                        pass

    # -- sending ------------------------------------------------------------------------
    def send(self, row, settings: rules.Settings, target: str) -> None:
        alert = json.loads(row.payload)
        key = delivery_id(row.alert_id, row.state, row.username, row.channel)
        if row.channel == "webhook":
            post_webhook(target, settings.webhook_secret, row.payload.encode(),
                         {DELIVERY_HEADER: key, EVENT_HEADER: f"alert.{row.state}"}, self.options.send_timeout_s)
        else:
            send_email(self.settings, email_message(alert, self.settings.smtp_from, target, key),
                       self.options.send_timeout_s)

    def deliver(self, key: tuple, now_s: float, down: dict) -> None:
        """Send one due delivery, or settle it, or set its next attempt."""
        row = self.outbox.get(key)
        if row is None or row.status != "pending":
            self.outbox.unqueue(key)  # settled (or gone past its TTL): only the queue entry was left
            return
        try:
            payload_ok = isinstance(json.loads(row.payload), dict)
        except (TypeError, ValueError):
            payload_ok = False
        if not payload_ok:
            self.counters.bad("outbox row with a damaged payload", key)
            self.outbox.settle(row, "dropped", now_s, None, "damaged payload")
            self.counters.add("dropped")
            return
        settings = self.directory.settings.get(row.username)
        account = self.directory.accounts.get(row.username)
        due_s = rules.ts_s(row.due_at) or now_s
        if now_s >= due_s + self.options.expire_s:
            self.counters.add("expired")
            log.warning("delivery of alert %s (%s) to %s by %s expired after %d attempt(s): %s", row.alert_id,
                        row.state, row.username, row.channel, row.attempts or 0, row.last_error)
            self.outbox.settle(row, "expired", now_s, None, row.last_error)
            return
        allowed = account is not None and settings is not None and (
            settings.all_houses if account.is_admin else row.house_id in account.houses)
        target = settings.channel_target(row.channel) if settings is not None else None
        if not allowed or target is None:
            reason = "no longer granted the house" if not allowed else f"{row.channel} channel removed"
            self.counters.add("dropped")
            log.info("delivery of alert %s to %s by %s dropped: %s", row.alert_id, row.username, row.channel, reason)
            self.outbox.settle(row, "dropped", now_s, None, reason)
            return
        quiet_end_s = rules.quiet_until(now_s, settings)
        if quiet_end_s is not None:
            # Waits for the end of the quiet hours; its expiry counts from then if it was never tried.
            self.outbox.retry_at(row, quiet_end_s, row.attempts or 0, row.last_error, None,
                                 due_s=quiet_end_s if not row.attempts else None)
            return
        shown = shown_target(row.channel, target)
        if (row.channel, target) in down:  # failed a moment ago in this pass: not tried again now
            self.outbox.retry_at(row, down[(row.channel, target)], row.attempts or 0, row.last_error, shown)
            return
        try:
            self.send(row, settings, target)
        except ChannelError as exc:
            attempts = (row.attempts or 0) + 1
            next_s = now_s + min(self.options.retry_base_s * 2 ** (attempts - 1), self.options.retry_max_s)
            down[(row.channel, target)] = next_s
            self.counters.add("failed_attempts")
            failures = self._failing[(row.channel, shown)] = self._failing.get((row.channel, shown), 0) + 1
            # loud on a target's first failure, quiet while it repeats
            (log.warning if failures == 1 else log.debug)(
                "%s %s did not accept a delivery (%s); retrying in %.1f s", row.channel, shown, exc, next_s - now_s)
            self.outbox.retry_at(row, next_s, attempts, str(exc)[:300], shown)
            return
        self.outbox.settle(row, "delivered", time.time(), shown, None)
        self.counters.add("delivered")
        failures = self._failing.pop((row.channel, shown), 0)
        if failures:
            log.info("%s %s accepts deliveries again after %d failed attempt(s)", row.channel, shown, failures)

    def send_due(self) -> int:
        """One pass over the pending deliveries: send those due. Returns how many were pending."""
        now_s = time.time()
        self.directory.refresh(now_s)
        rows = self.outbox.pending(self.options.batch)
        due = sorted((r for r in rows if (rules.ts_s(r.next_attempt_at) or 0) <= now_s),
                     key=lambda r: rules.ts_s(r.next_attempt_at) or 0)
        down: dict = {}
        for row in due:
            if self.stopping.is_set():
                break
            self.deliver((row.alert_id, row.state, row.username, row.channel), time.time(), down)
        return len(rows)

    def run(self) -> None:
        """Follow the feed in a thread and send in this one until stop()."""
        follower = threading.Thread(target=self.follow, name="alert-feed", daemon=True)
        follower.start()
        last_report = time.monotonic()
        failures = 0
        try:
            while not self.stopping.is_set():
                try:
                    self.send_due()
                    if failures:
                        log.info("Cassandra answers again after %d failed pass(es)", failures)
                    failures = 0
                except STORE_ERRORS as exc:
                    failures += 1
                    (log.error if failures == 1 else log.debug)("delivery pass failed (%s); retrying", exc)
                if time.monotonic() - last_report >= 60:
                    log.info("notifier: %s", self.counters.line())
                    last_report = time.monotonic()
                self.wake.wait(self.options.poll_s)
                self.wake.clear()
        finally:
            self.stop()
            follower.join(10)
            log.info("notifier stopped: %s", self.counters.line())
            self.store.shutdown()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        conn = self._feed_conn
        if conn is not None:
            # The driver logs the feed's read, cut short by this close, as an error: it is the stop.
            logging.getLogger("rethinkdb").setLevel(logging.CRITICAL)
            try:
                rethink.close(conn)  # ends the feed's blocking read
            except (ReqlError, OSError):
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webapp.notify", description=__doc__.splitlines()[0],
                                     epilog="Each option's default can be set as SMW_NOTIFY_<OPTION> (e.g. "
                                            "SMW_NOTIFY_EXPIRE_S=3600). See docs/webapp.md, Notifications.")
    config.add_options(parser, Options)
    parser.set_defaults(**options_from_env())
    config.add_arguments(parser, "cassandra_hosts", "cassandra_port", "cassandra_keyspace", "cassandra_username",
                         "cassandra_password", "rethinkdb_host", "rethinkdb_port", "rethinkdb_db", "smtp_host",
                         "smtp_port", "smtp_starttls", "smtp_username", "smtp_password", "smtp_from")
    args = parser.parse_args(argv)
    options = config.options_from_args(Options, args)
    if min(options.poll_s, options.retry_base_s, options.retry_max_s, options.expire_s, options.send_timeout_s) <= 0:
        parser.error("--poll-s, --retry-base-s, --retry-max-s, --expire-s and --send-timeout-s must be positive")
    if options.batch < 1 or options.refresh_s < 0 or options.resume_margin_s < 0:
        parser.error("--batch must be at least 1, --refresh-s and --resume-margin-s not negative")
    settings = config.from_args(args)
    if settings.smtp_starttls not in ("0", "1"):
        parser.error(f"SMW_SMTP_STARTTLS must be 0 or 1, not {settings.smtp_starttls!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    notifier = Notifier(settings, options)
    try:
        # Connect and read each table now: a wrong address or a missing table is a one-line error at start.
        for table in ("users", "notification_settings", "notification_outbox", "notifier_state"):
            notifier.store.rows(f"SELECT * FROM {table} LIMIT 1")
    except cql.Unavailable as exc:
        print(f"python -m webapp.notify: {exc}")
        return 2
    except InvalidRequest as exc:
        print(f"python -m webapp.notify: keyspace {settings.cassandra_keyspace!r}: {exc.message}; "
              "create the tables with make init")
        notifier.store.shutdown()
        return 2

    def stop(signum, _frame) -> None:
        log.info("signal %d: stopping", signum)
        notifier.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("notifier started: keyspace %s, RethinkDB %s:%s/%s, SMTP %s:%s", settings.cassandra_keyspace,
             settings.rethinkdb_host, settings.rethinkdb_port, settings.rethinkdb_db, settings.smtp_host,
             settings.smtp_port)
    notifier.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Notification settings, acknowledgements and mutes: validation, the rules that decide who is
notified of an alert change, and their Cassandra tables (infra/cql/006_notifications.cql).

Shared by the web API (webapp/notify_views.py) and the notifier process (webapp/notify.py)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from smw.alert import KIND_NEW_PEAK, KIND_NO_DATA, KIND_OVERSHOOT
from webapp.queries import as_utc, ts_s

UTC = dt.timezone.utc
KINDS = (KIND_OVERSHOOT, KIND_NO_DATA, KIND_NEW_PEAK)
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
STATES = ("open", "closed")
CHANNELS = ("webhook", "email")
MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 256
MAX_URL_CHARS = 2048
MAX_MUTE_S = 90 * 86400
MAX_REASON_CHARS = 200
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


class Invalid(ValueError):
    """A settings document or mute that breaks a rule; the message names the field."""


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    """One user's notification settings (defaults: every kind and severity, no channel)."""

    kinds: frozenset[str] = frozenset(KINDS)
    min_severity: str = "info"
    tz: str = "UTC"
    quiet_start_min: int | None = None
    quiet_end_min: int | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    email: str | None = None
    all_houses: bool = False

    def channel_target(self, channel: str) -> str | None:
        """Where a channel delivers (url or address), None when the user has not set it."""
        if channel == "webhook":
            return self.webhook_url if self.webhook_url and self.webhook_secret else None
        if channel == "email":
            return self.email
        return None

    def public(self) -> dict:
        """The settings as the API shows them: the webhook secret is never sent back."""
        quiet = None
        if self.quiet_start_min is not None and self.quiet_end_min is not None:
            quiet = {"start": _hhmm(self.quiet_start_min), "end": _hhmm(self.quiet_end_min)}
        return {
            "kinds": sorted(self.kinds), "min_severity": self.min_severity, "tz": self.tz, "quiet_hours": quiet,
            "webhook": ({"url": self.webhook_url, "secret_set": bool(self.webhook_secret)}
                        if self.webhook_url else None),
            "email": self.email, "all_houses": self.all_houses,
        }


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(field: str, text) -> int:
    if not isinstance(text, str) or not _HHMM.fullmatch(text):
        raise Invalid(f"{field} must be a time HH:MM (00:00-23:59)")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def zone(tz_name: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"tz {tz_name!r} is not a known time zone (e.g. Europe/Berlin, America/New_York)") from None


def check_webhook_url(url) -> str:
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_CHARS:
        raise Invalid(f"webhook.url must be a URL of at most {MAX_URL_CHARS} characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise Invalid("webhook.url must be an http:// or https:// URL with a host")
    return url


def check_email(address) -> str:
    if not isinstance(address, str) or len(address) > 254 or not _EMAIL.fullmatch(address):
        raise Invalid("email must be an address like name@example.org")
    return address


def parse_settings(body, current: Settings, is_admin: bool) -> Settings:
    """New settings from a PUT body: a JSON object whose fields replace the current ones.

    A field left out keeps its value; null clears quiet_hours, webhook and email. A webhook
    without a secret keeps the stored one (there must be one)."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    unknown = set(body) - {"kinds", "min_severity", "tz", "quiet_hours", "webhook", "email", "all_houses"}
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    changes: dict = {}
    if "kinds" in body:
        kinds = body["kinds"]
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds) or set(kinds) - set(KINDS):
            raise Invalid(f"kinds must be a list of {', '.join(KINDS)}")
        changes["kinds"] = frozenset(kinds)
    if "min_severity" in body:
        if body["min_severity"] not in SEVERITY_RANK:
            raise Invalid(f"min_severity must be one of {', '.join(SEVERITY_RANK)}")
        changes["min_severity"] = body["min_severity"]
    if "tz" in body:
        if not isinstance(body["tz"], str) or not 0 < len(body["tz"]) <= 64:
            raise Invalid("tz must be a time zone name")
        zone(body["tz"])
        changes["tz"] = body["tz"]
    if "quiet_hours" in body:
        quiet = body["quiet_hours"]
        if quiet is None:
            changes["quiet_start_min"] = changes["quiet_end_min"] = None
        elif isinstance(quiet, dict) and set(quiet) == {"start", "end"}:
            changes["quiet_start_min"] = _minutes("quiet_hours.start", quiet["start"])
            changes["quiet_end_min"] = _minutes("quiet_hours.end", quiet["end"])
        else:
            raise Invalid('quiet_hours must be null or {"start": "HH:MM", "end": "HH:MM"}')
    if "webhook" in body:
        hook = body["webhook"]
        if hook is None:
            changes["webhook_url"] = changes["webhook_secret"] = None
        elif isinstance(hook, dict) and set(hook) <= {"url", "secret"} and "url" in hook:
            changes["webhook_url"] = check_webhook_url(hook["url"])
            secret = hook.get("secret")
            if secret is None:
                if not current.webhook_secret:
                    raise Invalid("webhook.secret is required (none is stored)")
            elif (not isinstance(secret, str) or not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS
                  or not secret.isprintable()):
                raise Invalid(f"webhook.secret must be {MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} printable characters")
            else:
                changes["webhook_secret"] = secret
        else:
            raise Invalid('webhook must be null or {"url": "https://...", "secret": "..."}')
    if "email" in body:
        changes["email"] = None if body["email"] is None else check_email(body["email"])
    if "all_houses" in body:
        if not isinstance(body["all_houses"], bool):
            raise Invalid("all_houses must be true or false")
        if body["all_houses"] and not is_admin:
            raise Invalid("all_houses is for administrators; household users are notified of their own houses")
        changes["all_houses"] = body["all_houses"]
    return dataclasses.replace(current, **changes)


def settings_from_row(row) -> Settings:
    """A notification_settings row; values the API would refuse fall back to their defaults."""
    if row is None:
        return Settings()
    kinds = frozenset(k for k in (row.kinds or ()) if k in KINDS) if row.kinds is not None else frozenset(KINDS)
    try:
        zone(row.tz or "UTC")
        tz = row.tz or "UTC"
    except Invalid:
        tz = "UTC"
    return Settings(
        kinds=kinds, min_severity=row.min_severity if row.min_severity in SEVERITY_RANK else "info", tz=tz,
        quiet_start_min=row.quiet_start_min, quiet_end_min=row.quiet_end_min, webhook_url=row.webhook_url,
        webhook_secret=row.webhook_secret, email=row.email, all_houses=bool(row.all_houses),
    )


def quiet_until(now_s: float, settings: Settings) -> float | None:
    """The end (epoch s) of the quiet hours now_s falls in, in the user's zone; None outside them."""
    start, end = settings.quiet_start_min, settings.quiet_end_min
    if start is None or end is None or start == end:
        return None
    tz = ZoneInfo(settings.tz)
    local = dt.datetime.fromtimestamp(now_s, tz)
    minute = local.hour * 60 + local.minute + local.second / 60
    if start < end:
        inside, end_day = start <= minute < end, local.date()
    else:  # across midnight
        inside = minute >= start or minute < end
        end_day = local.date() + dt.timedelta(days=1) if minute >= start else local.date()
    if not inside:
        return None
    ends = dt.datetime.combine(end_day, dt.time(end // 60, end % 60), tzinfo=tz)
    return max(ends.timestamp(), now_s)


# ---------------------------------------------------------------- who is notified

@dataclass(frozen=True)
class Account:
    """What the notifier needs of a `users` row."""

    username: str
    role: str
    houses: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def may_see(user, house_id: str) -> bool:
    """Whether a user (a web-session user or an Account) may see a house."""
    return user is not None and (user.is_admin or house_id in user.houses)


def mute_covers(mute: dict, alert: dict, at_s: float) -> bool:
    return (mute["house_id"] == alert["house_id"] and mute["appliance"] in (None, alert.get("appliance"))
            and mute["from_ts_s"] <= at_s < mute["until_ts_s"])


@dataclass(frozen=True)
class Planned:
    username: str
    channel: str
    status: str  # pending or muted


def plan(alert: dict, accounts: list[Account], settings_by_user: dict[str, Settings], mutes: list[dict],
         at_s: float) -> list[Planned]:
    """The deliveries of one alert change: each channel of each user who may see the house, wants
    the alert's kind and severity and has the channel set; `muted` when a mute covers it at at_s.
    Household users are notified of their granted houses, admins only when they opted in."""
    muted = any(mute_covers(m, alert, at_s) for m in mutes)
    planned = []
    for account in accounts:
        settings = settings_by_user.get(account.username)
        if settings is None:
            continue
        allowed = settings.all_houses if account.is_admin else alert["house_id"] in account.houses
        if not allowed or alert["kind"] not in settings.kinds:
            continue
        if SEVERITY_RANK[alert["severity"]] < SEVERITY_RANK[settings.min_severity]:
            continue
        for channel in CHANNELS:
            if settings.channel_target(channel):
                planned.append(Planned(account.username, channel, "muted" if muted else "pending"))
    return planned


def check_alert(doc) -> str | None:
    """What is wrong with an alert document for notifying (None: nothing)."""
    if not isinstance(doc, dict):
        return "not an object"
    for name in ("id", "house_id", "kind"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            return f"no {name}"
    if doc.get("state") not in STATES:
        return "unknown state"
    if doc.get("severity") not in SEVERITY_RANK:
        return "unknown severity"
    updated = doc.get("updated_ts_s")
    if updated is not None and (not isinstance(updated, (int, float)) or isinstance(updated, bool)):
        return "updated_ts_s not a number"
    return None


# ---------------------------------------------------------------- storage

SETTINGS_COLUMNS = ("kinds, min_severity, tz, quiet_start_min, quiet_end_min, webhook_url, webhook_secret, email, "
                    "all_houses")


def load_settings(store, username: str) -> Settings:
    rows = store.rows(f"SELECT {SETTINGS_COLUMNS} FROM notification_settings WHERE username = ?", (username,))
    return settings_from_row(rows[0] if rows else None)


def save_settings(store, username: str, settings: Settings, now: dt.datetime) -> None:
    store.rows(
        "INSERT INTO notification_settings (username, kinds, min_severity, tz, quiet_start_min, quiet_end_min, "
        "webhook_url, webhook_secret, email, all_houses, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (username, set(settings.kinds), settings.min_severity, settings.tz, settings.quiet_start_min,
         settings.quiet_end_min, settings.webhook_url, settings.webhook_secret, settings.email, settings.all_houses,
         now),
    )


def delivery_from_row(row) -> dict:
    return {"alert_id": row.alert_id, "state": row.state, "channel": row.channel, "house_id": row.house_id,
            "kind": row.kind, "severity": row.severity, "appliance": row.appliance, "status": row.status,
            "attempts": row.attempts or 0, "last_error": row.last_error, "target": row.target,
            "created_ts_s": ts_s(row.created_at), "delivered_ts_s": ts_s(row.delivered_at)}


def deliveries(store, username: str, limit: int) -> list[dict]:
    rows = store.rows(
        "SELECT alert_id, state, channel, house_id, kind, severity, appliance, status, attempts, last_error, target, "
        "created_at, delivered_at FROM notification_history WHERE username = ? LIMIT ?", (username, limit))
    return [delivery_from_row(r) for r in rows]


def mute_from_row(row) -> dict:
    return {"id": row.mute_id, "house_id": row.house_id, "appliance": row.appliance,
            "from_ts_s": ts_s(row.from_ts), "until_ts_s": ts_s(row.until_ts), "created_by": row.created_by,
            "created_ts_s": ts_s(row.created_at), "reason": row.reason}


MUTE_SELECT = ("SELECT house_id, mute_id, appliance, from_ts, until_ts, created_by, created_at, reason "
               "FROM alert_mutes WHERE house_id = ? LIMIT 1000")


def mutes_of_house(store, house_id: str) -> list[dict]:
    return [mute_from_row(r) for r in store.rows(MUTE_SELECT, (house_id,))]


def mutes_of_houses(store, house_ids: list[str]) -> list[dict]:
    return [mute_from_row(r) for rows in store.many(MUTE_SELECT, [(h,) for h in house_ids]) for r in rows]


def parse_mute(body, now_s: float) -> dict:
    """A mute from a POST body: house_id, optional appliance, for duration_s or until_ts_s, optional reason."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    unknown = set(body) - {"house_id", "appliance", "duration_s", "until_ts_s", "reason"}
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    house_id, appliance = body.get("house_id"), body.get("appliance")
    name = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
    if not isinstance(house_id, str) or not name.fullmatch(house_id):
        raise Invalid("house_id must be 1-64 letters, digits or _.:-")
    if appliance is not None and (not isinstance(appliance, str) or not name.fullmatch(appliance)):
        raise Invalid("appliance must be null (the whole house) or 1-64 letters, digits or _.:-")
    if ("duration_s" in body) == ("until_ts_s" in body):
        raise Invalid("give either duration_s or until_ts_s")
    value = body.get("duration_s", body.get("until_ts_s"))
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise Invalid("duration_s and until_ts_s must be numbers")
    until_s = now_s + value if "duration_s" in body else float(value)
    if not now_s < until_s <= now_s + MAX_MUTE_S:
        raise Invalid(f"a mute must end in the future, at most {MAX_MUTE_S // 86400} days from now")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise Invalid(f"reason must be text of at most {MAX_REASON_CHARS} characters")
    return {"id": uuid.uuid4().hex, "house_id": house_id, "appliance": appliance, "from_ts_s": now_s,
            "until_ts_s": until_s, "reason": reason}


def save_mute(store, mute: dict, username: str, now_s: float) -> None:
    ttl_s = int(mute["until_ts_s"] - now_s) + 86400  # kept a day past its end, then gone
    store.rows("INSERT INTO alert_mutes (house_id, mute_id, appliance, from_ts, until_ts, created_by, created_at, "
               "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
               (mute["house_id"], mute["id"], mute["appliance"], as_utc(mute["from_ts_s"]),
                as_utc(mute["until_ts_s"]), username, as_utc(now_s), mute["reason"], ttl_s))
    store.rows("INSERT INTO alert_mutes_by_id (mute_id, house_id) VALUES (?, ?) USING TTL ?",
               (mute["id"], mute["house_id"], ttl_s))


def mute_house(store, mute_id: str) -> str | None:
    rows = store.rows("SELECT house_id FROM alert_mutes_by_id WHERE mute_id = ?", (mute_id,))
    return rows[0].house_id if rows else None


def delete_mute(store, house_id: str, mute_id: str) -> None:
    store.rows("DELETE FROM alert_mutes WHERE house_id = ? AND mute_id = ?", (house_id, mute_id))
    store.rows("DELETE FROM alert_mutes_by_id WHERE mute_id = ?", (mute_id,))


def ack(store, alert_id: str, house_id: str, username: str, now_s: float) -> dict:
    """Acknowledge an alert; the first acknowledgement is kept (and answered) when there is one."""
    result = store.session.execute(
        store.prepared("INSERT INTO alert_acks (alert_id, house_id, username, acked_at) VALUES (?, ?, ?, ?) "
                       "IF NOT EXISTS"), (alert_id, house_id, username, as_utc(now_s)))
    if result.was_applied:
        return {"alert_id": alert_id, "house_id": house_id, "username": username, "acked_ts_s": round(now_s, 3)}
    row = result.one()
    return {"alert_id": alert_id, "house_id": row.house_id, "username": row.username, "acked_ts_s": ts_s(row.acked_at)}


def acks(store, alert_ids: list[str]) -> list[dict]:
    results = store.many("SELECT alert_id, house_id, username, acked_at FROM alert_acks WHERE alert_id = ?",
                         [(a,) for a in alert_ids])
    return [{"alert_id": r.alert_id, "house_id": r.house_id, "username": r.username, "acked_ts_s": ts_s(r.acked_at)}
            for rows in results for r in rows]

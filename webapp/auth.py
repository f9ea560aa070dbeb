"""Who a request acts for, and whether it may: password sign-in, API tokens, and one access
policy per endpoint, enforced for every request by one `before_request` hook.

`flask.g.user` is a `User` (username, role, houses, email; `is_admin`) or None for anonymous.
An endpoint without an entry in `POLICIES` is refused: a blueprint registers its endpoints'
policies with `register({"bp.endpoint": policy, ...})`. Without credentials a page redirects
to /login and an API answers 401 with `WWW-Authenticate: Bearer`; with credentials that do not
reach the resource the answer is 403.

Per process (documented in docs/webapp.md): the token, user and open-meter caches
(AUTH_CACHE_TTL_S) and the sign-in rate limit.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from urllib.parse import urlsplit

from flask import (Blueprint, Flask, current_app, g, redirect, render_template, request, session, url_for)
from flask_wtf.csrf import CSRFProtect
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, TooManyRequests, Unauthorized

from webapp import accounts, pulse
from webapp.accounts import User
from webapp.db import cassandra
from webapp.errors import BadParameter, wants_json

__all__ = ["User", "POLICIES", "register", "visible_houses", "init_app"]

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
SECRET_KEY_FILE = "web-secret-key"
MAX_USERNAME_CHARS = 64
CACHE_ENTRIES = 10000
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


# ---------------------------------------------------------------------------- policies
# Each takes the user (None: anonymous) and the request, and says whether it may go on.

def public(user: User | None) -> bool:
    """Anyone: the sign-in page, static assets, the API description."""
    return True


def signed_in(user: User | None) -> bool:
    """Any user; the view shows only what the user may see (their houses)."""
    return user is not None


def admin(user: User | None) -> bool:
    """Admins only: the pages and APIs across houses."""
    return user is not None and user.is_admin


def may_see_house(user: User | None, house_id: str | None) -> bool:
    return user is not None and (user.is_admin or house_id in user.houses)


def house(user: User | None) -> bool:
    """The house named by the route's <house_id>."""
    return may_see_house(user, request.view_args.get("house_id"))


def house_query(user: User | None) -> bool:
    """The house of ?house_id= when given, else any user (the view keeps to the user's houses)."""
    house_id = request.args.get("house_id")
    return signed_in(user) if not house_id else may_see_house(user, house_id)


def meter_house(meter_id: str) -> str | None:
    """The house of a pulse meter id `<house>-<meter>` (ingest.pulse_store); None without one."""
    found, dash, _meter = meter_id.rpartition("-")
    return found if dash and found else None


def may_read_meter(user: User | None, meter_id: str) -> bool:
    if user is not None and (user.is_admin or meter_house(meter_id) in user.houses):
        return True
    return open_to_client(meter_id)


def open_to_client(meter_id: str) -> bool:
    """Whether the meter is open to anonymous reads from this client's address."""
    networks = auth_state().meters.get(meter_id, lambda: accounts.meter_networks(cassandra(), meter_id))
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)


def pulse_meter(user: User | None) -> bool:
    """A pulse route: the meter named in the route (after PULSE_METER_ALIASES) or the default
    meter, readable by its house's users, admins, and anyone a meter is open to."""
    meter_arg = request.view_args.get("meter_id")
    default = current_app.config["PULSE_DEFAULT_METER"]
    try:
        meter_id = pulse.meter(meter_arg) if meter_arg is not None else (pulse.meter(default) if default else None)
    except BadParameter:
        return admin(user)  # the view answers 400; nobody else learns anything from it
    if meter_id is None:
        return signed_in(user)  # no default meter: the view answers 404 saying so
    if may_read_meter(user, meter_id):
        return True
    # /last/<x> answers the default meter's last x ms when no meter x has points
    return (request.endpoint == "pulse.last" and meter_arg.isdigit() and bool(default)
            and may_read_meter(user, pulse.meter(default)) and pulse.request_last_point(meter_id) is None)


# the multi-meter form of each pulse route; all but last_n have a single-meter form "<name>_default"
PULSE_ROUTES = ("last", "last_n", "since", "range_", "usage", "aggregate", "hourly", "minutely", "aggregate_hourly",
                "blip")
POLICIES = {
    "static": public,
    "auth.login": public,
    "auth.logout": public,
    "api.openapi": public,
    "pages.overview": admin,
    "api.overview": admin,
    "pages.zips": admin,
    "api.zip_day": admin,
    "pages.appliance": admin,
    "api.appliance_day": admin,
    "api.houses": signed_in,
    "alerts.page": house_query,
    "alerts.stream": house_query,
    "api.alerts": house_query,
    **{f"pages.{name}": house for name in ("house", "live")},
    **{f"api.{name}": house for name in ("house", "house_daily", "house_daily_csv", "house_thresholds", "house_cost",
                                          "house_tariff", "put_house_tariff", "house_power", "house_alerts")},
    **{f"pulse.{name}": pulse_meter for name in PULSE_ROUTES},
    **{f"pulse.{name}_default": pulse_meter for name in PULSE_ROUTES if name != "last_n"},
}


def register(policies: dict) -> None:
    """Declare the access policy of more endpoints (a blueprint's, before the app serves)."""
    unknown = [f"{endpoint}: {policy!r}" for endpoint, policy in policies.items() if not callable(policy)]
    if unknown:
        raise ValueError(f"an access policy is a function of the user: {', '.join(unknown)}")
    POLICIES.update(policies)


def unguarded(app: Flask) -> list[str]:
    """Endpoints of the app without an access policy (refused on every request)."""
    return sorted({rule.endpoint for rule in app.url_map.iter_rules()} - set(POLICIES))


def visible_houses(user: User | None) -> frozenset[str] | None:
    """The houses a user sees: None for every house (admins), else the granted ones."""
    if user is None:
        return frozenset()
    return None if user.is_admin else user.houses


# ---------------------------------------------------------------------------- caches and limits

class TTLCache:
    """Values kept ttl_s seconds, at most max_entries (oldest out first); ttl_s <= 0 keeps nothing."""

    def __init__(self, ttl_s: float, max_entries: int = CACHE_ENTRIES, clock=time.monotonic):
        self.ttl_s, self.max_entries, self._clock = float(ttl_s), max_entries, clock
        self._lock = threading.Lock()
        self._entries: OrderedDict = OrderedDict()

    def get(self, key, load):
        """The cached value of key, else load() (cached, whatever it returns, None included)."""
        now = self._clock()
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[0] > now:
                return found[1]
        value = load()
        if self.ttl_s > 0:
            with self._lock:
                self._entries[key] = (now + self.ttl_s, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class LoginLimiter:
    """At most max_failures failed sign-ins per key (user name, client address) within window_s."""

    def __init__(self, max_failures: int, window_s: float, max_keys: int = 100_000, clock=time.monotonic):
        self.max_failures, self.window_s, self.max_keys, self._clock = int(max_failures), float(window_s), max_keys, clock
        self._lock = threading.Lock()
        self._failures: dict[tuple, deque] = {}

    def _recent(self, key, now) -> deque:
        found = self._failures.get(key, deque())
        while found and found[0] <= now - self.window_s:
            found.popleft()
        return found

    def retry_after_s(self, keys) -> int | None:
        """Seconds until another attempt is allowed, None when one is allowed now."""
        now = self._clock()
        with self._lock:
            waits = [self._recent(key, now)[0] + self.window_s - now for key in keys
                     if len(self._recent(key, now)) >= self.max_failures]
        return max(1, int(max(waits) + 0.999)) if waits else None

    def failed(self, keys) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= self.max_keys:  # forget the keys whose failures have all aged out
                for key in [k for k in self._failures if not self._recent(k, now)]:
                    del self._failures[key]
            for key in keys:
                recent = self._recent(key, now)
                recent.append(now)
                self._failures[key] = recent

    def succeeded(self, key) -> None:
        with self._lock:
            self._failures.pop(key, None)


class AuthState:
    """The process's caches of users, tokens and open meters, and its sign-in limiter."""

    def __init__(self, config):
        ttl_s = float(config["AUTH_CACHE_TTL_S"])
        self.tokens, self.users, self.meters = TTLCache(ttl_s), TTLCache(ttl_s), TTLCache(ttl_s)
        self.limiter = LoginLimiter(config["LOGIN_MAX_FAILURES"], config["LOGIN_FAILURE_WINDOW_S"])


def auth_state() -> AuthState:
    return current_app.extensions["smw_auth"]


# ---------------------------------------------------------------------------- the hook

def bearer_challenge(error: str | None = None) -> WWWAuthenticate:
    return WWWAuthenticate("Bearer", {"realm": "smw", **({"error": error} if error else {})})


def authenticate() -> tuple[User | None, str | None]:
    """(user, how): a Bearer token, else the session cookie, else (None, None)."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("send Authorization: Bearer <token> (flask --app webapp users token NAME)",
                               www_authenticate=bearer_challenge("invalid_request"))
        digest = accounts.token_digest(token)
        user = auth_state().tokens.get(digest, lambda: accounts.token_user(cassandra(), digest))
        if user is None:
            raise Unauthorized("the API token is unknown or revoked", www_authenticate=bearer_challenge("invalid_token"))
        return user, "token"
    name = session.get("username")
    if isinstance(name, str):
        user = auth_state().users.get(name, lambda: accounts.get_user(cassandra(), name))
        if user is None:
            session.clear()  # the user was deleted
        return user, "session" if user else None
    return None, None


def next_path() -> str:
    path = request.full_path
    return path[:-1] if path.endswith("?") else path


def enforce():
    """Authenticate the request, apply its endpoint's policy, then check CSRF for cookie sessions."""
    g.user, g.auth_method = None, None
    g.user, g.auth_method = authenticate()
    if request.endpoint is None or request.method == "OPTIONS":
        return None  # no route (404, 405) or a CORS preflight: nothing is read
    policy = POLICIES.get(request.endpoint)
    if policy is None:
        log.error("endpoint %s has no access policy: refused (add it to webapp.auth.POLICIES)", request.endpoint)
        raise Forbidden("this route has no access policy")
    if not policy(g.user):
        if g.user is not None:
            raise Forbidden(f"{g.user.username} may not see this")
        if wants_json():
            raise Unauthorized("sign in: send Authorization: Bearer <token>", www_authenticate=bearer_challenge())
        return redirect(url_for("auth.login", next=next_path()))
    if request.method not in SAFE_METHODS and g.auth_method != "token":
        csrf.protect()  # a Bearer request carries no cookie, so it cannot be forged cross-site
    return None


# ---------------------------------------------------------------------------- sign-in pages

def safe_next(target: str | None) -> str | None:
    """A local path to go on to after signing in; anything else (another site) is dropped."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def home_for(user: User) -> str:
    if user.is_admin:
        return url_for("pages.overview")
    if user.houses:
        return url_for("pages.house", house_id=sorted(user.houses)[0])
    return url_for("alerts.page")


@bp.route("/login", methods=("GET", "POST"))
def login():
    """Sign in with a user name and password."""
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=target or "", error=None, username="")
    name = request.form.get("username", "").strip()[:MAX_USERNAME_CHARS]
    password = request.form.get("password", "")[:accounts.MAX_PASSWORD_CHARS]
    keys = [("user", name.lower()), ("address", request.remote_addr)]
    limiter = auth_state().limiter
    wait_s = limiter.retry_after_s(keys)
    if wait_s is not None:
        log.warning("sign-in of %r from %s refused: too many failures", name, request.remote_addr)
        raise TooManyRequests(f"too many failed sign-ins; try again in {wait_s} s", retry_after=wait_s)
    user = accounts.check_password(cassandra(), name, password) if name and password else None
    if user is None:
        limiter.failed(keys)
        log.info("failed sign-in of %r from %s", name, request.remote_addr)
        return render_template("login.html", next=target or "", error="wrong user name or password",
                               username=name), 200
    limiter.succeeded(keys[0])
    session.clear()
    session["username"] = user.username
    session.permanent = True
    log.info("%s signed in from %s", user.username, request.remote_addr)
    return redirect(target or home_for(user))


@bp.post("/logout")
def logout():
    """Sign out: forget the session."""
    session.clear()
    return redirect(url_for("auth.login"))


@bp.app_context_processor
def inject_user():
    user = g.get("user")
    return {"current_user": user, "home_url": home_for(user) if user else url_for("auth.login")}


# ---------------------------------------------------------------------------- set-up

def secret_key(data_dir: str) -> str:
    """The session-signing key kept in <data_dir>/web-secret-key (0600), made on first use:
    every server process and restart signs with the same key."""
    path = Path(data_dir) / SECRET_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_KEY_FILE}-")  # mode 0600
        try:
            with os.fdopen(handle, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temporary, path)  # atomic: the first process to get here wins, the others read its key
                log.info("new session-signing key in %s", path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
    if path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users; chmod 600 it", path)
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds no usable key; delete it and a new one is made")
    return key


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def init_app(app: Flask) -> None:
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secret_key(app.config["SMW_SETTINGS"].data_dir)
    # CSRF is checked by enforce() for every unsafe request that is not Bearer-authenticated.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    app.extensions["smw_auth"] = AuthState(app.config)
    app.before_request(enforce)
    app.register_blueprint(bp)

"""Smart Meter Watchdog web application: dashboard pages, JSON API, live alerts, pulse-meter API.

    python -m webapp            # production server (uvicorn's event loop, Flask in worker threads) on 127.0.0.1:8000
    flask --app webapp run      # development server

The app factory follows Flask's tutorial (flaskr): `create_app(test_config=None)`,
one blueprint per area, per-request resources torn down after each request.
"""
from __future__ import annotations

import logging

from flask import Flask

from smw import config

log = logging.getLogger(__name__)

# Defaults; each can be set from the environment as SMW_WEB_<NAME> (JSON values are
# parsed, e.g. SMW_WEB_PULSE_IMPULSES_PER_KWH=600 or SMW_WEB_TARIFF='{...}').
DEFAULTS = {
    "PULSE_IMPULSES_PER_KWH": 1000,
    # The pulse-meter API (webapp/pulse.py): the meter of the single-meter routes (/last/<n>,
    # /blip, ...), ids the pages use mapped to meter ids ({"1": "house7-1"}), the CORS origin
    # of its answers ("" for none; the original sent *), a path prefix ("/ajax").
    "PULSE_DEFAULT_METER": "",
    "PULSE_METER_ALIASES": {},
    "PULSE_CORS_ORIGIN": "*",
    "PULSE_URL_PREFIX": "",
    # /blip waits for the next point however long it takes, sending a space this often;
    # BLIP_MAX_WAIT_S > 0 ends a wait with no point after that long.
    "BLIP_KEEPALIVE_S": 10.0,
    "BLIP_MAX_WAIT_S": 0,
    "SSE_HEARTBEAT_S": 15.0,
    "SSE_SNAPSHOT_LIMIT": 50,
    # A reconnect with Last-Event-ID replays at most this far back, and reads the Cassandra history
    # of at most SSE_RESUME_MAX_HOUSES houses (one query each); a stream over more houses (an
    # admin's) replays from the live store only.
    "SSE_RESUME_MAX_S": 86400.0,
    "SSE_RESUME_MAX_HOUSES": 32,
    # Long-lived answers wait on the server's event loop (webapp/asgi.py), each holding a socket: at most
    # this many open alert streams and /blip waits per user (per client address when anonymous) in each
    # process, and STREAMS_MAX of all kinds together; beyond, 503 with Retry-After. STREAMS_MAX null:
    # under `python -m webapp`, the open-file limit minus min(STREAMS_RESERVE_FILES, limit / 2), kept
    # for pages, the API and the data stores; elsewhere (the development server, tests) no process bound.
    "SSE_MAX_STREAMS_PER_USER": 8,
    "BLIP_MAX_WAITS_PER_USER": 8,
    "STREAMS_MAX": None,
    "STREAMS_RESERVE_FILES": 1024,
    "MAX_RANGE_DAYS": 366,
    "MAX_COST_DAYS": 92,
    "HOUSE_LIMIT": 1000,
    # House daily-kWh answers are cached per (house, from, to) in each process: daily rows change
    # only when the nightly batch writes, and a write is served at most this many seconds later.
    "DAILY_CACHE_TTL_S": 60.0,  # 0 turns the cache off
    "DAILY_CACHE_MAX_BYTES": 32 * 1024 * 1024,
    # House ids found in the houses table are remembered this long in each process, and the daily API
    # skips its house lookup for them: houses are rarely added and hardly ever removed, and a removed
    # house's daily answer (its remaining rows) is served at most this long. 0 turns it off.
    "HOUSE_CACHE_TTL_S": 300.0,
    # Accounts and access (webapp/auth.py). SECRET_KEY: SMW_WEB_SECRET_KEY, else a key kept in
    # <DATA_DIR>/web-secret-key. Chromium keeps Secure cookies on http://127.0.0.1 and localhost,
    # so the session cookie is Secure everywhere by default.
    "SESSION_COOKIE_NAME": "smw_session",
    "SESSION_COOKIE_SECURE": True,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "PERMANENT_SESSION_LIFETIME": 12 * 3600,
    "WTF_CSRF_TIME_LIMIT": None,  # a form's CSRF token lives as long as its session
    # Users, API tokens and open meters are cached this long in each process: a revoked token or
    # a closed meter stops working within it.
    "AUTH_CACHE_TTL_S": 30.0,
    # Sign-in failures per user name and per client address, counted in each process.
    "LOGIN_MAX_FAILURES": 5,
    "LOGIN_FAILURE_WINDOW_S": 300.0,
    "TARIFF": {
        "currency": "USD",
        "default_rate_per_kwh": 0.15,
        # Time-of-use periods in the house's local time: [start_hour, end_hour).
        "periods": [
            {"name": "off-peak", "start_hour": 0, "end_hour": 7, "rate_per_kwh": 0.09},
            {"name": "peak", "start_hour": 16, "end_hour": 21, "rate_per_kwh": 0.32},
        ],
    },
}


def create_app(test_config: dict | None = None) -> Flask:
    """Create and configure the web application."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.json.sort_keys = False
    if test_config is None:
        app.config.from_prefixed_env("SMW_WEB")
    else:
        app.config.from_mapping(test_config)
    app.config.setdefault("SMW_SETTINGS", config.load())

    from webapp import accounts, alerts, api, auth, db, errors, notify_views, pages, pulse, security, streams
    from webapp.cache import KnownKeys, ResponseCache

    db.init_app(app)
    auth.init_app(app)
    streams.init_app(app)
    accounts.init_app(app)
    app.extensions["smw_daily_cache"] = ResponseCache(app.config["DAILY_CACHE_TTL_S"],
                                                      app.config["DAILY_CACHE_MAX_BYTES"])
    app.extensions["smw_known_houses"] = KnownKeys(app.config["HOUSE_CACHE_TTL_S"])
    errors.init_app(app)
    security.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(alerts.bp)
    app.register_blueprint(notify_views.bp)
    pulse.init_app(app)
    return app


def stop_streams(app: Flask) -> None:
    """Stop the alert feed and the /blip watches, which ends every SSE stream and long poll
    (a server shutting down waits for them)."""
    from webapp import pulse

    hub = app.extensions.get("smw_alert_hub")
    if hub is not None:
        hub.stop()
    pulse.stop_watches(app)


def shutdown(app: Flask) -> None:
    """Release the app's process-wide resources: the alert feed and the Cassandra session."""
    stop_streams(app)
    app.extensions["smw_cassandra"].shutdown()

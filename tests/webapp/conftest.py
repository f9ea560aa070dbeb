"""Fixtures of the web tests, as in Flask's tutorial: app, client, runner.

Each test inserts its own rows (under a house id of its own) into the smw_test
keyspace and RethinkDB database. `client` acts for a fresh admin through an API token;
`make_user` makes other users (households, with passwords) and `anonymous` has no credentials."""
from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from smw import rethink
from tools import sample
from webapp import accounts, create_app, shutdown
from webapp.alert_store import normalise

D1, D2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
TEST_SECRET_KEY = uuid.uuid4().hex * 2


@pytest.fixture
def app(settings, cassandra_session, rethinkdb_ready):
    # HOUSE_LIMIT: the test keyspace gathers the houses of every test run, beyond the default 1000
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "SECRET_KEY": TEST_SECRET_KEY,
                      "BLIP_MAX_WAIT_S": 0.6, "BLIP_KEEPALIVE_S": 0.1, "SSE_HEARTBEAT_S": 0.5, "HOUSE_LIMIT": 100_000})
    yield app
    shutdown(app)


def create_user(store, role: str = "household", houses=(), password: str | None = None,
                email: str | None = None) -> tuple[accounts.User, str]:
    """A user with a fresh name and an API token: (user, token)."""
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    hashed = accounts.hash_password(password) if password else None
    assert accounts.create_user(store, name, role, frozenset(houses), email, hashed)
    return accounts.get_user(store, name), accounts.new_token(store, name, "tests")


@pytest.fixture
def make_user(app):
    """make_user(role="household", houses=(), password=None) -> (User, token); deleted afterwards."""
    store = app.extensions["smw_cassandra"]
    made = []

    def make(role: str = "household", houses=(), password: str | None = None, email: str | None = None):
        user, token = create_user(store, role, houses, password, email)
        made.append(user.username)
        return user, token
    yield make
    for name in made:
        accounts.delete_user(store, name)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def admin_client(app):
    """A test client of `app` acting for a fresh admin (an API token on every request)."""
    _user, token = create_user(app.extensions["smw_cassandra"], "admin")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def client(app, make_user):
    """A test client acting for a fresh admin (an API token on every request)."""
    _user, token = make_user("admin")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def anonymous(app):
    """A test client without credentials."""
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def house_id(cassandra_session):
    """A fresh house registered in the houses table."""
    name = f"h-{uuid.uuid4().hex[:10]}"
    cassandra_session.execute(
        "INSERT INTO houses (house_id, zip, tz, lat, lon) VALUES (%s, %s, %s, %s, %s)",
        (name, "02139", "America/New_York", 42.36, -71.09),
    )
    return name


def make_alert(house_id: str, **changes) -> dict:
    now_s = time.time()
    alert = {"id": f"{house_id}-{uuid.uuid4().hex[:8]}", "kind": "overshoot", "house_id": house_id, "meter": 5,
             "appliance": "refrigerator", "threshold_w": 120.0, "multiplier": 1.5, "peak_w": 450.0, "mean_w": 300.0,
             "start_ts_s": now_s, "end_ts_s": None, "state": "open", "severity": "warning", "updated_ts_s": now_s}
    alert.update(changes)
    return normalise(alert)


@pytest.fixture
def insert_alert(settings):
    """Insert (or update) alert documents in RethinkDB."""
    def insert(alert: dict) -> dict:
        with rethink.connection(settings) as conn:
            rethink.r.db(settings.rethinkdb_db).table("alerts").insert(alert, conflict="update").run(conn)
        return alert
    return insert


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


@pytest.fixture
def house_days(cassandra_session, house_id):
    """Two days of a house: mains, two lighting channels, a refrigerator; hourly rows on D1."""
    s = cassandra_session
    for day, fridge_kwh, light_kwh, mains_kwh in [(D1, 1.2, 0.5, 10.0), (D2, 1.0, 0.25, 8.0)]:
        for meter, label, kwh in [(1, "mains", mains_kwh / 2), (2, "mains", mains_kwh / 2), (5, "refrigerator", fridge_kwh),
                                  (9, "lighting", light_kwh), (17, "lighting", light_kwh)]:
            s.execute("INSERT INTO daily_energy_by_house (house_id, day, meter, label, appliance, energy_kwh, coverage, samples) "
                      "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", (house_id, day, meter, label, label, kwh, 1.0, 1000))
        circuits = fridge_kwh + 2 * light_kwh
        s.execute("INSERT INTO daily_house_totals (house_id, day, mains_kwh, circuits_kwh, untracked_kwh, coverage) "
                  "VALUES (%s, %s, %s, %s, %s, %s)", (house_id, day, mains_kwh, circuits, mains_kwh - circuits, 1.0))
    # D1 hourly: 1 kWh of mains at 17:00 local (peak, 0.32) and 1 kWh at 03:00 local (off-peak, 0.09); EST = UTC-5
    for hour_utc, meter, kwh in [(22, 1, 1.0), (8, 1, 1.0), (22, 5, 0.5)]:
        s.execute("INSERT INTO hourly_energy (house_id, day, hour_start, meter, energy_kwh, mean_w, min_w, max_w, samples) "
                  "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                  (house_id, D1, utc(2024, 3, 1, hour_utc), meter, kwh, kwh * 1000, 10.0, 2000.0, 3600))
    sample.write_day_docs(s, house_id)  # the day documents the nightly job writes beside these rows
    return house_id


@pytest.fixture
def pulse_meter(cassandra_session):
    """A meter id and a function that stores points [stamp_ms, ms] as the pulse ingest does
    (points, days, minute and hour figures)."""
    from ingest.pulse_store import store_points

    meter_id = f"m{uuid.uuid4().hex[:8]}"

    def store(points):
        store_points(cassandra_session, [(meter_id, stamp_ms, ms) for stamp_ms, ms in points])
    return meter_id, store

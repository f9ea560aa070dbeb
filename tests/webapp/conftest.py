"""Fixtures of the web tests, as in Flask's tutorial: app, client, runner.

Each test inserts its own rows (under a house id of its own) into the smw_test
keyspace and RethinkDB database."""
from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from smw import rethink
from webapp import create_app, shutdown
from webapp.alert_store import normalise


@pytest.fixture
def app(settings, cassandra_session, rethinkdb_ready):
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "BLIP_TIMEOUT_S": 0.3, "SSE_HEARTBEAT_S": 0.5})
    yield app
    shutdown(app)


@pytest.fixture
def client(app):
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

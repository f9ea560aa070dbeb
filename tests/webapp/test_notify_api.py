"""The notification settings, delivery history, acknowledgement and mute routes, with real users
(API tokens) against Cassandra and reqlite."""
from __future__ import annotations

import time

import pytest

from webapp import notifications as rules
from webapp.notify import Outbox

from tests.webapp.conftest import bearer, make_alert

pytestmark = pytest.mark.integration


@pytest.fixture
def as_user(app, make_user):
    """as_user(role="household", houses=()) -> (username, a client acting for that user)."""
    def make(role: str = "household", houses=()):
        user, token = make_user(role, houses)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = bearer(token)["Authorization"]
        return user.username, client
    return make


def test_signed_in_only(anonymous):
    assert anonymous.get("/api/me/notifications").status_code == 401
    assert anonymous.put("/api/me/notifications", json={}).status_code == 401
    assert anonymous.get("/api/me/deliveries").status_code == 401
    assert anonymous.post("/api/mutes", json={}).status_code == 401
    assert anonymous.get("/settings/notifications").status_code == 302  # to the sign-in page


def test_settings_round_trip(as_user, house_id):
    name, client = as_user("household", [house_id])
    got = client.get("/api/me/notifications").get_json()
    assert got == {"username": name, "kinds": ["new_peak", "no_data", "overshoot"], "min_severity": "info",
                   "tz": "UTC", "quiet_hours": None, "webhook": None, "email": None, "all_houses": False}
    body = {"kinds": ["overshoot"], "min_severity": "warning", "tz": "Europe/Berlin",
            "quiet_hours": {"start": "22:00", "end": "07:00"}, "email": "me@example.org",
            "webhook": {"url": "https://hooks.example.org/smw", "secret": "0123456789abcdef"}}
    answer = client.put("/api/me/notifications", json=body)
    assert answer.status_code == 200
    expected = {**body, "username": name, "all_houses": False,
                "webhook": {"url": "https://hooks.example.org/smw", "secret_set": True}}
    assert answer.get_json() == expected
    assert client.get("/api/me/notifications").get_json() == expected  # the secret is never sent back
    # a field left out keeps its value; the stored secret is kept when only the url changes
    client.put("/api/me/notifications", json={"webhook": {"url": "https://hooks.example.org/other"}})
    again = client.get("/api/me/notifications").get_json()
    assert again["webhook"] == {"url": "https://hooks.example.org/other", "secret_set": True}
    assert again["email"] == "me@example.org"


@pytest.mark.parametrize("body, message", [
    ({"min_severity": "loud"}, "min_severity"),
    ({"webhook": {"url": "javascript:alert(1)", "secret": "0123456789abcdef"}}, "webhook.url"),
    ({"all_houses": True}, "administrators"),
    ({"extra": 1}, "unknown field"),
])
def test_settings_refused_with_the_field_named(as_user, body, message):
    _name, client = as_user()
    answer = client.put("/api/me/notifications", json=body)
    assert answer.status_code == 400 and message in answer.get_json()["error"]


def test_settings_body_must_be_json(as_user):
    _name, client = as_user()
    answer = client.put("/api/me/notifications", data="kinds=overshoot")
    assert answer.status_code == 400 and "JSON" in answer.get_json()["error"]


def test_admin_opts_in_to_every_house(as_user):
    _name, client = as_user("admin")
    assert client.put("/api/me/notifications", json={"all_houses": True}).get_json()["all_houses"] is True


def test_delivery_history(app, as_user, house_id):
    name, client = as_user("household", [house_id])
    assert client.get("/api/me/deliveries").get_json() == {"deliveries": []}
    alert = make_alert(house_id)
    Outbox(app.extensions["smw_cassandra"]).add(alert, rules.Planned(name, "email", "pending"), time.time())
    found = client.get("/api/me/deliveries").get_json()["deliveries"]
    assert [(d["alert_id"], d["state"], d["channel"], d["status"], d["house_id"]) for d in found] == [
        (alert["id"], "open", "email", "pending", house_id)]
    _other, other_client = as_user("household", [house_id])
    assert other_client.get("/api/me/deliveries").get_json() == {"deliveries": []}  # only one's own
    assert client.get("/api/me/deliveries?limit=0").status_code == 400


def test_acknowledge(as_user, house_id, insert_alert):
    alert = insert_alert(make_alert(house_id))
    owner, client = as_user("household", [house_id])
    second, second_client = as_user("household", [house_id])
    _stranger, stranger = as_user("household", ["another-house"])
    assert stranger.post(f"/api/alerts/{alert['id']}/ack").status_code == 404
    first = client.post(f"/api/alerts/{alert['id']}/ack")
    assert first.status_code == 200 and first.get_json()["username"] == owner
    # the first acknowledgement is kept
    assert second_client.post(f"/api/alerts/{alert['id']}/ack").get_json()["username"] == owner
    assert second != owner
    listed = client.get(f"/api/acks?alert_id={alert['id']}&alert_id=unknown-alert").get_json()["acks"]
    assert [(a["alert_id"], a["username"]) for a in listed] == [(alert["id"], owner)]
    assert stranger.get(f"/api/acks?alert_id={alert['id']}").get_json() == {"acks": []}
    assert client.post("/api/alerts/no-such-alert/ack").status_code == 404
    assert client.get("/api/acks").status_code == 400


def test_mutes(as_user, house_id, cassandra_session):
    owner, client = as_user("household", [house_id])
    _stranger, stranger = as_user("household", ["another-house"])
    _admin, admin = as_user("admin")
    created = client.post("/api/mutes", json={"house_id": house_id, "appliance": "dryer", "duration_s": 3600,
                                              "reason": "repair"})
    assert created.status_code == 201
    mute = created.get_json()
    assert (mute["house_id"], mute["appliance"], mute["created_by"]) == (house_id, "dryer", owner)
    assert 3599 <= mute["until_ts_s"] - mute["from_ts_s"] <= 3601
    assert stranger.post("/api/mutes", json={"house_id": house_id, "duration_s": 60}).status_code == 404
    assert client.post("/api/mutes", json={"house_id": house_id}).status_code == 400

    assert [m["id"] for m in client.get("/api/mutes").get_json()["mutes"]] == [mute["id"]]
    assert stranger.get("/api/mutes").get_json() == {"mutes": []}
    assert stranger.get(f"/api/mutes?house_id={house_id}").status_code == 403
    assert mute["id"] in [m["id"] for m in admin.get(f"/api/mutes?house_id={house_id}").get_json()["mutes"]]
    assert mute["id"] in [m["id"] for m in admin.get("/api/mutes").get_json()["mutes"]]  # house_id is registered

    assert stranger.delete(f"/api/mutes/{mute['id']}").status_code == 404
    assert client.delete(f"/api/mutes/{mute['id']}").status_code == 204
    assert client.get("/api/mutes").get_json() == {"mutes": []}
    assert client.delete(f"/api/mutes/{mute['id']}").status_code == 404


def test_pages(as_user, house_id):
    _name, client = as_user("household", [house_id])
    page = client.get("/settings/notifications")
    assert page.status_code == 200 and b'id="notify-form"' in page.data and b"all_houses" not in page.data
    alerts = client.get(f"/alerts?house_id={house_id}")
    assert alerts.status_code == 200 and b'id="mute-for"' in alerts.data and b'id="mutes"' in alerts.data
    _admin, admin = as_user("admin")
    assert b'name="all_houses"' in admin.get("/settings/notifications").data

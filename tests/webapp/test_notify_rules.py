"""Unit tests of the notification rules: settings, quiet hours, who is notified, mutes, signatures."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from zoneinfo import ZoneInfo

import pytest

from webapp import notifications as rules
from webapp.notify import delivery_id, email_message, shown_target, signature

BERLIN = ZoneInfo("Europe/Berlin")


def at(*args, tz=BERLIN) -> float:
    return dt.datetime(*args, tzinfo=tz).timestamp()


def alert(**changes) -> dict:
    doc = {"id": "a1", "kind": "overshoot", "house_id": "h1", "meter": 5, "appliance": "refrigerator",
           "state": "open", "severity": "warning", "updated_ts_s": 1000.0, "start_ts_s": 990.0, "end_ts_s": None,
           "peak_w": 500.0, "threshold_w": 120.0}
    doc.update(changes)
    return doc


QUIET_NIGHT = rules.Settings(tz="Europe/Berlin", quiet_start_min=22 * 60, quiet_end_min=7 * 60)


@pytest.mark.parametrize("now, expected", [
    (at(2024, 3, 1, 23, 30), at(2024, 3, 2, 7, 0)),   # before midnight: ends the next morning
    (at(2024, 3, 2, 6, 59), at(2024, 3, 2, 7, 0)),    # after midnight: ends this morning
    (at(2024, 3, 2, 22, 0), at(2024, 3, 3, 7, 0)),    # the first minute is inside
    (at(2024, 3, 2, 7, 0), None),                     # the end is outside
    (at(2024, 3, 2, 12, 0), None),
])
def test_quiet_hours_across_midnight(now, expected):
    assert rules.quiet_until(now, QUIET_NIGHT) == expected


def test_quiet_hours_within_a_day_and_in_the_users_zone():
    lunch = rules.Settings(tz="America/New_York", quiet_start_min=12 * 60, quiet_end_min=13 * 60)
    new_york = ZoneInfo("America/New_York")
    assert rules.quiet_until(at(2024, 7, 1, 12, 30, tz=new_york), lunch) == at(2024, 7, 1, 13, 0, tz=new_york)
    # 12:30 in Berlin is 06:30 in New York: not quiet
    assert rules.quiet_until(at(2024, 7, 1, 12, 30), lunch) is None


def test_quiet_hours_end_across_a_dst_change():
    # Berlin moves its clocks forward at 02:00 on 2024-03-31: 22:00-07:00 lasts 8 hours that night
    start = at(2024, 3, 30, 22, 0)
    assert rules.quiet_until(start, QUIET_NIGHT) - start == 8 * 3600


def test_no_quiet_hours():
    assert rules.quiet_until(at(2024, 3, 1, 23, 0), rules.Settings()) is None
    same = rules.Settings(quiet_start_min=60, quiet_end_min=60)
    assert rules.quiet_until(at(2024, 3, 1, 1, 0), same) is None


def test_parse_settings_replaces_given_fields_and_keeps_the_rest():
    current = rules.Settings(email="a@example.org", webhook_url="https://x.example/h", webhook_secret="s" * 16)
    parsed = rules.parse_settings({"kinds": ["no_data"], "min_severity": "critical",
                                   "quiet_hours": {"start": "22:30", "end": "06:00"}, "tz": "Europe/Berlin",
                                   "webhook": {"url": "https://y.example/h"}}, current, is_admin=False)
    assert parsed.kinds == {"no_data"} and parsed.min_severity == "critical"
    assert (parsed.quiet_start_min, parsed.quiet_end_min) == (22 * 60 + 30, 6 * 60)
    assert parsed.webhook_url == "https://y.example/h" and parsed.webhook_secret == "s" * 16  # kept
    assert parsed.email == "a@example.org"
    assert rules.parse_settings({"email": None, "webhook": None}, parsed, False).channel_target("email") is None
    assert parsed.public()["webhook"] == {"url": "https://y.example/h", "secret_set": True}


@pytest.mark.parametrize("body, message", [
    ([], "JSON object"),
    ({"colour": "red"}, "unknown field"),
    ({"kinds": ["overshoot", "fire"]}, "kinds"),
    ({"kinds": "overshoot"}, "kinds"),
    ({"min_severity": "high"}, "min_severity"),
    ({"tz": "Mars/Olympus"}, "time zone"),
    ({"quiet_hours": {"start": "24:00", "end": "07:00"}}, "quiet_hours.start"),
    ({"quiet_hours": {"start": "22:00"}}, "quiet_hours"),
    ({"webhook": {"url": "ftp://x.example/h", "secret": "s" * 16}}, "http"),
    ({"webhook": {"url": "https://x.example/h", "secret": "short"}}, "secret"),
    ({"webhook": {"url": "https://x.example/h"}}, "secret is required"),
    ({"webhook": {"url": "https://x.example/h", "secret": "s" * 15 + "\n"}}, "printable"),
    ({"email": "not an address"}, "email"),
    ({"email": "a@b.example\r\nBcc: x@y.example"}, "email"),
    ({"all_houses": True}, "administrators"),
    ({"all_houses": "yes"}, "true or false"),
])
def test_parse_settings_refuses(body, message):
    with pytest.raises(rules.Invalid, match=message):
        rules.parse_settings(body, rules.Settings(), is_admin=False)


def test_admins_may_opt_in_to_every_house():
    assert rules.parse_settings({"all_houses": True}, rules.Settings(), is_admin=True).all_houses


HOOK = rules.Settings(webhook_url="http://127.0.0.1:1/h", webhook_secret="s" * 16)
BOTH = rules.Settings(webhook_url="http://127.0.0.1:1/h", webhook_secret="s" * 16, email="a@example.org")


def test_plan_who_is_notified():
    accounts = [rules.Account("granted", "household", frozenset({"h1"})),
                rules.Account("other", "household", frozenset({"h2"})),
                rules.Account("admin_in", "admin", frozenset()),
                rules.Account("admin_out", "admin", frozenset()),
                rules.Account("no_settings", "household", frozenset({"h1"}))]
    settings = {"granted": BOTH, "other": BOTH, "admin_in": rules.Settings(email="x@example.org", all_houses=True),
                "admin_out": BOTH}
    planned = rules.plan(alert(), accounts, settings, [], 1000.0)
    assert sorted((p.username, p.channel, p.status) for p in planned) == [
        ("admin_in", "email", "pending"), ("granted", "email", "pending"), ("granted", "webhook", "pending")]


def test_plan_kinds_and_severity():
    accounts = [rules.Account("u", "household", frozenset({"h1"}))]
    only_no_data = rules.parse_settings({"kinds": ["no_data"]}, HOOK, False)
    critical = rules.parse_settings({"min_severity": "critical"}, HOOK, False)
    assert rules.plan(alert(), accounts, {"u": only_no_data}, [], 1000.0) == []
    assert rules.plan(alert(kind="no_data"), accounts, {"u": only_no_data}, [], 1000.0)
    assert rules.plan(alert(severity="warning"), accounts, {"u": critical}, [], 1000.0) == []
    assert rules.plan(alert(severity="critical"), accounts, {"u": critical}, [], 1000.0)


def test_plan_mutes():
    accounts = [rules.Account("u", "household", frozenset({"h1"}))]
    fridge = {"house_id": "h1", "appliance": "refrigerator", "from_ts_s": 900.0, "until_ts_s": 1100.0}
    house = {"house_id": "h1", "appliance": None, "from_ts_s": 900.0, "until_ts_s": 1100.0}
    elsewhere = {"house_id": "h2", "appliance": None, "from_ts_s": 900.0, "until_ts_s": 1100.0}

    def statuses(doc, mutes, at_s=1000.0):
        return {p.status for p in rules.plan(doc, accounts, {"u": HOOK}, mutes, at_s)}

    assert statuses(alert(), [fridge]) == {"muted"}
    assert statuses(alert(appliance="oven"), [fridge]) == {"pending"}
    assert statuses(alert(appliance="oven"), [house]) == {"muted"}
    assert statuses(alert(), [elsewhere]) == {"pending"}
    assert statuses(alert(), [fridge], at_s=1100.0) == {"pending"}  # the mute had ended
    assert statuses(alert(), [fridge], at_s=899.0) == {"pending"}  # not begun


@pytest.mark.parametrize("doc, problem", [
    ("text", "not an object"),
    ({**alert(), "house_id": None}, "no house_id"),
    ({**alert(), "id": ""}, "no id"),
    ({**alert(), "state": "ajar"}, "unknown state"),
    ({**alert(), "severity": "dire"}, "unknown severity"),
    ({**alert(), "updated_ts_s": "soon"}, "updated_ts_s"),
    (alert(), None),
])
def test_check_alert(doc, problem):
    found = rules.check_alert(doc)
    assert (found is None and problem is None) or problem in found


@pytest.mark.parametrize("body, message", [
    ({"house_id": "h1"}, "either duration_s or until_ts_s"),
    ({"house_id": "h1", "duration_s": 60, "until_ts_s": 2000}, "either"),
    ({"house_id": "h 1", "duration_s": 60}, "house_id"),
    ({"house_id": "h1", "appliance": "", "duration_s": 60}, "appliance"),
    ({"house_id": "h1", "duration_s": -5}, "future"),
    ({"house_id": "h1", "duration_s": 91 * 86400}, "90 days"),
    ({"house_id": "h1", "duration_s": True}, "numbers"),
    ({"house_id": "h1", "duration_s": 60, "reason": "x" * 201}, "reason"),
])
def test_parse_mute_refuses(body, message):
    with pytest.raises(rules.Invalid, match=message):
        rules.parse_mute(body, 1000.0)


def test_parse_mute():
    mute = rules.parse_mute({"house_id": "h1", "appliance": "oven", "duration_s": 3600}, 1000.0)
    assert (mute["from_ts_s"], mute["until_ts_s"], mute["appliance"]) == (1000.0, 4600.0, "oven")
    assert rules.parse_mute({"house_id": "h1", "until_ts_s": 5000}, 1000.0)["appliance"] is None


def test_signature_is_the_hmac_of_the_raw_body():
    body = b'{"id":"a1","state":"open"}'
    expected = hmac.new(b"0123456789abcdef", body, hashlib.sha256).hexdigest()
    assert signature("0123456789abcdef", body) == "sha256=" + expected
    assert signature("0123456789abcdeF", body) != "sha256=" + expected


def test_delivery_ids_differ_per_state_user_and_channel():
    ids = {delivery_id("a1", state, user, channel) for state in rules.STATES for user in ("u", "v")
           for channel in rules.CHANNELS}
    assert len(ids) == 8 and delivery_id("a1", "open", "u", "email") == delivery_id("a1", "open", "u", "email")


def test_email_message_has_no_header_injection():
    message = email_message(alert(appliance="oven\r\nBcc: victim@example.org"), "smw@example.org", "a@example.org",
                            "k1")
    assert "Bcc" not in message.keys() and "\n" not in message["Subject"]
    assert message["Message-ID"] == "<k1@example.org>"


def test_shown_target_hides_credentials_and_query():
    assert shown_target("webhook", "https://user:pw@x.example:8443/h?token=t") == "https://x.example:8443/h"
    assert shown_target("email", "a@example.org") == "a@example.org"

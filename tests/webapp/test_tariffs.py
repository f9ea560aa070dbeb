"""Per-house tariffs: strict validation, the history and its timeline, the API, and cost per hour at the tariff then."""
import datetime as dt
import math

import pytest

from tests.webapp.conftest import admin_client, utc
from webapp import create_app
from webapp.tariff import Period, Tariff, TariffError, Version, in_force, timeline

FLAT = Tariff("USD", 0.15)
CONFIGURED = Version.configured(FLAT)


def version(from_s, until_s=None, rate=0.1, currency="USD", source="api"):
    return Version(from_s, until_s, Tariff(currency, rate), source)


def spans(segments):
    return [(s.start_s, s.end_s, s.version.tariff.default_rate_per_kwh) for s in segments]


# ---------------------------------------------------------------- the timeline

def test_no_history_is_the_configured_tariff_throughout():
    assert spans(timeline([], CONFIGURED, 0, 100)) == [(0, 100, 0.15)]


def test_latest_version_wins_from_its_start():
    assert spans(timeline([version(10, rate=0.1), version(50, rate=0.2)], CONFIGURED, 0, 100)) == [
        (0, 10, 0.15), (10, 50, 0.1), (50, 100, 0.2)]


def test_a_bounded_version_ends_and_the_previous_one_applies_again():
    history = [version(10, rate=0.1), version(40, 60, rate=0.5)]
    assert spans(timeline(history, CONFIGURED, 0, 100)) == [(0, 10, 0.15), (10, 40, 0.1), (40, 60, 0.5),
                                                           (60, 100, 0.1)]


def test_a_bounded_version_alone_falls_back_to_the_configured_tariff():
    assert spans(timeline([version(20, 30, rate=0.5)], CONFIGURED, 0, 100)) == [(0, 20, 0.15), (20, 30, 0.5),
                                                                                (30, 100, 0.15)]


def test_a_later_open_version_inside_a_bounded_one_takes_over_for_good():
    history = [version(10, rate=0.1), version(20, 80, rate=0.5), version(50, rate=0.3)]
    assert spans(timeline(history, CONFIGURED, 0, 100)) == [(0, 10, 0.15), (10, 20, 0.1), (20, 50, 0.5),
                                                           (50, 100, 0.3)]


def test_same_instant_bounded_before_open_and_history_before_the_range():
    history = [version(-500, rate=0.1), version(-50, 30, rate=0.7), version(60, rate=0.2), version(60, 70, rate=0.9)]
    assert spans(timeline(history, CONFIGURED, 0, 100)) == [(0, 30, 0.7), (30, 60, 0.1), (60, 70, 0.9),
                                                           (70, 100, 0.2)]
    assert in_force(history, CONFIGURED, 65).tariff.default_rate_per_kwh == 0.9
    assert in_force(history, CONFIGURED, -1000) is CONFIGURED


def test_configured_version_has_no_start_in_json():
    assert CONFIGURED.as_dict()["effective_from_ts_s"] is None and math.isinf(CONFIGURED.effective_from_s)


# ---------------------------------------------------------------- strict tariffs

def test_time_of_use_spec_wraps_midnight():
    tariff = Tariff.from_spec({"currency": "EUR", "default_rate_per_kwh": 0.2, "periods": [
        {"name": "night", "start_hour": 22, "end_hour": 6, "rate_per_kwh": 0.1}]})
    assert tariff.periods == (Period("night", 22, 6, 0.1),)
    assert [tariff.rate(h)[1] for h in (21, 22, 0, 5, 6)] == [0.2, 0.1, 0.1, 0.1, 0.2]


@pytest.mark.parametrize("spec, message", [
    ([], "the tariff must be a JSON object"),
    ({"currency": "usd", "default_rate_per_kwh": 1}, "currency must be an ISO 4217 code"),
    ({"currency": "USD"}, "default_rate_per_kwh is required"),
    ({"currency": "USD", "default_rate_per_kwh": "0.1"}, "default_rate_per_kwh must be a number"),
    ({"currency": "USD", "default_rate_per_kwh": True}, "default_rate_per_kwh must be a number"),
    ({"currency": "USD", "default_rate_per_kwh": 1e300}, "default_rate_per_kwh must be a number from -1e+06"),
    ({"currency": "USD", "default_rate_per_kwh": 1, "rate": 2}, "unknown field(s) rate"),
    ({"currency": "USD", "default_rate_per_kwh": 1, "periods": {}}, "periods must be a list"),
    ({"currency": "USD", "default_rate_per_kwh": 1, "periods": [5]}, "periods[0] must be an object"),
    ({"currency": "USD", "default_rate_per_kwh": 1, "periods": [{"name": "a", "start_hour": 0}]},
     "periods[0] lacks end_hour, rate_per_kwh"),
    ({"currency": "USD", "default_rate_per_kwh": 1,
      "periods": [{"name": "a", "start_hour": 24, "end_hour": 3, "rate_per_kwh": 1}]},
     "periods[0].start_hour must be a whole number from 0 to 23"),
    ({"currency": "USD", "default_rate_per_kwh": 1,
      "periods": [{"name": "a", "start_hour": 3, "end_hour": 3, "rate_per_kwh": 1}]}, "periods[0] covers no hour"),
    ({"currency": "USD", "default_rate_per_kwh": 1,
      "periods": [{"name": "a", "start_hour": 0, "end_hour": 7, "rate_per_kwh": 1},
                  {"name": "b", "start_hour": 22, "end_hour": 1, "rate_per_kwh": 2}]},
     "periods[1] (b) overlaps periods[0] (a) at hour 0"),
    ({"currency": "USD", "default_rate_per_kwh": 1,
      "periods": [{"name": "a", "start_hour": 0, "end_hour": 7, "rate_per_kwh": 1},
                  {"name": "a", "start_hour": 9, "end_hour": 10, "rate_per_kwh": 2}]}, "repeats the name 'a'"),
])
def test_bad_specs_name_the_field(spec, message):
    with pytest.raises(TariffError) as raised:
        Tariff.from_spec(spec)
    assert message in str(raised.value)


def test_bad_configured_tariff_stops_the_start(settings):
    with pytest.raises(TariffError, match=r"HOUSE_TARIFFS\[h1\].currency"):
        create_app({"TESTING": True, "SMW_SETTINGS": settings,
                    "HOUSE_TARIFFS": {"h1": {"currency": "dollars", "default_rate_per_kwh": 1}}})


# ---------------------------------------------------------------- the API

EST = dt.timezone(dt.timedelta(hours=-5))


def put(client, house, **body):
    return client.put(f"/api/houses/{house}/tariff", json=body)


@pytest.mark.parametrize("data, message", [
    (b"", "the body must be a JSON object of 1 to 16384 bytes"),
    (b"{", "the body must be JSON"),
    (b"[1, 2]", "the tariff must be a JSON object"),
    (b'{"currency": "USD", "default_rate_per_kwh": NaN}', "the body must be JSON"),
    (b'{"currency": "USD", "default_rate_per_kwh": 0.1, "effective_from_ts_s": "today"}',
     "effective_from_ts_s must be a number from 9.46685e+08 to 4.10244e+09"),
    (b'{"currency": "USD", "default_rate_per_kwh": 0.1, "effective_from_ts_s": 1e30}',
     "effective_from_ts_s must be a number"),
    (b'{"currency": "USD", "default_rate_per_kwh": 0.1, "periods": [{"name": "' + b"x" * 40 +
     b'", "start_hour": 1, "end_hour": 2, "rate_per_kwh": 1}]}', "periods[0].name must be text of 1 to 32"),
    (b" " * 20000, "the body must be a JSON object of 1 to 16384 bytes"),
    (b"[" * 5000 + b"]" * 5000, "the body must be JSON"),
])
def test_put_rejects_bad_bodies_with_a_clear_400(client, house_id, data, message):
    response = client.put(f"/api/houses/{house_id}/tariff", data=data, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert message in response.get_json()["error"]


def test_put_for_an_unknown_or_malformed_house(client):
    assert put(client, "h-nobody-here", currency="USD", default_rate_per_kwh=0.1).status_code == 404
    assert put(client, "bad%20id", currency="USD", default_rate_per_kwh=0.1).status_code == 400


def test_get_shows_configured_then_what_is_put(client, house_id):
    before = client.get(f"/api/houses/{house_id}/tariff").get_json()
    assert before["in_force"]["source"] == "config-default" and before["history"] == []
    assert before["in_force"]["default_rate_per_kwh"] == 0.15
    periods = [{"name": "night", "start_hour": 23, "end_hour": 6, "rate_per_kwh": 0.08}]
    response = put(client, house_id, currency="EUR", default_rate_per_kwh=0.25, periods=periods,
                   effective_from_ts_s=1709251200)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["stored"]["effective_from_ts_s"] == 1709251200
    after = client.get(f"/api/houses/{house_id}/tariff?at_ts_s=1709251200").get_json()
    assert after["in_force"]["currency"] == "EUR" and after["in_force"]["periods"] == periods
    assert client.get(f"/api/houses/{house_id}/tariff?at_ts_s=1709251199").get_json()["in_force"]["source"] \
        == "config-default"
    assert [v["effective_from_ts_s"] for v in after["history"]] == [1709251200]
    assert client.get(f"/api/houses/{house_id}/tariff?at_ts_s=99").status_code == 400


def test_cost_prices_each_hour_at_the_tariff_in_force_then(client, house_days):
    # D1's hourly mains: 1 kWh at 03:00 EST (08 UTC) and 1 kWh at 17:00 EST (22 UTC); fridge 0.5 kWh at 17:00.
    switch = utc(2024, 3, 1, 12).timestamp()  # 07:00 EST: after the first hour, before the second
    assert put(client, house_days, currency="USD", default_rate_per_kwh=0.5, effective_from_ts_s=switch).status_code \
        == 200
    body = client.get(f"/api/houses/{house_days}/cost?from=2024-03-01&to=2024-03-01").get_json()
    # 03:00 at the configured off-peak 0.09; 17:00 at the new flat 0.5
    assert body["mains"]["cost"] == pytest.approx(0.09 + 0.5)
    fridge = next(a for a in body["appliances"] if a["appliance"] == "refrigerator")
    assert fridge["cost"] == pytest.approx(0.5 * 0.5)
    assert [(t["source"], t["priced_hours"]) for t in body["tariffs"]] == [("config-default", 1), ("api", 1)]
    assert body["tariffs"][1]["from_ts_s"] == switch and body["currency"] == "USD"
    # D2 has no hourly rows: its 8 kWh at the standard rate in force at its local midnight
    both = client.get(f"/api/houses/{house_days}/cost?from=2024-03-01&to=2024-03-02").get_json()
    assert both["mains"]["cost"] == pytest.approx(0.09 + 0.5 + 8.0 * 0.5) and both["estimated_days"] == 1


def test_cost_refuses_hours_in_two_currencies(client, house_days):
    switch = utc(2024, 3, 1, 12).timestamp()
    assert put(client, house_days, currency="EUR", default_rate_per_kwh=0.4, effective_from_ts_s=switch).status_code \
        == 200
    response = client.get(f"/api/houses/{house_days}/cost?from=2024-03-01&to=2024-03-01")
    assert response.status_code == 400
    assert "priced in USD and EUR (USD from 2024-03-01T05:00:00+00:00, then EUR from 2024-03-01T12:00:00+00:00)" \
        in response.get_json()["error"]
    # Either side of the change alone is fine: D2 is all EUR.
    body = client.get(f"/api/houses/{house_days}/cost?from=2024-03-02&to=2024-03-02").get_json()
    assert body["currency"] == "EUR" and body["mains"]["cost"] == pytest.approx(8.0 * 0.4)


def test_house_tariffs_config_is_the_default_for_its_house(settings, cassandra_session, house_days, rethinkdb_ready):
    from webapp import shutdown

    app = create_app({"TESTING": True, "SMW_SETTINGS": settings,
                      "HOUSE_TARIFFS": {house_days: {"currency": "GBP", "default_rate_per_kwh": 0.3}}})
    try:
        body = admin_client(app).get(f"/api/houses/{house_days}/cost?from=2024-03-01&to=2024-03-01").get_json()
    finally:
        shutdown(app)
    assert body["currency"] == "GBP" and body["mains"]["cost"] == pytest.approx(2 * 0.3)
    assert body["tariffs"][0]["source"] == "config"


@pytest.mark.parametrize("query", ["from=1900-01-01&to=1900-01-02", "from=2999-12-30&to=2999-12-31",
                                   "from=0001-01-01&to=0001-01-02", "from=9999-12-30&to=9999-12-31"])
def test_cost_at_the_ends_of_the_calendar_is_never_a_5xx(client, house_id, query):
    assert client.get(f"/api/houses/{house_id}/cost?{query}").status_code in (200, 400)


def test_rows_without_a_usable_tariff_are_skipped(client, cassandra_session, house_days):
    cassandra_session.execute("INSERT INTO house_tariffs (house_id, bounded, effective_from, source) "
                              "VALUES (%s, false, %s, 'cqlsh')", (house_days, utc(2024, 2, 1)))
    body = client.get(f"/api/houses/{house_days}/cost?from=2024-03-01&to=2024-03-01").get_json()
    assert [t["source"] for t in body["tariffs"]] == ["config-default"]

"""The pulse-meter compatible API."""
import datetime as dt
import json
import time

import pytest

from tests.webapp.conftest import admin_client


pytestmark = pytest.mark.integration


def test_last_and_since_page_through_points_across_days(client, pulse_meter):
    meter_id, store = pulse_meter
    midnight_ms = 1_700_006_400_000  # a UTC midnight
    points = [[midnight_ms - 3000 + 1000 * i, 1000] for i in range(6)]  # three before and three after midnight
    store(points)
    assert client.get(f"/last/{meter_id}").get_json() == points[-1]
    assert client.get(f"/since/{meter_id}/{points[1][0]}").get_json() == points[2:]
    assert client.get(f"/since/{meter_id}/0").get_json() == points


def test_since_answers_pages_of_at_most_2000(client, pulse_meter):
    meter_id, store = pulse_meter
    start_ms = 1_600_000_000_000
    store([[start_ms + 10 * i, 10] for i in range(2100)])
    page = client.get(f"/since/{meter_id}/0").get_json()
    assert len(page) == 2000 and page[-1][0] == start_ms + 10 * 1999
    rest = client.get(f"/since/{meter_id}/{page[-1][0]}").get_json()
    assert len(rest) == 100


def test_last_n_uses_the_current_time(client, pulse_meter):
    meter_id, store = pulse_meter
    now_ms = int(time.time() * 1000)
    store([[now_ms - 120_000, 900], [now_ms - 5_000, 800], [now_ms - 1_000, 700]])
    assert client.get(f"/last/{meter_id}/10000").get_json() == [[now_ms - 5_000, 800], [now_ms - 1_000, 700]]


def test_aggregate_counts_per_bucket_as_offsets_and_omits_empty_buckets(client, pulse_meter):
    meter_id, store = pulse_meter
    t = 1_650_000_000_000
    store([[t + 100, 1], [t + 900, 1], [t + 2500, 1], [t - 1, 1], [t + 10_000, 1]])
    assert client.get(f"/aggregate/{meter_id}/{t}/1000/10").get_json() == [[0, 2], [2000, 1]]


def test_aggregate_falls_back_to_server_side_counts(client, pulse_meter, monkeypatch):
    from webapp import pulse
    meter_id, store = pulse_meter
    t = 1_650_100_000_000
    store([[t + 100 * i, 100] for i in range(30)])
    monkeypatch.setattr(pulse, "RAW_COUNT_LIMIT", 5)
    assert client.get(f"/aggregate/{meter_id}/{t}/1000/4").get_json() == [[0, 10], [1000, 10], [2000, 10]]


def test_hourly_mean_watts_follows_impulses_per_kwh(app, client, pulse_meter):
    meter_id, store = pulse_meter
    hour_ms = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
    store([[hour_ms + 1000 * i, 1000] for i in range(1, 5)] + [[hour_ms + 3_600_000 + 500, 3600]])
    assert client.get(f"/hourly/{meter_id}/{hour_ms}/{hour_ms + 3_600_000}").get_json() == [
        [hour_ms, 4, 3600.0, 1000, 1000], [hour_ms + 3_600_000, 1, 1000.0, 3600, 3600]]
    app.config["PULSE_IMPULSES_PER_KWH"] = 600  # 3.6e9 / (600 * 1000 ms) = 6000 W
    assert client.get(f"/hourly/{meter_id}/{hour_ms}/{hour_ms}").get_json()[0][2] == 6000.0


@pytest.mark.parametrize("url", [
    "/last/m1/1234567890123456", "/since/m1/1234567890123456", "/since/m1/-5", "/since/m1/1e5",
    "/aggregate/m1/0/1000/1001", "/aggregate/m1/0/0/10", "/aggregate/m1/0/1000/0", "/aggregate/m1/x/1/1",
    "/last/m1/0", "/last/bad%20id", "/blip/%3Cscript%3E", "/range/m1/1/1e3", "/usage/m1/0",
    "/minutely/m1/1234567890123456/1", "/aggregate_hourly/m1/0/3600000/1001",
])
def test_bad_parameters_answer_400_with_a_json_error(client, url):
    response = client.get(url)
    assert response.status_code == 400
    assert response.is_json and response.get_json()["error"]


def test_blip_waits_for_the_next_point_sending_spaces_meanwhile(client, pulse_meter):
    import threading
    meter_id, store = pulse_meter
    store([[int(time.time() * 1000) - 5000, 900]])  # the point the page already has
    quiet = client.get(f"/blip/{meter_id}")  # BLIP_MAX_WAIT_S 0.6 with a keepalive every 0.1 s
    assert quiet.status_code == 200 and quiet.get_data(as_text=True).count(" ") >= 3
    assert quiet.get_data(as_text=True).strip() == ""
    stamp_ms = int(time.time() * 1000)
    timer = threading.Timer(0.3, store, args=([[stamp_ms, 1234]],))
    timer.start()
    response = client.get(f"/blip/{meter_id}")
    timer.join()
    assert response.status_code == 200
    assert json.loads(response.get_data(as_text=True)) == [stamp_ms, 1234]


@pytest.fixture
def single_meter(app, pulse_meter):
    """The pulse meter as the server's default meter, and under the alias "1" that pages use."""
    meter_id, store = pulse_meter
    app.config["PULSE_DEFAULT_METER"] = meter_id
    app.config["PULSE_METER_ALIASES"] = {"1": meter_id}
    return meter_id, store


def test_single_meter_forms_read_the_default_meter(client, single_meter):
    meter_id, store = single_meter
    now_ms = int(time.time() * 1000)
    points = [[now_ms - 60_000, 900], [now_ms - 30_000, 800], [now_ms - 1_000, 700]]
    store(points)
    assert client.get("/last").get_json() == points[-1]
    assert client.get("/last/45000").get_json() == points[1:]  # no meter is called 45000: the last 45 s
    assert client.get(f"/since/{points[0][0]}").get_json() == points[1:]
    assert client.get(f"/range/{points[0][0]}/{points[1][0]}").get_json() == points[:2]
    assert client.get("/usage/45000").get_json() == [2]
    assert client.get(f"/aggregate/{points[0][0]}/30000/3").get_json() == [[0, 1], [30000, 2]]
    # the multi-meter forms through the alias, as Studentergaarden's pages ask
    assert client.get("/last/1").get_json() == points[-1]
    assert client.get("/last/1/45000").get_json() == points[1:]
    assert client.get("/usage/1/45000").get_json() == [2]


def test_last_n_answers_the_first_2000_points_of_the_span(client, pulse_meter):
    meter_id, store = pulse_meter
    now_ms = int(time.time() * 1000)
    store([[now_ms - 100_000 + 10 * i, 10] for i in range(2100)])
    page = client.get(f"/last/{meter_id}/200000").get_json()
    assert len(page) == 2000 and page[0][0] == now_ms - 100_000 and page[-1][0] == now_ms - 100_000 + 19_990


def test_last_of_a_number_without_a_default_meter_says_what_to_set(client):
    response = client.get("/last/1200000")
    assert response.status_code == 404 and "SMW_WEB_PULSE_DEFAULT_METER" in response.get_json()["error"]
    response = client.get("/since/0")
    assert response.status_code == 404 and "default meter" in response.get_json()["error"]


def test_minutely_and_hourly_zooms_and_aggregate_hourly(app, client, pulse_meter):
    meter_id, store = pulse_meter
    hour_ms = 1_700_002_800_000  # an hour start
    store([[hour_ms + 1000, 1000], [hour_ms + 2000, 1000], [hour_ms + 61_000, 2000],
           [hour_ms + 3_600_000 + 5000, 3600]])
    assert client.get(f"/minutely/{meter_id}/{hour_ms}/{hour_ms + 120_000}").get_json() == [
        [hour_ms, 2, 3600.0, 1000, 1000], [hour_ms + 60_000, 1, 1800.0, 2000, 2000]]
    hours = client.get(f"/hourly/{meter_id}/{hour_ms}/{hour_ms + 7_200_000}").get_json()
    assert hours == [[hour_ms, 3, 2700.0, 1000, 2000], [hour_ms + 3_600_000, 1, 1000.0, 3600, 3600]]
    # two-hour buckets: Wh = the sum of the hours' mean watts
    assert client.get(f"/aggregate_hourly/{meter_id}/{hour_ms}/7200000/2").get_json() == [[0, 3700.0]]
    assert client.get(f"/aggregate_hourly/{meter_id}/{hour_ms}/3600000/3").get_json() == [
        [0, 2700.0], [3_600_000, 1000.0]]


def test_hourly_spans_a_year_as_the_year_page_asks(client, pulse_meter):
    meter_id, store = pulse_meter
    now_ms = int(time.time() * 1000)
    store([[now_ms - 300 * 86_400_000, 1000], [now_ms - 3_600_000, 1000]])
    rows = client.get(f"/hourly/{meter_id}/{now_ms - 365 * 86_400_000}/{now_ms}").get_json()
    assert [row[1] for row in rows] == [1, 1]


def test_answers_carry_cors_and_cache_headers_and_preflights_succeed(app, client, pulse_meter):
    meter_id, _store = pulse_meter
    response = client.get(f"/since/{meter_id}/0")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cache-Control"] == "max-age=0, must-revalidate"
    preflight = client.options(f"/since/{meter_id}/0", headers={
        "Origin": "http://example.org", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Methods"] == "GET"
    assert client.get(f"/since/{meter_id}/x").headers["Access-Control-Allow-Origin"] == "*"  # errors too
    app.config["PULSE_CORS_ORIGIN"] = ""
    assert "Access-Control-Allow-Origin" not in client.get(f"/since/{meter_id}/0").headers


@pytest.mark.parametrize("url", [
    "/since/{m}/999999999999999", "/last/{m}/999999999999999", "/range/{m}/0/999999999999999",
    "/range/{m}/999999999999999/999999999999999", "/hourly/{m}/999999999999999/999999999999999",
    "/minutely/{m}/999999999999998/999999999999999", "/aggregate/{m}/999999999999999/999999999999999/1000",
    "/aggregate_hourly/{m}/0/999999999999999/1000", "/usage/{m}/999999999999999", "/hourly/{m}/10/5",
])
def test_edge_numbers_answer_without_error(client, pulse_meter, url):
    meter_id, store = pulse_meter
    store([[1_600_000_000_000, 1000]])
    response = client.get(url.format(m=meter_id))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert isinstance(response.get_json(), list)


def test_routes_under_a_prefix(settings, cassandra_session, rethinkdb_ready, pulse_meter):
    from webapp import create_app, shutdown
    meter_id, store = pulse_meter
    store([[1_600_000_000_000, 1000]])
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "PULSE_URL_PREFIX": "/ajax/"})
    try:
        client = admin_client(app)
        assert client.get(f"/ajax/last/{meter_id}").get_json() == [1_600_000_000_000, 1000]
        assert client.get(f"/last/{meter_id}").status_code == 404
    finally:
        shutdown(app)


@pytest.mark.parametrize("config, message", [
    ({"PULSE_METER_ALIASES": ["1"]}, "JSON object"), ({"PULSE_METER_ALIASES": {"1": "bad id"}}, "meter id"),
    ({"PULSE_URL_PREFIX": "ajax"}, "start with /"), ({"PULSE_DEFAULT_METER": "a b"}, "PULSE_DEFAULT_METER"),
])
def test_bad_pulse_settings_fail_at_start(settings, config, message):
    from webapp import create_app
    with pytest.raises(ValueError, match=message):
        create_app({"TESTING": True, "SMW_SETTINGS": settings, **config})


def test_a_meter_of_a_house_with_the_longest_id_is_served(client, cassandra_session):
    house = "h" * 64
    stamp_ms = 1_650_000_000_000
    cassandra_session.execute("INSERT INTO pulse_points (meter_id, day, stamp_ms, ms) VALUES (%s, %s, %s, %s)",
                              (f"{house}-12", dt.date(2022, 4, 15), stamp_ms, 1000))
    cassandra_session.execute("INSERT INTO pulse_days (meter_id, day) VALUES (%s, %s)",
                              (f"{house}-12", dt.date(2022, 4, 15)))
    assert client.get(f"/last/{house}-12").get_json() == [stamp_ms, 1000]
    assert client.get(f"/last/{'h' * 80}").status_code == 400

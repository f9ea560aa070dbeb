"""The pulse-meter compatible API."""
import time
import uuid

import pytest
from cassandra.concurrent import execute_concurrent_with_args

from webapp.pulse import day_of_ms

pytestmark = pytest.mark.integration


@pytest.fixture
def pulse_meter(cassandra_session):
    """A meter id and a function that stores points [stamp_ms, ms]."""
    meter_id = f"m{uuid.uuid4().hex[:8]}"
    insert = cassandra_session.prepare("INSERT INTO pulse_points (meter_id, day, stamp_ms, ms) VALUES (?, ?, ?, ?)")
    insert_day = cassandra_session.prepare("INSERT INTO pulse_days (meter_id, day) VALUES (?, ?)")

    def store(points):
        # concurrently: each write waits for the commit-log sync window
        execute_concurrent_with_args(cassandra_session, insert,
                                     [(meter_id, day_of_ms(stamp_ms), stamp_ms, ms) for stamp_ms, ms in points],
                                     concurrency=100)
        for day in {day_of_ms(stamp_ms) for stamp_ms, _ms in points}:
            cassandra_session.execute(insert_day, (meter_id, day))
    return meter_id, store


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
    "/hourly/m1/10/5", "/hourly/m1/0/999999999999", "/last/m1/0", "/last/bad%20id", "/blip/%3Cscript%3E",
])
def test_bad_parameters_answer_400_with_a_json_error(client, url):
    response = client.get(url)
    assert response.status_code == 400
    assert response.is_json and response.get_json()["error"]


def test_blip_answers_with_the_next_point_or_204(client, pulse_meter):
    import threading
    meter_id, store = pulse_meter
    assert client.get(f"/blip/{meter_id}").status_code == 204
    stamp_ms = int(time.time() * 1000) + 150
    timer = threading.Timer(0.15, store, args=([[stamp_ms, 1234]],))
    timer.start()
    response = client.get(f"/blip/{meter_id}")
    timer.join()
    assert response.status_code == 200 and response.get_json() == [stamp_ms, 1234]

"""20,000 random malformed and edge-value requests over every route: every answer is a 2xx/3xx/4xx, never a 5xx."""
import random
import re
import string
import time

import pytest

from tests.webapp.conftest import admin_client
from webapp import create_app, shutdown

pytestmark = pytest.mark.integration

PULSE = ["/last/{id}", "/last/{id}/{n}", "/since/{id}/{n}", "/range/{id}/{n}/{n}", "/aggregate/{id}/{n}/{n}/{n}",
         "/aggregate_hourly/{id}/{n}/{n}/{n}", "/hourly/{id}/{n}/{n}", "/minutely/{id}/{n}/{n}", "/usage/{id}/{n}",
         "/blip/{id}"]
ROUTES = PULSE + [route.replace("{id}/", "", 1) for route in PULSE] + ["/last", "/blip"] + [
    "/api/houses/{id}", "/api/houses/{id}/daily?from={d}&to={d}", "/api/houses/{id}/daily.csv?from={d}",
    "/api/houses/{id}/cost?from={d}&to={d}", "/api/houses/{id}/power?meter={n}&from_ts_s={n}&to_ts_s={n}",
    "/api/houses/{id}/alerts?limit={n}", "/api/appliances/{id}?day={d}", "/api/zips?day={d}",
    "/api/alerts?house_id={id}&state={id}&limit={n}", "/houses/{id}", "/appliances/{id}", "/alerts?house_id={id}",
]
REQUESTS = 20_000
ALPHABET = string.ascii_letters + string.digits + "-_.:%<>'\"&;/\\ ~!@#$^*()[]{}|`=+,?\x00é☃"


def noise(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.25:
        return str(rng.choice([-1, 0, 1, 10**15, 10**16, 2**63, -2**63, 10**15 - 1, 10**14, 253402300799999,
                               int(time.time() * 1000), 3600000, 86400000]) * rng.choice([1, 7]))
    if choice < 0.45:
        return "".join(rng.choice(string.digits) for _ in range(rng.randint(1, 40)))
    if choice < 0.55:
        return rng.choice(["1e9", "0x10", "1.5", "NaN", "inf", "-0", " 1", "１２", "٣"])
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30)))


def date_noise(rng: random.Random) -> str:
    return rng.choice(["2024-02-30", "2024-13-01", "0000-01-01", "0001-01-05", "9999-12-31", "2024-1-1", "",
                       "2024-03-01", "1899-12-31", "1900-01-01", "2999-12-31", "3000-01-01"]) \
        if rng.random() < 0.5 else noise(rng)


@pytest.fixture
def fuzz_client(settings, cassandra_session, rethinkdb_ready):
    """The app with a default pulse meter (so the single-meter routes reach their views) and
    long polls that give up at once, asked by an admin (so every request reaches its view)."""
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "PULSE_DEFAULT_METER": "fuzz-1",
                      "BLIP_MAX_WAIT_S": 0.01, "BLIP_KEEPALIVE_S": 0.01})
    yield admin_client(app)
    shutdown(app)


def test_twenty_thousand_malformed_requests_never_answer_5xx(fuzz_client):
    client = fuzz_client
    rng = random.Random(20240301)
    failures, statuses = [], set()
    for _ in range(REQUESTS):
        template = rng.choice(ROUTES)
        url = re.sub(r"\{(\w)\}", lambda m: date_noise(rng) if m.group(1) == "d" else noise(rng), template)
        headers = {"Last-Event-ID": noise(rng)} if rng.random() < 0.05 else {}
        response = client.get(url, headers=headers)
        statuses.add(response.status_code)
        if response.status_code >= 500:
            failures.append((url, response.status_code, response.get_data(as_text=True)[:200]))
    assert failures == []
    assert {200, 400, 404} <= statuses  # the requests reached the views, not only the router


@pytest.mark.parametrize("query", [
    "daily?to=0001-01-05", "daily.csv?to=0001-01-05", "cost?to=0001-01-05", "daily?from=9999-12-30&to=9999-12-31",
    "power?to_ts_s=999999999999999", "power?from_ts_s=999999999999998&to_ts_s=999999999999999",
])
def test_dates_and_instants_at_the_ends_of_the_calendar_answer_400(client, house_id, query):
    response = client.get(f"/api/houses/{house_id}/{query}")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "must be" in response.get_json()["error"]

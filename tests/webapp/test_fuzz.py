"""10,000 random malformed API requests: every answer is a 2xx/3xx/4xx, never a 5xx."""
import random
import re
import string

import pytest

pytestmark = pytest.mark.integration

ROUTES = [
    "/last/{id}", "/last/{id}/{n}", "/since/{id}/{n}", "/aggregate/{id}/{n}/{n}/{n}", "/hourly/{id}/{n}/{n}",
    "/api/houses/{id}", "/api/houses/{id}/daily?from={d}&to={d}", "/api/houses/{id}/daily.csv?from={d}",
    "/api/houses/{id}/cost?from={d}&to={d}", "/api/houses/{id}/power?meter={n}&from_ts_s={n}&to_ts_s={n}",
    "/api/houses/{id}/alerts?limit={n}", "/api/appliances/{id}?day={d}", "/api/zips?day={d}",
    "/api/alerts?house_id={id}&state={id}&limit={n}", "/houses/{id}", "/appliances/{id}", "/alerts?house_id={id}",
]
REQUESTS = 10_000
ALPHABET = string.ascii_letters + string.digits + "-_.:%<>'\"&;/\\ ~!@#$^*()[]{}|`=+,?\x00é☃"


def noise(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.25:
        return str(rng.choice([-1, 0, 1, 10**15, 10**16, 2**63, -2**63]) * rng.choice([1, 7]))
    if choice < 0.45:
        return "".join(rng.choice(string.digits) for _ in range(rng.randint(1, 40)))
    if choice < 0.55:
        return rng.choice(["1e9", "0x10", "1.5", "NaN", "inf", "-0", " 1", "１２", "٣"])
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30)))


def date_noise(rng: random.Random) -> str:
    return rng.choice(["2024-02-30", "2024-13-01", "0000-01-01", "9999-12-31", "2024-1-1", "", "2024-03-01"]) \
        if rng.random() < 0.5 else noise(rng)


def test_ten_thousand_malformed_requests_never_answer_5xx(client):
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

"""The daily-kWh response cache: bounded in age and bytes, and a write shows after at most the TTL."""
import time

import pytest

from tests.webapp.conftest import D1, admin_client
from tools import sample
from webapp import create_app, queries, shutdown
from webapp.cache import KnownKeys, ResponseCache


class Clock:
    def __init__(self):
        self.now_s = 1000.0

    def __call__(self):
        return self.now_s


def test_entries_expire_after_the_ttl():
    clock = Clock()
    cache = ResponseCache(ttl_s=60, max_bytes=1000, clock=clock)
    cache.put("a", b"old")
    clock.now_s += 59.9
    assert cache.get("a") == b"old"
    clock.now_s += 0.1
    assert cache.get("a") is None
    assert len(cache) == 0 and cache.size_bytes == 0


def test_least_recently_used_entries_leave_to_stay_within_max_bytes():
    cache = ResponseCache(ttl_s=60, max_bytes=10, clock=Clock())
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # now b is the least recently used
    cache.put("c", b"1234")
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.get("c") == b"1234"
    assert cache.size_bytes == 8
    cache.put("a", b"12")  # replacing an entry counts its new size only
    assert cache.size_bytes == 6
    cache.put("huge", b"x" * 11)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2


def test_a_zero_ttl_turns_the_cache_off():
    cache = ResponseCache(ttl_s=0, max_bytes=1000)
    cache.put("a", b"1")
    assert not cache.enabled and cache.get("a") is None and len(cache) == 0



@pytest.fixture
def app_with_ttl(settings, cassandra_session, rethinkdb_ready):
    apps = []

    def make(ttl_s):
        app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "DAILY_CACHE_TTL_S": ttl_s})
        apps.append(app)
        return admin_client(app)

    yield make
    for app in apps:
        shutdown(app)


def fridge_kwh(client, house_id):
    body = client.get(f"/api/houses/{house_id}/daily?from=2024-03-01&to=2024-03-01").get_json()
    return body["days"][0]["appliances"]["refrigerator"]


def rewrite_fridge(cassandra_session, house_id, kwh):
    cassandra_session.execute(
        "INSERT INTO daily_energy_by_house (house_id, day, meter, label, appliance, energy_kwh) "
        "VALUES (%s, %s, 5, 'refrigerator', 'refrigerator', %s)", (house_id, D1, kwh))
    sample.write_day_docs(cassandra_session, house_id)


@pytest.mark.integration
def test_a_write_after_the_cache_was_filled_shows_within_the_ttl(app_with_ttl, cassandra_session, house_days):
    client = app_with_ttl(1.0)
    assert fridge_kwh(client, house_days) == 1.2
    filled = time.monotonic()
    rewrite_fridge(cassandra_session, house_days, 3.5)  # the nightly batch re-ran
    assert fridge_kwh(client, house_days) == 1.2  # still the cached answer ...
    time.sleep(max(0.0, filled + 1.05 - time.monotonic()))
    assert fridge_kwh(client, house_days) == 3.5  # ... and the new one once the TTL has passed


@pytest.mark.integration
def test_without_the_cache_a_write_shows_at_once(app_with_ttl, cassandra_session, house_days):
    client = app_with_ttl(0)
    assert fridge_kwh(client, house_days) == 1.2
    rewrite_fridge(cassandra_session, house_days, 3.5)
    assert fridge_kwh(client, house_days) == 3.5


@pytest.mark.integration
def test_answers_are_cached_per_house_and_range_and_unknown_houses_are_not(app_with_ttl, cassandra_session,
                                                                            house_days):
    client = app_with_ttl(60)
    assert fridge_kwh(client, house_days) == 1.2
    rewrite_fridge(cassandra_session, house_days, 3.5)
    two_days = client.get(f"/api/houses/{house_days}/daily?from=2024-03-01&to=2024-03-02").get_json()
    assert two_days["days"][0]["appliances"]["refrigerator"] == 3.5  # another range: not the cached answer
    newcomer = house_days + "-new"
    assert client.get(f"/api/houses/{newcomer}/daily?from=2024-03-01&to=2024-03-01").status_code == 404
    cassandra_session.execute("INSERT INTO houses (house_id, zip) VALUES (%s, '02139')", (newcomer,))
    assert client.get(f"/api/houses/{newcomer}/daily?from=2024-03-01&to=2024-03-01").status_code == 200


def test_known_keys_expire_and_stay_bounded():
    clock = Clock()
    known = KnownKeys(ttl_s=10, max_entries=2, clock=clock)
    known.add("a")
    known.add("b")
    assert "a" in known and "b" in known
    known.add("c")
    assert "a" not in known and "c" in known and len(known) == 2  # the oldest left
    clock.now_s += 10
    assert "b" not in known and "c" not in known and len(known) == 0
    off = KnownKeys(ttl_s=0, clock=clock)
    off.add("a")
    assert "a" not in off


@pytest.mark.integration
@pytest.mark.parametrize("house_ttl_s, lookups", [(60, 1), (0, 3)])
def test_a_known_house_is_looked_up_once_per_ttl(settings, cassandra_session, rethinkdb_ready, house_days,
                                                  house_ttl_s, lookups):
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "DAILY_CACHE_TTL_S": 0,
                      "HOUSE_CACHE_TTL_S": house_ttl_s})
    try:
        client = admin_client(app)
        store = app.extensions["smw_cassandra"]
        sent, start = [], store.start

        def counting_start(statement, params=()):
            sent.append(statement)
            return start(statement, params)
        store.start = counting_start
        for _ in range(3):
            assert fridge_kwh(client, house_days) == 1.2
        assert sent.count(queries.HOUSE_QUERY) == lookups and sent.count(queries.DOCS_QUERY) == 3
        unknown = f"/api/houses/{house_days}-none/daily?from=2024-03-01&to=2024-03-01"
        assert client.get(unknown).status_code == 404
        assert client.get(unknown).status_code == 404  # an unknown house is asked for every time
        assert sent.count(queries.HOUSE_QUERY) == lookups + 2
    finally:
        shutdown(app)

"""Dashboard defaults that follow the data: the day an appliance or zip page opens on, and a
house's share of mains over a range where some days have circuits but no mains."""
import datetime as dt
import random

import pytest

from tests.webapp.conftest import D2
from tools import sample

pytestmark = pytest.mark.integration


def test_share_of_mains_compares_appliances_with_mains_on_the_same_days(client, cassandra_session, house_days):
    d3 = D2 + dt.timedelta(days=1)  # a day with a circuit but no mains (its mains meter was down)
    cassandra_session.execute("INSERT INTO daily_energy_by_house (house_id, day, meter, label, appliance, energy_kwh) "
                              "VALUES (%s, %s, 5, 'refrigerator', 'refrigerator', 5.0)", (house_days, d3))
    sample.write_day_docs(cassandra_session, house_days)
    body = client.get(f"/api/houses/{house_days}/daily?from=2024-03-01&to=2024-03-03").get_json()
    assert body["totals"]["by_appliance"]["refrigerator"] == pytest.approx(7.2)  # every day counts here
    assert body["totals"]["share_of_mains"]["refrigerator"] == pytest.approx(2.2 / 18, abs=1e-4)  # mains days


@pytest.fixture
def far_now(monkeypatch):
    """A 'now' in a far-future week of its own, so the days around it hold only this test's rows."""
    from webapp import api
    now = dt.datetime(2600, 1, 1, 4, tzinfo=dt.timezone.utc) + dt.timedelta(weeks=random.randrange(10_000))
    monkeypatch.setattr(api, "now_utc", lambda: now)
    return now


def test_appliance_and_zip_pages_open_on_the_newest_day_with_data(client, cassandra_session, far_now):
    from webapp.queries import newest_complete_day
    # 04:00 UTC is a US evening: the US day before has ended, "yesterday in UTC" has not everywhere
    newest = newest_complete_day(far_now)
    assert newest == far_now.date() - dt.timedelta(days=2)
    day = newest - dt.timedelta(days=1)  # the batch has not run for the newest day yet
    cassandra_session.execute("INSERT INTO daily_energy_by_appliance (appliance, day, house_id, energy_kwh) "
                              "VALUES ('kettle', %s, 'h1', 0.7)", (day,))
    cassandra_session.execute("INSERT INTO daily_energy_by_zip (day, zip, energy_kwh, houses) "
                              "VALUES (%s, '94110', 12.0, 2)", (day,))
    body = client.get("/api/appliances/kettle").get_json()
    assert body["day"] == day.isoformat() and [h["house_id"] for h in body["houses"]] == ["h1"]
    body = client.get("/api/zips").get_json()
    assert body["day"] == day.isoformat() and [z["zip"] for z in body["zips"]] == ["94110"]
    # an explicit day is kept, with or without data
    assert client.get(f"/api/zips?day={newest.isoformat()}").get_json() == {"day": newest.isoformat(), "zips": []}


def test_without_data_nearby_the_newest_complete_day_is_shown(client, far_now):
    from webapp.queries import newest_complete_day
    assert client.get("/api/appliances/no-such-appliance").get_json()["day"] == \
        newest_complete_day(far_now).isoformat()

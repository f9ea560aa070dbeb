"""JSON API and pages against the real Cassandra and RethinkDB-protocol server."""
import csv
import datetime as dt
import io
import time

import pytest

from tests.webapp.conftest import D1, bearer, utc
from webapp import auth, create_app, shutdown

pytestmark = pytest.mark.integration

def test_house_daily_sums_channels_of_an_appliance_and_reports_untracked(client, house_days):
    body = client.get(f"/api/houses/{house_days}/daily?from=2024-03-01&to=2024-03-02").get_json()
    assert [d["day"] for d in body["days"]] == ["2024-03-01", "2024-03-02"]
    first = body["days"][0]
    assert first["appliances"] == {"lighting": 1.0, "refrigerator": 1.2}  # mains is not an appliance
    assert first["untracked_kwh"] == pytest.approx(7.8)
    assert body["appliances"] == ["refrigerator", "lighting"]  # largest first
    assert body["totals"]["by_appliance"]["refrigerator"] == pytest.approx(2.2)
    assert body["totals"]["share_of_mains"]["refrigerator"] == pytest.approx(2.2 / 18, abs=1e-4)
    assert body["totals"]["untracked_kwh"] == pytest.approx(7.8 + 6.5)


def test_house_daily_rejects_bad_and_oversized_ranges(client, house_id):
    assert client.get(f"/api/houses/{house_id}/daily?from=2024-13-01").status_code == 400
    assert client.get(f"/api/houses/{house_id}/daily?from=2024-03-02&to=2024-03-01").status_code == 400
    response = client.get(f"/api/houses/{house_id}/daily?from=2020-01-01&to=2024-01-01")
    assert response.status_code == 400 and "366" in response.get_json()["error"]
    assert client.get("/api/houses/no-such-house/daily").status_code == 404


def test_csv_export_has_a_row_per_meter_day_and_untracked(client, house_days):
    response = client.get(f"/api/houses/{house_days}/daily.csv?from=2024-03-01&to=2024-03-02")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 2 * 5 + 2
    fridge = [r for r in rows if r["meter"] == "5"]
    assert [(r["day"], float(r["energy_kwh"])) for r in fridge] == [("2024-03-01", 1.2), ("2024-03-02", 1.0)]
    assert [float(r["energy_kwh"]) for r in rows if r["appliance"] == "untracked"] == pytest.approx([7.8, 6.5])


def test_csv_export_neutralises_spreadsheet_formulas(client, cassandra_session, house_id):
    cassandra_session.execute("INSERT INTO daily_energy_by_house (house_id, day, meter, label, appliance, energy_kwh) "
                              "VALUES (%s, %s, 3, %s, %s, 1.0)", (house_id, D1, "=HYPERLINK(1)", "=cmd"))
    text = client.get(f"/api/houses/{house_id}/daily.csv?from=2024-03-01&to=2024-03-01").get_data(as_text=True)
    assert ",'=HYPERLINK(1),'=cmd," in text


def test_cost_prices_hours_at_their_time_of_use_rate(client, house_days):
    body = client.get(f"/api/houses/{house_days}/cost?from=2024-03-01&to=2024-03-02").get_json()
    # D1 from hourly rows: mains 1 kWh peak + 1 kWh off-peak; fridge 0.5 kWh peak.
    # D2 has no hourly rows: its daily kWh at the standard 0.15.
    assert body["estimated_days"] == 1
    assert body["mains"]["cost"] == pytest.approx(0.32 + 0.09 + 8.0 * 0.15)
    fridge = next(a for a in body["appliances"] if a["appliance"] == "refrigerator")
    assert fridge["cost"] == pytest.approx(0.5 * 0.32 + 1.0 * 0.15)
    assert {p["period"]: p["energy_kwh"] for p in body["by_period"]} == {"peak": 1.0, "off-peak": 1.0}


def test_overview_lists_houses_open_alerts_and_top_consumers(client, cassandra_session, house_id, insert_alert):
    from tests.webapp.conftest import make_alert
    from webapp.queries import local_yesterday
    yesterday = local_yesterday("America/New_York", dt.datetime.now(dt.timezone.utc))
    mains_kwh = time.time()  # larger than what earlier runs left in the test keyspace
    cassandra_session.execute("INSERT INTO daily_house_totals (house_id, day, mains_kwh, circuits_kwh, untracked_kwh) "
                              "VALUES (%s, %s, %s, 1000.0, 234.5)", (house_id, yesterday, mains_kwh))
    alert = insert_alert(make_alert(house_id))
    body = client.get("/api/overview").get_json()
    mine = next(h for h in body["houses"] if h["house_id"] == house_id)
    assert mine["mains_kwh"] == mains_kwh and mine["day"] == yesterday.isoformat() and mine["open_alerts"] == 1
    assert body["top_consumers"][0]["house_id"] == house_id
    assert alert["id"] in {a["id"] for a in body["open_alerts"]}


def test_overview_shows_a_house_s_newest_day_while_yesterday_is_not_computed_yet(client, cassandra_session, house_id):
    """Just after a house's midnight the nightly job has not run for the day that ended: the
    overview shows the day before (its date in the row), not an empty row."""
    from webapp.queries import OVERVIEW_DAYS_BACK, local_yesterday
    yesterday = local_yesterday("America/New_York", dt.datetime.now(dt.timezone.utc))
    too_old = yesterday - dt.timedelta(days=OVERVIEW_DAYS_BACK)
    for day, mains_kwh in [(yesterday - dt.timedelta(days=2), 11.5), (yesterday - dt.timedelta(days=3), 9.0),
                           (too_old, 7.0)]:
        cassandra_session.execute("INSERT INTO daily_house_totals (house_id, day, mains_kwh, circuits_kwh, untracked_kwh) "
                                  "VALUES (%s, %s, %s, 5.0, %s)", (house_id, day, mains_kwh, mains_kwh - 5.0))
    mine = next(h for h in client.get("/api/overview").get_json()["houses"] if h["house_id"] == house_id)
    assert mine["day"] == (yesterday - dt.timedelta(days=2)).isoformat() and mine["mains_kwh"] == 11.5
    cassandra_session.execute("DELETE FROM daily_house_totals WHERE house_id = %s AND day IN (%s, %s)",
                              (house_id, yesterday - dt.timedelta(days=2), yesterday - dt.timedelta(days=3)))
    mine = next(h for h in client.get("/api/overview").get_json()["houses"] if h["house_id"] == house_id)
    assert mine["day"] == yesterday.isoformat() and mine["mains_kwh"] is None  # a week old is too old


def test_appliance_distribution_and_zip_totals(client, cassandra_session):
    appliance = f"toaster{time.time_ns()}"
    for house, kwh in [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 10.0)]:
        cassandra_session.execute("INSERT INTO daily_energy_by_appliance (appliance, day, house_id, energy_kwh, share_of_mains) "
                                  "VALUES (%s, %s, %s, %s, 0.1)", (appliance, D1, house, kwh))
    body = client.get(f"/api/appliances/{appliance}?day=2024-03-01").get_json()
    assert [h["house_id"] for h in body["houses"]] == ["d", "c", "b", "a"]
    assert body["stats"]["median_kwh"] == pytest.approx(2.5) and body["stats"]["max_kwh"] == 10.0
    day = dt.date(1999, 1, 1) + dt.timedelta(days=time.time_ns() % 5000)
    cassandra_session.execute("INSERT INTO daily_energy_by_zip (day, zip, energy_kwh, houses) VALUES (%s, '10001', 30.0, 3)", (day,))
    zips = client.get(f"/api/zips?day={day.isoformat()}").get_json()["zips"]
    assert zips == [{"zip": "10001", "energy_kwh": 30.0, "houses": 3, "kwh_per_house": 10.0}]


def test_power_switches_resolution_with_the_span(client, cassandra_session, house_id):
    hour = utc(2024, 3, 1, 10)
    for i in range(180):  # 3 minutes at 1 Hz: 100 W, 200 W, 300 W
        cassandra_session.execute("INSERT INTO recent_power (house_id, meter, hour_start, ts, power_w) VALUES (%s, 1, %s, %s, %s)",
                                  (house_id, hour, hour + dt.timedelta(seconds=i), 100.0 * (1 + i // 60)))
    start = hour.timestamp()
    raw = client.get(f"/api/houses/{house_id}/power?meter=1&from_ts_s={start:.0f}&to_ts_s={start + 600:.0f}").get_json()
    assert raw["resolution"] == "raw" and len(raw["series"]["1"]) == 180
    minute = client.get(f"/api/houses/{house_id}/power?meter=1&from_ts_s={start - 7200:.0f}&to_ts_s={start + 7200:.0f}").get_json()
    assert minute["resolution"] == "minute"
    assert [p[1] for p in minute["series"]["1"]] == [100.0, 200.0, 300.0]
    assert client.get(f"/api/houses/{house_id}/power?meter=1&from_ts_s=10&to_ts_s=5").status_code == 400
    assert client.get(f"/api/houses/{house_id}/power?meter=1,2,3,4,5,6,7,8,9").status_code == 400


def test_pages_render_and_escape_stored_text(client, cassandra_session, house_id):
    evil = '<img src=x onerror="alert(1)">'
    cassandra_session.execute(
        "INSERT INTO alerts_by_house (house_id, start_ts, alert_id, kind, appliance, state) VALUES (%s, %s, 'x1', 'overshoot', %s, 'open')",
        (house_id, utc(2024, 3, 1, 12), evil))
    cassandra_session.execute("INSERT INTO thresholds (house_id, meter, appliance, threshold_w) VALUES (%s, 5, %s, 150.0)",
                              (house_id, evil))
    html = client.get(f"/houses/{house_id}").get_data(as_text=True)
    assert evil not in html and "&lt;img src=x onerror=" in html
    for url in ["/", "/zips", "/alerts", f"/houses/{house_id}/live", "/appliances/refrigerator"]:
        assert client.get(url).status_code == 200, url


def test_thresholds_tell_the_usual_power_normal_peak_and_usual_run(client, cassandra_session, house_id, settings):
    insert = ("INSERT INTO thresholds (house_id, meter, appliance, threshold_w, normal_peak_w, min_run_s) "
              "VALUES (%s, %s, %s, %s, %s, %s)")
    cassandra_session.execute(insert, (house_id, 3, "refrigerator", 128.5, 484.0, 1076.0))
    cassandra_session.execute(insert, (house_id, 9, "microwave", 1400.0, None, None))
    limits = client.get(f"/api/houses/{house_id}/thresholds").get_json()["thresholds"]
    assert [(t["meter"], t["normal_peak_w"], t["min_run_s"]) for t in limits] == [(3, 484.0, 1076.0), (9, None, None)]
    html = client.get(f"/houses/{house_id}").get_data(as_text=True)
    assert "<td>128.5</td><td>484</td><td>18 min</td>" in html
    assert "<td>1400.0</td><td></td><td></td>" in html
    # Every page says which data it shows.
    assert f"keyspace {settings.cassandra_keyspace} · alerts {settings.rethinkdb_db}" in html


def test_errors_are_json_for_the_api_and_html_for_pages_without_traces(client, app, monkeypatch):
    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret internals")
    monkeypatch.setitem(auth.POLICIES, "boom", auth.signed_in)
    response = client.get("/api/boom")
    assert response.status_code == 500 and response.get_json() == {"error": "internal error", "status": 500}
    page = client.get("/houses/<script>")
    assert page.status_code == 400 and "<script>" not in page.get_data(as_text=True)
    assert client.get("/api/openapi.json").get_json()["openapi"].startswith("3.")


def test_cassandra_down_is_a_503_not_a_500(settings):
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings.replace(cassandra_hosts="127.0.0.1",
                                                                        cassandra_port="1")})
    try:
        # the token cannot be checked either: 503, not 401 or 500
        response = app.test_client().get("/api/houses/h1/daily?from=2024-03-01&to=2024-03-02",
                                         headers=bearer("any-token"))
        assert response.status_code == 503 and "not answering" in response.get_json()["error"]
    finally:
        shutdown(app)


def test_times_carry_their_zone_the_houses_for_a_houses_data():
    from webapp.pages import format_ts

    start = utc(2024, 3, 1, 12).timestamp()
    assert format_ts(start, "America/New_York") == "2024-03-01 07:00:00 EST"
    assert format_ts(start) == format_ts(start, "Not/AZone") == "2024-03-01 12:00:00 UTC"
    assert format_ts(None) == ""


def test_the_api_description_covers_every_json_route(app):
    import json
    import re
    from pathlib import Path
    described = json.loads((Path(app.static_folder) / "openapi.json").read_text())["paths"]
    missing = []
    for rule in app.url_map.iter_rules():
        json_route = rule.rule.startswith("/api/") or rule.endpoint.startswith("pulse.") or \
            rule.endpoint == "alerts.stream"
        if not json_route or rule.endpoint in ("api.openapi",) or rule.endpoint.endswith("_default"):
            continue  # the single-meter pulse forms are described with their multi-meter form
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method.lower() not in described.get(path, {}):
                missing.append(f"{method} {path}")
    assert missing == []

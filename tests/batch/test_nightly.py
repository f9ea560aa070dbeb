"""The nightly job's Spark transforms on inline rows, and one run into Cassandra."""
import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import nightly

pytestmark = pytest.mark.spark
DAY = dt.date(2011, 4, 18)
MIDNIGHT_NY = dt.datetime(2011, 4, 18, 4, 0, tzinfo=dt.timezone.utc).timestamp()


def write_inputs(tmp_path, rows, houses):
    table = pa.table({
        "house_id": [r[0] for r in rows], "meter": pa.array([r[1] for r in rows], pa.int32()),
        "label": [r[2] for r in rows], "appliance": [r[2] for r in rows],
        "ts_s": [float(r[3]) for r in rows], "power_w": [float(r[4]) for r in rows],
        "date": [dt.datetime.fromtimestamp(r[3], dt.timezone.utc).date().isoformat() for r in rows],
    })
    pq.write_to_dataset(table, tmp_path / "readings", partition_cols=["date"])
    (tmp_path / "houses.json").write_text("\n".join(json.dumps(h) for h in houses))
    return str(tmp_path / "readings"), str(tmp_path / "houses.json")


def rows_for(house, meter, label, start, count, step, power):
    return [(house, meter, label, start + i * step, power) for i in range(count)]


@pytest.fixture
def outputs(spark, settings, tmp_path):
    rows = (
        # h1: two mains legs and a fridge, readings from 1 h before to 1 h after the local day.
        rows_for("h1", 1, "mains", MIDNIGHT_NY - 3600, 26 * 3600 // 10, 10, 400.0)
        + rows_for("h1", 2, "mains", MIDNIGHT_NY - 3600, 26 * 3600 // 10, 10, 200.0)
        + rows_for("h1", 5, "refrigerator", MIDNIGHT_NY - 3600, 26 * 3600 // 30, 30, 120.0)
        + rows_for("h1", 6, "lighting", MIDNIGHT_NY, 3600 // 30, 30, 60.0)
        + rows_for("h1", 7, "lighting", MIDNIGHT_NY, 3600 // 30, 30, 30.0)
        # h2: circuits only, no mains at all.
        + rows_for("h2", 3, "oven", MIDNIGHT_NY + 7200, 100, 3, 2000.0)
    )
    readings, houses = write_inputs(tmp_path, rows, [
        {"house_id": "h1", "zip": "02139", "tz": "America/New_York"},
        {"house_id": "h2", "zip": "02139", "tz": "America/New_York"},
    ])
    result = nightly.run(spark, settings, nightly.Params(), DAY, DAY, readings, houses, write=False)
    return {name: frame.collect() for name, frame in result.items()}


def test_daily_energy_per_meter(outputs):
    daily = {(r.house_id, r.meter): r for r in outputs["daily_energy_by_house"]}
    assert daily[("h1", 1)].energy_kwh == pytest.approx(400 * 24 / 1000)
    assert daily[("h1", 1)].coverage == pytest.approx(1.0)
    assert daily[("h1", 5)].energy_kwh == pytest.approx(120 * 24 / 1000)
    assert daily[("h1", 6)].energy_kwh == pytest.approx(60 * (3600 - 30) / 3.6e6)  # last reading covers nothing
    assert daily[("h2", 3)].energy_kwh == pytest.approx(2000 * 99 * 3 / 3.6e6)
    assert all(r.day == DAY for r in outputs["daily_energy_by_house"])


def test_house_day_documents_hold_what_the_daily_api_serves(outputs):
    docs = {r.house_id: json.loads(r.doc) for r in outputs["daily_house_docs"]}
    assert sorted(docs) == ["h1", "h2"] and all(r.day == DAY for r in outputs["daily_house_docs"])
    h1 = docs["h1"]
    assert h1["day"] == DAY.isoformat() and h1["mains_kwh"] == pytest.approx(600 * 24 / 1000)
    assert h1["appliances"] == {"lighting": pytest.approx(round((60 + 30) * (3600 - 30) / 3.6e6, 6)),
                                "refrigerator": pytest.approx(120 * 24 / 1000)}  # two lighting channels summed
    assert docs["h2"]["mains_kwh"] is None and docs["h2"]["untracked_kwh"] is None  # nulls are kept
    assert docs["h2"]["appliances"] == {"oven": pytest.approx(round(2000 * 99 * 3 / 3.6e6, 6))}


def test_house_day_documents_agree_with_the_sample_writer(outputs):
    """tools.sample.day_docs writes the same documents from rows written by hand (tests, benchmarks)."""
    from tools import sample

    for house in ("h1", "h2"):
        by_hand = sample.day_docs([r for r in outputs["daily_energy_by_house"] if r.house_id == house],
                                  [r for r in outputs["daily_house_totals"] if r.house_id == house])
        (spark_doc,) = [json.loads(r.doc) for r in outputs["daily_house_docs"] if r.house_id == house]
        expected = json.loads(by_hand[DAY])
        assert spark_doc.keys() == expected.keys() and spark_doc["day"] == expected["day"]
        for key in ("mains_kwh", "circuits_kwh", "untracked_kwh", "coverage"):
            assert spark_doc[key] == (None if expected[key] is None else pytest.approx(expected[key]))
        assert spark_doc["appliances"] == pytest.approx(expected["appliances"], abs=1e-6)


def test_house_totals_with_and_without_mains(outputs):
    totals = {r.house_id: r for r in outputs["daily_house_totals"]}
    circuits = 120 * 24 / 1000 + (60 + 30) * (3600 - 30) / 3.6e6
    assert totals["h1"].mains_kwh == pytest.approx(600 * 24 / 1000)
    assert totals["h1"].circuits_kwh == pytest.approx(circuits)
    assert totals["h1"].untracked_kwh == pytest.approx(600 * 24 / 1000 - circuits)
    assert totals["h2"].mains_kwh is None and totals["h2"].untracked_kwh is None
    assert totals["h2"].circuits_kwh == pytest.approx(2000 * 99 * 3 / 3.6e6)


def test_appliances_sum_their_channels_and_share_mains(outputs):
    lighting = [r for r in outputs["daily_energy_by_appliance"] if r.appliance == "lighting"]
    assert len(lighting) == 1
    assert lighting[0].energy_kwh == pytest.approx(90 * (3600 - 30) / 3.6e6)
    assert lighting[0].share_of_mains == pytest.approx(lighting[0].energy_kwh / 14.4)
    oven = [r for r in outputs["daily_energy_by_appliance"] if r.appliance == "oven"][0]
    assert oven.share_of_mains is None


def test_zip_counts_houses_with_mains(outputs):
    (row,) = outputs["daily_energy_by_zip"]
    assert (row.zip, row.houses) == ("02139", 1) and row.energy_kwh == pytest.approx(14.4)


def test_hourly_rollup(outputs):
    fridge = sorted((r for r in outputs["hourly_energy"] if r.house_id == "h1" and r.meter == 5),
                    key=lambda r: r.hour_start)
    assert len(fridge) == 24
    assert all(r.energy_kwh == pytest.approx(0.12) and r.samples == 120 and r.mean_w == pytest.approx(120)
               for r in fridge)


def test_thresholds(outputs):
    limits = {(r.house_id, r.meter): r for r in outputs["thresholds"]}
    assert limits[("h2", 3)].threshold_w == pytest.approx(2000.0)
    assert limits[("h1", 5)].quantile == 0.9 and limits[("h1", 5)].window_days == 30
    # The fridge holds 120 W on every day; the oven ran on one day only and no other oven is on.
    assert (limits[("h1", 5)].normal_peak_w, limits[("h1", 5)].peak_days) == (pytest.approx(120.0), 2)
    assert limits[("h2", 3)].normal_peak_w is None and limits[("h2", 3)].fleet_meters == 0


def test_mains_and_circuits_get_their_own_cap(spark, settings, tmp_path):
    # The same readings, 40 s apart: a mains leg counts 30 s of each, a circuit all 40 s.
    rows = rows_for("h1", 1, "mains", MIDNIGHT_NY, 10, 40, 100.0) + rows_for("h1", 4, "oven", MIDNIGHT_NY, 10, 40, 100.0)
    readings, houses = write_inputs(tmp_path, rows, [{"house_id": "h1", "zip": "02139", "tz": "America/New_York"}])
    result = nightly.run(spark, settings, nightly.Params(), DAY, DAY, readings, houses, write=False)
    daily = {r.meter: r.energy_kwh for r in result["daily_energy_by_house"].collect()}
    assert daily == {1: pytest.approx(9 * 30 * 100 / 3.6e6), 4: pytest.approx(9 * 40 * 100 / 3.6e6)}


def test_a_relabelled_meter_keeps_one_row_with_its_greatest_names(spark, settings, tmp_path):
    """Names come out of the per-meter pass: one row per meter, the greatest label and
    appliance should a meter have been relabelled, none for a meter whose readings have none."""
    rows = (rows_for("h1", 5, "fridge", MIDNIGHT_NY, 100, 30, 120.0)
            + rows_for("h1", 5, "kitchen fridge", MIDNIGHT_NY + 3000, 100, 30, 120.0)
            + rows_for("h2", 6, None, MIDNIGHT_NY, 100, 30, 50.0))
    table = pa.table({
        "house_id": [r[0] for r in rows], "meter": pa.array([r[1] for r in rows], pa.int32()),
        "label": [r[2] for r in rows], "appliance": ["refrigerator" if r[2] else None for r in rows],
        "ts_s": [float(r[3]) for r in rows], "power_w": [r[4] for r in rows],
        "date": [dt.datetime.fromtimestamp(r[3], dt.timezone.utc).date().isoformat() for r in rows],
    })
    pq.write_to_dataset(table, tmp_path / "readings", partition_cols=["date"])
    (tmp_path / "houses.json").write_text(json.dumps({"house_id": "h1", "zip": "02139", "tz": "America/New_York"}))
    result = nightly.run(spark, settings, nightly.Params(), DAY, DAY, str(tmp_path / "readings"),
                         str(tmp_path / "houses.json"), write=False)
    daily = [(r.house_id, r.meter, r.label, r.appliance) for r in result["daily_energy_by_house"].collect()]
    assert sorted(daily, key=str) == [("h1", 5, "kitchen fridge", "refrigerator"), ("h2", 6, None, None)]
    limits = {(r.house_id, r.meter): r.appliance for r in result["thresholds"].collect()}
    assert limits == {("h1", 5): "refrigerator", ("h2", 6): None}


@pytest.mark.integration
def test_run_writes_cassandra_and_rerun_changes_nothing(spark, settings, tmp_path, cassandra_session):
    rows = rows_for("hx-cass", 1, "mains", MIDNIGHT_NY, 8640, 10, 100.0)
    readings, houses = write_inputs(tmp_path, rows, [{"house_id": "hx-cass", "zip": "10001",
                                                      "tz": "America/New_York"}])
    select = cassandra_session.prepare(
        "SELECT day, meter, energy_kwh, coverage FROM daily_energy_by_house WHERE house_id = ?")
    for _ in range(2):
        nightly.run(spark, settings, nightly.Params(), DAY, DAY, readings, houses)
        got = [(r.day.date(), r.meter, r.energy_kwh) for r in cassandra_session.execute(select, ("hx-cass",))]
        assert got == [(DAY, 1, pytest.approx(100 * (86400 - 10) / 3.6e6))]
    limit = cassandra_session.execute(
        "SELECT threshold_w FROM thresholds WHERE house_id = 'hx-cass' AND meter = 1").one()
    assert limit.threshold_w == pytest.approx(100.0)


def test_a_day_without_readings_fails_loudly_unless_expected(spark, settings, tmp_path):
    rows = rows_for("hx-empty", 1, "mains", MIDNIGHT_NY, 100, 10, 100.0)
    readings, houses = write_inputs(tmp_path, rows, [{"house_id": "hx-empty", "zip": "10001",
                                                      "tz": "America/New_York"}])
    later = DAY + dt.timedelta(days=5)
    with pytest.raises(SystemExit, match=f"no readings for {later} in {readings}.*--allow-empty"):
        nightly.run(spark, settings, nightly.Params(), later, later, readings, houses, write=False)
    # Expected: the outputs are computed (the window still gives the meter its threshold).
    result = nightly.run(spark, settings, nightly.Params(), later, later, readings, houses, write=False,
                         allow_empty=True)
    assert result["daily_energy_by_house"].count() == 0 and result["thresholds"].count() == 1


def test_no_readings_at_all_is_a_clear_error(spark, settings, tmp_path):
    (tmp_path / "readings").mkdir()
    houses = tmp_path / "houses.json"
    houses.write_text(json.dumps({"house_id": "h1", "zip": "02139", "tz": "America/New_York"}))
    with pytest.raises(SystemExit, match=f"no readings in {tmp_path / 'readings'} at all; land some first"):
        nightly.run(spark, settings, nightly.Params(), DAY, DAY, str(tmp_path / "readings"), str(houses), write=False)


def test_unreachable_cassandra_is_a_clear_error(settings):
    with pytest.raises(SystemExit, match="unreachable"):
        nightly.check_cassandra(settings.replace(cassandra_hosts="127.0.0.1", cassandra_port="1"))


def test_missing_input_files_are_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        nightly.main(["--no-write", "--houses", str(tmp_path / "none.json"), "--readings", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "none.json: no such file or folder" in capsys.readouterr().err


@pytest.mark.integration
def test_houses_are_registered_from_a_generator_file(tmp_path, settings, cassandra_session):
    from batch import houses

    path = tmp_path / "houses.json"
    path.write_text('{"house_id": "hreg-1", "tz": "America/Denver", "zip": "80202", "lat": 39.7, "lon": -105.0}\n')
    assert houses.load(settings, houses.read_houses(path)) == 1
    row = cassandra_session.execute("SELECT tz, zip, lat FROM houses WHERE house_id = 'hreg-1'").one()
    assert (row.tz, row.zip, row.lat) == ("America/Denver", "80202", 39.7)


def test_houses_with_unknown_zone_are_refused(tmp_path):
    from batch import houses

    path = tmp_path / "houses.json"
    path.write_text('{"house_id": "h", "tz": "Mars/Olympus"}\n')
    with pytest.raises(ValueError, match="unknown time zone"):
        houses.read_houses(path)

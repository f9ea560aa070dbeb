"""The nightly job against the independent DuckDB reference, on generated houses.

The end-to-end test goes generate -> Kafka -> land -> nightly -> Cassandra and
reads the serving table back with cassandra-driver.
"""
import datetime as dt

import numpy as np
import pyarrow.dataset as pads
import pytest
from kafka import KafkaProducer

from batch import nightly
from tools import reference
from datasets import generator
from ingest import land
from smw import messages
from tests.nightly_outputs import OUTPUT_COLUMNS, assert_outputs_agree, duckdb_rows, spark_rows

pytestmark = pytest.mark.spark
FIRST, LAST = dt.date(2024, 4, 1), dt.date(2024, 4, 2)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    generator.generate(generator.GeneratorConfig(houses=1, days=2, seed=11), out, "parquet")
    return out


@pytest.fixture(scope="module")
def fall_back(tmp_path_factory):
    """Three houses in different zones over the night US clocks go back (2024-11-03), one mean per 15 s."""
    out = tmp_path_factory.mktemp("fall-back")
    generator.generate(generator.GeneratorConfig(houses=3, days=3, seed=5, start_date="2024-11-02", period_s=15.0),
                       out, "parquet")
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Six houses, one mean per 15 s: meters never on and levels seen on one day only, which take
    the fleet's medians of their appliance (some meters of every kind, some of none)."""
    out = tmp_path_factory.mktemp("fleet")
    generator.generate(generator.GeneratorConfig(houses=6, days=2, seed=1, period_s=15.0), out, "parquet")
    return out


def compare(spark_daily, spark_limits, reference_daily, reference_limits):
    assert set(spark_daily) == set(reference_daily) and spark_daily
    for key, (energy_kwh, samples) in reference_daily.items():
        assert spark_daily[key][0] == pytest.approx(energy_kwh, rel=1e-9, abs=1e-12), key
        assert spark_daily[key][1] == samples, key
    assert set(spark_limits) == set(reference_limits) and spark_limits
    for key, threshold_w in reference_limits.items():
        assert spark_limits[key] == pytest.approx(threshold_w, rel=0.01), key


def reference_outputs(readings_path, houses_path, first=FIRST, last=LAST):
    """Daily energy split at local midnights and thresholds, from the DuckDB reference."""
    connection = reference.connect()
    daily = {(h, m, d): (e, n) for h, m, d, e, n in
             reference.daily_energy(connection, readings_path, houses_path, first, last)}
    reference.nightly(connection, readings_path, houses_path, first, last)
    limits = {(h, m): t for h, m, t in connection.execute("SELECT house_id, meter, threshold_w FROM thresholds").fetchall()}
    return daily, limits


@pytest.mark.parametrize("dataset, first, last", [
    ("generated", FIRST, LAST),
    ("fall_back", dt.date(2024, 11, 2), dt.date(2024, 11, 4)),
    ("fleet", FIRST, LAST),
])
def test_every_output_agrees_with_duckdb(spark, settings, request, dataset, first, last):
    """All six outputs, row for row: the same keys, energy to 1e-9, quantiles and counts exact."""
    data = request.getfixturevalue(dataset)
    readings_path, houses_path = str(data / "readings"), str(data / "houses.parquet")
    out = nightly.run(spark, settings, nightly.Params(), first, last, readings_path, houses_path, write=False)
    connection = reference.connect()
    counts = reference.nightly(connection, readings_path, houses_path, first, last)
    assert_outputs_agree(connection, counts, lambda table: spark_rows(out[table], table))
    if dataset == "fleet":  # both ways a fleet prior stands in for a meter are compared
        rows = duckdb_rows(connection, "thresholds").values()
        samples, fleet_meters = (OUTPUT_COLUMNS["thresholds"][1].index(c) for c in ("samples", "fleet_meters"))
        assert any(r[samples] == 0 and r[fleet_meters] > 0 for r in rows)
        assert any(r[samples] > 0 and r[fleet_meters] > 0 for r in rows)


def test_daily_energy_summed_from_hours_equals_the_midnight_split(fall_back):
    """The reference's two derivations of daily energy agree, across a 25-hour day."""
    readings_path, houses_path = str(fall_back / "readings"), str(fall_back / "houses.parquet")
    first, last = dt.date(2024, 11, 2), dt.date(2024, 11, 4)
    connection = reference.connect()
    direct = {(h, m, d): (e, n) for h, m, d, e, n in
              reference.daily_energy(connection, readings_path, houses_path, first, last)}
    reference.nightly(connection, readings_path, houses_path, first, last)
    summed = {(h, m, d): (e, n) for h, m, d, e, n in connection.execute(
        "SELECT house_id, meter, day, energy_kwh, samples FROM daily_energy_by_house").fetchall()}
    assert set(direct) == set(summed) and direct
    for key, (energy_kwh, samples) in direct.items():
        assert summed[key][0] == pytest.approx(energy_kwh, rel=1e-9, abs=1e-12), key
        assert summed[key][1] == samples, key
    coverage = connection.execute(
        "SELECT max(coverage) FROM daily_energy_by_house WHERE day = DATE '2024-11-03'").fetchone()[0]
    assert 0.9 < coverage <= 1.0 + 1e-12  # of a 25-hour day, not of 24 hours


@pytest.mark.integration
def test_generate_land_nightly_cassandra_equals_reference(spark, settings, generated, kafka_ready, topic,
                                                          cassandra_session, tmp_path):
    from batch import houses

    run_settings = settings.replace(kafka_topic=topic, data_dir=str(tmp_path / "data"))
    table = pads.dataset(generated / "readings", format="parquet", partitioning="hive").to_table()
    producer = KafkaProducer(bootstrap_servers=kafka_ready.kafka_bootstrap_list, acks="all", linger_ms=20,
                             batch_size=1 << 20, max_request_size=8 << 20)
    try:
        house_ids = table["house_id"].to_numpy(zero_copy_only=False)
        meters = table["meter"].to_numpy()
        for house_id in np.unique(house_ids):
            for meter in np.unique(meters[house_ids == house_id]):
                rows = table.filter((table["house_id"].to_numpy(zero_copy_only=False) == house_id) & (meters == meter))
                label, appliance = rows["label"][0].as_py(), rows["appliance"][0].as_py()
                ts_s, power_w = rows["ts_s"].to_numpy(), rows["power_w"].to_numpy()
                for start in range(0, len(ts_s), 2000):
                    key, value = messages.encode(house_id, [messages.Series(
                        int(meter), label, appliance, ts_s[start:start + 2000].tolist(),
                        power_w[start:start + 2000].tolist())])
                    producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
    finally:
        producer.close()
    query = land.start(spark, run_settings, once=True, trigger_interval="1 second",
                       max_offsets_per_trigger=100000, files_per_trigger=2)
    query.awaitTermination(timeout=600)
    assert query.exception() is None

    houses.load(run_settings, houses.read_houses(generated / "houses.parquet"))
    nightly.run(spark, run_settings, nightly.Params(), FIRST, LAST)

    house_id = table["house_id"][0].as_py()
    select = cassandra_session.prepare(
        "SELECT day, meter, energy_kwh, samples FROM daily_energy_by_house WHERE house_id = ? AND day IN (?, ?)")
    daily = {(house_id, r.meter, r.day.date()): (r.energy_kwh, r.samples)
             for r in cassandra_session.execute(select, (house_id, FIRST, LAST))}
    limits = {(house_id, r.meter): r.threshold_w for r in cassandra_session.execute(
        cassandra_session.prepare("SELECT meter, threshold_w FROM thresholds WHERE house_id = ?"), (house_id,))}
    compare(daily, limits, *reference_outputs(str(generated / "readings"), str(generated / "houses.parquet")))

"""The nightly job against the independent DuckDB reference, on generated houses.

The end-to-end test goes generate -> Kafka -> land -> nightly -> Cassandra and
reads the serving table back with cassandra-driver.
"""
import datetime as dt
import uuid

import numpy as np
import pyarrow.dataset as pads
import pytest
from kafka import KafkaProducer

from batch import nightly, reference
from datasets import generator
from ingest import land
from smw import messages

pytestmark = pytest.mark.spark
FIRST, LAST = dt.date(2024, 4, 1), dt.date(2024, 4, 2)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    generator.generate(generator.GeneratorConfig(houses=1, days=2, seed=11), out, "parquet")
    return out


def compare(spark_daily, spark_limits, reference_daily, reference_limits):
    assert set(spark_daily) == set(reference_daily) and spark_daily
    for key, (energy_kwh, samples) in reference_daily.items():
        assert spark_daily[key][0] == pytest.approx(energy_kwh, rel=1e-9, abs=1e-12), key
        assert spark_daily[key][1] == samples, key
    assert set(spark_limits) == set(reference_limits) and spark_limits
    for key, threshold_w in reference_limits.items():
        assert spark_limits[key] == pytest.approx(threshold_w, rel=0.01), key


def reference_outputs(readings_path, houses_path):
    connection = reference.connect()
    daily = {(h, m, d): (e, n) for h, m, d, e, n in
             reference.daily_energy(connection, readings_path, houses_path, FIRST, LAST)}
    limits = {(h, m): t for h, m, t, _ in
              reference.thresholds(connection, readings_path, houses_path, LAST - dt.timedelta(days=29), LAST)}
    return daily, limits


def test_spark_agrees_with_duckdb_on_generated_houses(spark, settings, generated):
    readings_path, houses_path = str(generated / "readings"), str(generated / "houses.parquet")
    out = nightly.run(spark, settings, nightly.Params(), FIRST, LAST, readings_path, houses_path, write=False)
    daily = {(r.house_id, r.meter, r.day): (r.energy_kwh, r.samples) for r in out["daily_energy_by_house"].collect()}
    limits = {(r.house_id, r.meter): r.threshold_w for r in out["thresholds"].collect()}
    compare(daily, limits, *reference_outputs(readings_path, houses_path))


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

"""Live power: readings from Kafka land in Cassandra recent_power, per UTC hour partition."""
import datetime as dt

import pytest

from streaming import live_power
from tests.streaming.conftest import produce, series

pytestmark = [pytest.mark.integration, pytest.mark.spark]

T0 = 1_711_965_590.0  # 2024-04-01T09:59:50Z: the readings cross an hour


@pytest.fixture
def job_settings(kafka_ready, cassandra_session, topic, tmp_path):
    return kafka_ready.replace(kafka_topic=topic, data_dir=str(tmp_path / "data"))


def test_readings_are_written_per_hour_partition_and_a_rerun_adds_nothing(
        spark, job_settings, cassandra_session, house_prefix):
    house = f"{house_prefix}p"
    powers = [100.0 + i for i in range(8)]  # every 3 s from 09:59:50 to 10:00:11
    produce(job_settings, {house: [series(1, "mains", T0, powers)]}, malformed=[b"not json"])
    for _ in range(2):  # the second run starts from the checkpoint and finds nothing new
        query = live_power.start(spark, job_settings, starting_offsets="earliest", once=True)
        query.awaitTermination(timeout=240)
        assert query.exception() is None
    rows, per_hour = [], []
    for hour in (dt.datetime(2024, 4, 1, 9), dt.datetime(2024, 4, 1, 10)):
        found = list(cassandra_session.execute(
            "SELECT ts, power_w FROM recent_power WHERE house_id = %s AND meter = 1 AND hour_start = %s",
            (house, hour)))
        per_hour.append(len(found))
        rows += found
    assert per_hour == [4, 4]
    assert [r.power_w for r in rows] == powers
    assert [r.ts.replace(tzinfo=dt.timezone.utc).timestamp() for r in rows] == pytest.approx(
        [T0 + 3 * i for i in range(8)])

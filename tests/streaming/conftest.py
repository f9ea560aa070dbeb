"""Helpers for the alert job's integration tests: produce readings, set thresholds, read alerts back."""
from __future__ import annotations

import uuid

import pytest

from smw import messages, rethink
from smw.messages import Series


def produce(settings, houses: dict, malformed: list[bytes] = ()) -> int:
    """Produce {house_id: [Series, ...]} as one message per house (plus raw malformed values); returns messages."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_list, acks="all", linger_ms=5)
    sent = 0
    try:
        for house_id, series in houses.items():
            key, value = messages.encode(house_id, series)
            producer.send(settings.kafka_topic, key=key, value=value)
            sent += 1
        for value in malformed:
            producer.send(settings.kafka_topic, key=b"bad", value=value)
            sent += 1
        producer.flush(timeout=60)
    finally:
        producer.close()
    return sent


def series(meter: int, appliance: str, t0: float, powers, step_s: float = 3.0) -> Series:
    return Series(meter, appliance, appliance, [t0 + step_s * i for i in range(len(powers))],
                  [float(p) for p in powers])


def set_threshold(session, house_id: str, meter: int, threshold_w: float, appliance: str = "x") -> None:
    session.execute(
        "INSERT INTO thresholds (house_id, meter, appliance, quantile, threshold_w, samples, window_days, computed_at)"
        " VALUES (%s, %s, %s, 0.97, %s, 1000, 7, toTimestamp(now()))",
        (house_id, meter, appliance, threshold_w),
    )


def rethink_alerts(settings, house_ids) -> list[dict]:
    with rethink.connection(settings) as conn:
        return list(rethink.r.table("alerts").get_all(*house_ids, index="house_id").run(conn))


def cassandra_alerts(session, house_ids) -> list:
    rows = []
    for house_id in house_ids:
        rows += list(session.execute("SELECT * FROM alerts_by_house WHERE house_id = %s", (house_id,)))
    return rows


@pytest.fixture
def house_prefix():
    """House ids unique to the test, so tests never see each other's alerts or thresholds."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def alert_io():
    """The helpers above, for test modules (pytest imports them without a package)."""
    import types

    return types.SimpleNamespace(produce=produce, series=series, set_threshold=set_threshold,
                                 rethink_alerts=rethink_alerts, cassandra_alerts=cassandra_alerts)

"""The alert job against the real broker, Cassandra and reqlite: sinks, replay, quarantine, refresh."""
import time

import pytest

from smw import zones
from streaming import alerts
from smw.alert import KIND_NO_DATA, KIND_OVERSHOOT
from streaming.episodes import Rules

pytestmark = [pytest.mark.integration, pytest.mark.spark]

T0 = 1_711_962_000.0
RULES = Rules(multiplier=1.5, min_readings=3, no_data_after_s=600.0, no_data_min_readings=5)
QUIET = [50.0] * 10
SPIKE = [50, 50, 400, 420, 450, 430, 60, 50, 50, 50]


@pytest.fixture(autouse=True)
def _helpers(alert_io):
    """Module-level names for the conftest helpers."""
    global produce, series, set_threshold, rethink_alerts, cassandra_alerts
    produce, series, set_threshold = alert_io.produce, alert_io.series, alert_io.set_threshold
    rethink_alerts, cassandra_alerts = alert_io.rethink_alerts, alert_io.cassandra_alerts


@pytest.fixture
def job_settings(kafka_ready, rethinkdb_ready, cassandra_session, topic, tmp_path):
    return kafka_ready.replace(kafka_topic=topic, data_dir=str(tmp_path / "data"))


def event_time_s(text: str) -> float:
    """Epoch seconds of a progress report's event time ("2024-04-01T09:00:00.000Z")."""
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_once(spark, settings, **options):
    alert_query, batches = alerts.start(spark, settings, RULES, once=True, **options)
    try:
        alert_query.awaitTermination(timeout=240)
        assert alert_query.exception() is None
    finally:
        alerts.close(batches)
    return batches


def test_spike_raises_one_overshoot_alert_in_both_sinks_and_a_replay_adds_nothing(
        spark, job_settings, cassandra_session, house_prefix):
    h1, h2 = f"{house_prefix}a", f"{house_prefix}b"
    set_threshold(cassandra_session, h1, 5, 100.0)
    set_threshold(cassandra_session, h2, 5, 100.0)
    produce(job_settings, {h1: [series(5, "microwave", T0, SPIKE), series(6, "lighting", T0, SPIKE)],
                           h2: [series(5, "microwave", T0, QUIET)]},
            malformed=[b"not json", b'{"v": 9}'])
    writer = run_once(spark, job_settings)
    assert writer.totals["alerts"] == 1

    docs = rethink_alerts(job_settings, [h1, h2])
    assert len(docs) == 1
    doc = docs[0]
    assert set(doc) == {"id", "kind", "house_id", "meter", "appliance", "threshold_w", "multiplier", "peak_w",
                        "mean_w", "start_ts_s", "end_ts_s", "state", "severity", "updated_ts_s"}
    assert (doc["kind"], doc["house_id"], doc["meter"], doc["appliance"], doc["state"]) == (
        KIND_OVERSHOOT, h1, 5, "microwave", "closed")
    assert doc["start_ts_s"] == T0 + 6 and doc["end_ts_s"] == T0 + 18
    assert doc["peak_w"] == 450.0 and doc["mean_w"] == pytest.approx(425.0)
    assert doc["threshold_w"] == 100.0 and doc["multiplier"] == 1.5 and doc["severity"] == "critical"

    rows = cassandra_alerts(cassandra_session, [h1, h2])
    assert [(r.alert_id, r.state, r.peak_w, r.end_ts.timestamp()) for r in rows] == [
        (doc["id"], "closed", 450.0, T0 + 18)]

    # The quarantine holds the two malformed records.
    quarantine = spark.read.parquet(str(zones.alerts_quarantine(job_settings))).collect()
    assert sorted(bytes(r.value) for r in quarantine) == [b"not json", b'{"v": 9}']

    # Same readings again from a fresh checkpoint: same ids, nothing new.
    replay = job_settings.replace(data_dir=job_settings.data_dir + "-replay")
    run_once(spark, replay)
    assert [d["id"] for d in rethink_alerts(job_settings, [h1, h2])] == [doc["id"]]
    assert len(cassandra_alerts(cassandra_session, [h1, h2])) == 1


def test_open_episode_is_inserted_then_updated_when_it_closes(spark, job_settings, cassandra_session, house_prefix):
    house = f"{house_prefix}o"
    set_threshold(cassandra_session, house, 3, 100.0)
    produce(job_settings, {house: [series(3, "oven", T0, [50, 300, 310, 320, 330])]})
    run_once(spark, job_settings)
    (opened,) = rethink_alerts(job_settings, [house])
    assert opened["state"] == "open" and opened["end_ts_s"] is None
    assert cassandra_alerts(cassandra_session, [house])[0].end_ts is None

    produce(job_settings, {house: [series(3, "oven", T0 + 15, [340, 40, 40, 40])]})
    run_once(spark, job_settings)
    (closed,) = rethink_alerts(job_settings, [house])
    assert closed["id"] == opened["id"]
    assert closed["state"] == "closed" and closed["end_ts_s"] == T0 + 18 and closed["peak_w"] == 340.0
    (row,) = cassandra_alerts(cassandra_session, [house])
    assert row.state == "closed" and row.end_ts.timestamp() == T0 + 18


def test_silent_meter_raises_no_data_and_late_readings_are_dropped(spark, job_settings, cassandra_session,
                                                                    house_prefix):
    quiet, busy = f"{house_prefix}q", f"{house_prefix}b"
    produce(job_settings, {quiet: [series(4, "refrigerator", T0, QUIET)],
                           busy: [series(4, "refrigerator", T0, QUIET)]})
    run_once(spark, job_settings)
    # Event time moves on by 20 minutes through the busy house only; then the watermark passes the deadline.
    produce(job_settings, {busy: [series(4, "refrigerator", T0 + 1200, QUIET)]})
    run_once(spark, job_settings)
    produce(job_settings, {busy: [series(4, "refrigerator", T0 + 1300, QUIET)]})
    run_once(spark, job_settings)
    docs = rethink_alerts(job_settings, [quiet, busy])
    assert [(d["kind"], d["house_id"], d["state"], d["start_ts_s"]) for d in docs] == [
        (KIND_NO_DATA, quiet, "open", T0 + 27)]

    # A reading far behind the watermark is dropped (and counted by Spark), and does not close the outage.
    produce(job_settings, {quiet: [series(4, "refrigerator", T0 + 100, [50.0])]})
    alert_query, batches = alerts.start(spark, job_settings, RULES, once=True)
    alert_query.awaitTermination(timeout=240)
    alerts.close(batches)
    dropped = batches.totals["late"]
    assert dropped == 1
    assert rethink_alerts(job_settings, [quiet])[0]["state"] == "open"


def test_threshold_change_applies_within_one_refresh_interval(spark, job_settings, cassandra_session, house_prefix):
    house = f"{house_prefix}r"
    refresh_s = 4.0
    set_threshold(cassandra_session, house, 7, 1000.0)
    alert_query, batches = alerts.start(
        spark, job_settings, RULES, trigger_interval="0.5 seconds", threshold_refresh_s=refresh_s)
    try:
        changed_at_s = last_before_change_s = None
        deadline = time.monotonic() + 120
        found = []
        while time.monotonic() < deadline and not found:
            now_s = time.time()
            # 500 W readings stamped with the wall clock: an overshoot only for the new 100 W threshold.
            produce(job_settings, {house: [series(7, "heater", now_s, [500.0, 500.0], step_s=0.2)]})
            progress = alert_query.lastProgress
            if changed_at_s is None and progress and progress["batchId"] >= 2 and "max" in progress.get("eventTime", {}):
                # The newest reading already judged (against 1000 W) when the threshold changes.
                last_before_change_s = event_time_s(progress["eventTime"]["max"])
                set_threshold(cassandra_session, house, 7, 100.0)
                changed_at_s = time.time()
            assert alert_query.exception() is None
            found = rethink_alerts(job_settings, [house])
            time.sleep(0.3)
        assert changed_at_s is not None and found, "no alert after the threshold change"
        (doc,) = found
        assert doc["threshold_w"] == 100.0
        # Thresholds apply by processing time: readings produced just before the change may
        # still be waiting in Kafka when the refresh lands, so the first overshoot starts after
        # the newest reading judged before the change, and within one refresh interval of the
        # change (plus one trigger for the batch in flight).
        assert last_before_change_s < doc["start_ts_s"] <= changed_at_s + refresh_s + 1.0
    finally:
        alert_query.stop()
        alerts.close(batches)


def test_a_reading_dated_2094_is_quarantined_and_changes_nothing_for_the_other_houses(
        spark, job_settings, cassandra_session, house_prefix):
    houses = [f"{house_prefix}{n}" for n in range(3)]
    for house in houses:
        set_threshold(cassandra_session, house, 5, 100.0)
    produce(job_settings, {house: [series(5, "oven", T0, QUIET)] for house in houses})
    run_once(spark, job_settings)
    # An EMU-2 TimeStamp with one bit flipped: 2094. Then the houses go on, one with a spike.
    flipped_s = 3_928_000_000.0
    produce(job_settings, {f"{house_prefix}x": [series(5, "oven", flipped_s, [60.0])]})
    produce(job_settings, {houses[0]: [series(5, "oven", T0 + 30, SPIKE)],
                           **{house: [series(5, "oven", T0 + 30, QUIET)] for house in houses[1:]}})
    batches = run_once(spark, job_settings)
    assert batches.totals["quarantined"] == 1
    assert batches.totals["late"] == 0 and batches.totals["readings"] == 30
    docs = rethink_alerts(job_settings, houses + [f"{house_prefix}x"])
    assert [(d["kind"], d["house_id"], d["start_ts_s"]) for d in docs] == [(KIND_OVERSHOOT, houses[0], T0 + 36)]
    quarantine = spark.read.parquet(str(zones.alerts_quarantine(job_settings))).collect()
    assert [r.error for r in quarantine] == ["ts_s more than 300 s in the future (a clock ahead)"]

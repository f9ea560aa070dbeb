"""EMU-2 price events to the houses' tariff history, and the cost views pricing each hour at the price then."""
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from zoneinfo import ZoneInfo

import pytest

from ingest import price_store
from ingest.devices import Event
from ingest.serial import event_message
from tests.ingest.test_serial import Device

Y2K_EPOCH_S = 946684800
NOW_S = 1709600000.0  # 2024-03-05 00:53 UTC


def price_event(**changes) -> bytes:
    body = {"v": 1, "type": "price", "house_id": "h1", "ts_s": 1709251200.0, "meter": 1, "price_per_kwh": 0.155,
            "currency": 840, "tier": 1, "start_ts_s": 1709280000.0, "duration_min": 1440, "rate_label": "Tier 1"}
    body.update(changes)
    return json.dumps(body).encode()


def test_price_with_a_duration_ends_at_start_plus_duration():
    found = price_store.price(price_event(), NOW_S, 300)
    assert found == price_store.Price("h1", 1, 1709251200.0, 1709280000.0, 1709280000.0 + 86400, 0.155, "USD", 1,
                                      "Tier 1", False)


@pytest.mark.parametrize("duration_min", [None, 0, 0xFFFF])
def test_price_without_a_duration_is_open_ended(duration_min):
    assert price_store.price(price_event(duration_min=duration_min), NOW_S, 300).until_s is None


def test_start_time_now_takes_the_meter_clock():
    found = price_store.price(price_event(start_ts_s=None), NOW_S, 300)
    assert (found.effective_from_s, found.starts_now) == (1709251200.0, True)


@pytest.mark.parametrize("numeric, code", [(840, "USD"), (978, "EUR"), (826, "GBP"), (124, "CAD"), (36, "AUD"),
                                           (999, "999"), (8, "008")])
def test_currencies_by_letter_code_unknown_ones_as_digits(numeric, code):
    assert price_store.price(price_event(currency=numeric), NOW_S, 300).currency == code


@pytest.mark.parametrize("changes, reason", [
    ({"house_id": ""}, "house_id missing"),
    ({"house_id": "h" * 70_000}, "house_id longer than 64 characters"),
    ({"meter": -1}, "meter must be an integer 0..65535"),
    ({"ts_s": "x"}, "ts_s must be epoch seconds of 2000-2100"),
    ({"start_ts_s": 5.0}, "start_ts_s must be null or epoch seconds of 2000-2100"),
    ({"start_ts_s": None, "ts_s": NOW_S + 3600}, "ts_s ahead of the clock"),
    ({"price_per_kwh": -0.1}, "price_per_kwh must be a number 0..1e+06"),
    ({"price_per_kwh": True}, "price_per_kwh must be a number 0..1e+06"),
    ({"currency": "USD"}, "currency must be an ISO 4217 numeric code 0..999"),
    ({"tier": 256}, "tier must be null or an integer 0..255"),
    ({"duration_min": 0x10000}, "duration_min must be null or an integer 0..65535"),
    ({"rate_label": 5}, "rate_label must be null or text of at most 64 characters"),
])
def test_bad_price_events_give_a_reason(changes, reason):
    assert price_store.price(price_event(**changes), NOW_S, 300) == reason


def test_other_event_types_and_garbage():
    assert price_store.price(b'{"type": "pulse", "house_id": "h"}', NOW_S, 300) is None
    assert price_store.price(b"\xff{", NOW_S, 300) == "not JSON"


# ---------------------------------------------------------------- against Kafka, Cassandra and the web API

def y2k_hex(epoch_s: float) -> str:
    return f"0x{int(epoch_s) - Y2K_EPOCH_S:08x}"


def price_frame(stamp_s, price, digits, tier, start_s=None, duration_min=None, label="Tier 1") -> bytes:
    frame = (f"<PriceCluster><DeviceMacId>0xd8d5b90000001234</DeviceMacId><MeterMacId>0x00135003007c1b2d</MeterMacId>"
             f"<TimeStamp>{y2k_hex(stamp_s)}</TimeStamp><Price>0x{price:08x}</Price><Currency>0x0348</Currency>"
             f"<TrailingDigits>0x{digits:02x}</TrailingDigits><Tier>0x{tier:02x}</Tier>"
             f"<StartTime>{y2k_hex(start_s) if start_s else '0x00000000'}</StartTime>")
    if duration_min is not None:
        frame += f"<Duration>0x{duration_min:04x}</Duration>"
    return (frame + f"<RateLabel>{label}</RateLabel></PriceCluster>\r\n").encode()


def serial_ingester(settings, device, house, tmp_path):
    """`python -m ingest.serial --type emu2` on the pty; returns once it reads the port."""
    from smw import config

    env = {**os.environ, "KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "PYTHONPATH": str(config.ROOT),
           "DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen([sys.executable, "-m", "ingest.serial", "--device", device.link, "--type", "emu2",
                                "--house", house, "--kafka-topic", settings.kafka_events_topic,
                                "--kafka-events-topic", settings.kafka_events_topic],
                               cwd=config.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = threading.Event()
    log_lines: list[str] = []

    def read_log():
        for line in process.stderr:
            log_lines.append(line)
            if " reading " in line:
                started.set()

    threading.Thread(target=read_log, daemon=True).start()
    assert started.wait(60), "".join(log_lines)
    time.sleep(0.3)  # the port is opened (and set raw) right after that line
    return process, log_lines


def seed_house(session, house, tz, days, kwh_of_hour):
    """A registered house with mains energy every hour of `days` (house-local) and their daily totals."""
    session.execute("INSERT INTO houses (house_id, zip, tz) VALUES (%s, %s, %s)", (house, "02139", tz))
    zone = ZoneInfo(tz)
    hours = []
    for day in days:
        start = dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.timezone.utc)
        total = 0.0
        for h in range(24):
            hour_start = start + dt.timedelta(hours=h)
            kwh = kwh_of_hour(len(hours))
            hours.append((hour_start.timestamp(), kwh))
            total += kwh
            session.execute("INSERT INTO hourly_energy (house_id, day, hour_start, meter, energy_kwh) "
                            "VALUES (%s, %s, %s, 1, %s)", (house, day, hour_start, kwh))
        session.execute("INSERT INTO daily_energy_by_house (house_id, day, meter, label, appliance, energy_kwh) "
                        "VALUES (%s, %s, 1, 'mains', 'mains', %s)", (house, day, total))
    return hours


@pytest.mark.integration
def test_emu2_price_frames_change_the_cost_at_the_announced_start(kafka_ready, topic, cassandra_session, tmp_path):
    from tools.server import make_user
    from webapp import create_app, shutdown

    settings = kafka_ready.replace(kafka_events_topic=topic, cassandra_keyspace=cassandra_session.keyspace)
    house = f"he{uuid.uuid4().hex[:8]}"
    day1, day2 = dt.date(2024, 3, 5), dt.date(2024, 3, 6)  # EST, UTC-5
    hours = seed_house(cassandra_session, house, "America/New_York", [day1, day2], lambda i: 0.5 + 0.01 * i)
    local = ZoneInfo("America/New_York")
    base_start = dt.datetime(2024, 3, 5, 6, tzinfo=local).timestamp()  # 0.100 USD from 06:00, until changed
    tier2_start = dt.datetime(2024, 3, 5, 14, tzinfo=local).timestamp()  # 0.155 USD from 14:00 for 1440 min
    stamp = dt.datetime(2024, 3, 4, 12, tzinfo=dt.timezone.utc).timestamp()
    frames = (price_frame(stamp, 100, 3, 1, base_start, label="Base")
              + b"\x00noise<PriceCl" + price_frame(stamp + 60, 0x9B, 3, 2, tier2_start, 0x05A0))

    device = Device(str(tmp_path / "ttyEMU2"))
    device.plug()
    process, log_lines = serial_ingester(settings, device, house, tmp_path)
    try:
        device.write(frames, chunk=64)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(device.master)
    assert process.returncode == 0, "".join(log_lines)
    assert "events sent 2 (delivered 2, failed 0)" in out, out

    store = price_store.PriceStore(settings, f"g-{uuid.uuid4().hex[:6]}", tmp_path / "q.jsonl")
    counts = store.run(once=True, poll_ms=300)
    assert (counts.stored, counts.quarantined) == (2, 0)

    configured = {"currency": "USD", "default_rate_per_kwh": 0.2}
    app = create_app({"TESTING": True, "SMW_SETTINGS": settings, "HOUSE_TARIFFS": {house: configured}})
    try:
        _name, token = make_user(settings, "household", houses=[house])  # the house's household asks
        body = app.test_client().get(f"/api/houses/{house}/cost?from=2024-03-05&to=2024-03-06",
                                     headers={"Authorization": f"Bearer {token}"}).get_json()
    finally:
        shutdown(app)

    def rate_at(hour_s):  # before the first price: the configured tariff; the 24-h tier 2; then the base again
        if hour_s < base_start:
            return 0.2
        return 0.155 if tier2_start <= hour_s < tier2_start + 1440 * 60 else 0.1

    assert body["currency"] == "USD"
    assert body["mains"]["energy_kwh"] == pytest.approx(sum(kwh for _, kwh in hours))
    assert body["mains"]["cost"] == pytest.approx(sum(kwh * rate_at(s) for s, kwh in hours), abs=1e-4)
    assert [(round(t["from_ts_s"]), t["default_rate_per_kwh"], t["source"]) for t in body["tariffs"]] == [
        (round(hours[0][0]), 0.2, "config"), (round(base_start), 0.1, "emu2"), (round(tier2_start), 0.155, "emu2"),
        (round(tier2_start) + 86400, 0.1, "emu2")]
    by_rate = {p["rate_per_kwh"]: p["energy_kwh"] for p in body["by_period"]}
    assert by_rate[0.155] == pytest.approx(sum(kwh for s, kwh in hours if rate_at(s) == 0.155))
    # The first hour at the new price is the announced start; the hour before it is still at the old one.
    first_new = next(i for i, (s, _) in enumerate(hours) if s >= tier2_start)
    assert hours[first_new][0] == tier2_start and rate_at(hours[first_new - 1][0]) == 0.1


@pytest.mark.integration
def test_redelivered_repeated_and_bad_prices(kafka_ready, topic, cassandra_session, tmp_path):
    from kafka import KafkaProducer

    settings = kafka_ready.replace(kafka_events_topic=topic, cassandra_keyspace=cassandra_session.keyspace)
    house = f"he{uuid.uuid4().hex[:8]}"
    t0 = 1709251200.0
    now_price = {"meter": 1, "price_per_kwh": 0.12, "currency": 978, "tier": 1, "start_ts_s": None, "duration_min": 0}
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_list, acks="all")
    for event in [Event("price", t0, now_price), Event("price", t0 + 60, now_price),  # a repeat: unchanged
                  Event("price", t0 + 120, dict(now_price, price_per_kwh=0.3, duration_min=30)),
                  Event("price", t0 + 180, now_price),  # "now" again after a bounded price: written
                  Event("price", t0, dict(now_price, currency="EUR")), Event("summation", t0, {"meter": 1})]:
        key, value = event_message(house, event)
        producer.send(topic, key=key, value=value)
    producer.send(topic, key=house.encode(), value=None)
    producer.flush()
    producer.close()

    quarantine = tmp_path / "q.jsonl"
    counts = price_store.PriceStore(settings, f"g-{uuid.uuid4().hex[:6]}", quarantine).run(once=True, poll_ms=300)
    assert (counts.stored, counts.unchanged, counts.skipped, counts.quarantined) == (3, 1, 1, 2)
    assert [json.loads(line)["reason"] for line in quarantine.read_text().splitlines()] == [
        "currency must be an ISO 4217 numeric code 0..999", "no value"]
    query = "SELECT bounded, effective_from, until, currency, default_rate_per_kwh FROM house_tariffs WHERE house_id = %s"
    rows = sorted((r.bounded, r.effective_from, r.until, r.currency, r.default_rate_per_kwh)
                  for r in cassandra_session.execute(query, (house,)))

    def at(epoch_s):  # as the driver reads a timestamp: naive UTC
        return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).replace(tzinfo=None)

    assert rows == [(False, at(t0), None, "EUR", 0.12), (False, at(t0 + 180), None, "EUR", 0.12),
                    (True, at(t0 + 120), at(t0 + 120 + 1800), "EUR", 0.3)]

    # A second consumer group reads every event again: the same rows, nothing more.
    price_store.PriceStore(settings, f"g-{uuid.uuid4().hex[:6]}", quarantine).run(once=True, poll_ms=300)
    assert sorted((r.bounded, r.effective_from, r.until, r.currency, r.default_rate_per_kwh)
                  for r in cassandra_session.execute(query, (house,))) == rows

"""The landing job's pure transforms on inline messages (no broker)."""
import datetime as dt
import json
import time

import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from smw import contract, schema
from smw import messages

pytestmark = pytest.mark.spark

GOOD = {"v": 1, "type": "readings", "house_id": "h1",
        "series": [{"meter": 3, "label": "oven", "appliance": "oven",
                    "ts_s": [1303171199.5, 1303171200.0], "power_w": [10.0, -2.5]},
                   {"meter": 1, "label": "mains", "appliance": "mains", "ts_s": [1303171199.0], "power_w": [99.0]}]}


def variant(**changes):
    body = json.loads(json.dumps(GOOD))
    series_changes = changes.pop("series0", None)
    body.update(changes)
    if series_changes:
        body["series"][0].update(series_changes)
    return json.dumps(body)


CORPUS = [
    json.dumps(GOOD),
    variant(series0={"ts_s": [1303171199.5, 3928000000.0]}),  # one timestamp with a bit flipped: 2094
    variant(series0={"ts_s": [time.time() + 3600.0, time.time() + 3601.0]}),  # a clock an hour ahead
    variant(v=2),
    variant(v="1"),
    variant(type="price"),
    variant(house_id=""),
    variant(house_id="x" * 65),
    variant(house_id="x" * 64),
    variant(series=[]),
    variant(series=None),
    variant(series0={"meter": 3.5}),
    variant(series0={"meter": -1}),
    variant(series0={"meter": 70000}),
    variant(series0={"meter": "3"}),
    variant(series0={"label": None}),
    variant(series0={"power_w": ["1", "2"]}),
    variant(series0={"power_w": [1.0]}),
    variant(series0={"ts_s": [5.0, 6.0]}),
    variant(series0={"ts_s": [], "power_w": []}),
    variant(series0={"ts_s": [1303171199.5, None]}),
    '{"v":1,"type":"readings","house_id":"h","series":[{"meter":1,"label":"a","appliance":"a",'
    '"ts_s":[1e9],"power_w":[NaN]}]}',
    "not json at all",
    "",
    "[1, 2, 3]",
    '{"v": 1, "type": "readings"',
]


KAFKA_COLUMNS = "key BINARY, value BINARY, topic STRING, partition INT, offset LONG, timestamp TIMESTAMP"


def kafka_records(spark, values, ts=dt.datetime(2011, 4, 19, 12, 0)):
    """Rows shaped like the Kafka source's, one per value, offsets 0.."""
    return spark.createDataFrame([(b"h1", v, "readings", 0, i, ts) for i, v in enumerate(values)], KAFKA_COLUMNS)


def python_verdict(raw: str) -> bool:
    try:
        messages.decode(raw.encode())
    except messages.InvalidMessage:
        return False
    return True


def test_spark_validation_agrees_with_the_contract_module(spark):
    records = kafka_records(spark, [raw.encode() for raw in CORPUS])
    verdicts = {row.offset: row.error for row in contract.parsed_messages(records).select("offset", "error").collect()}
    mismatches = [(CORPUS[i], verdicts[i]) for i in range(len(CORPUS)) if (verdicts[i] is None) != python_verdict(CORPUS[i])]
    assert mismatches == []
    assert sum(v is None for v in verdicts.values()) == 2  # GOOD and the 64-character house id


def test_readings_explode_with_utc_dates_across_midnight(spark):
    records = kafka_records(spark, [json.dumps(GOOD).encode()])
    routed = contract.routed(contract.parsed_messages(records))
    got = routed.where("zone = 'raw'").select(*schema.RAW_COLUMNS)
    expected = spark.createDataFrame(
        [
            Row(house_id="h1", meter=3, label="oven", appliance="oven", ts_s=1303171199.5, power_w=10.0,
                date=dt.date(2011, 4, 18)),
            Row(house_id="h1", meter=3, label="oven", appliance="oven", ts_s=1303171200.0, power_w=-2.5,
                date=dt.date(2011, 4, 19)),
            Row(house_id="h1", meter=1, label="mains", appliance="mains", ts_s=1303171199.0, power_w=99.0,
                date=dt.date(2011, 4, 18)),
        ],
        got.schema,
    )
    assertDataFrameEqual(got, expected)


def test_utc_date_ignores_the_session_time_zone(spark):
    frame = spark.createDataFrame([(1303171199.999,), (1303171200.0,)], "ts_s DOUBLE")
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        dates = [row.d for row in frame.select(contract.utc_date(frame.ts_s).alias("d")).collect()]
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    assert dates == [dt.date(2011, 4, 18), dt.date(2011, 4, 19)]


def test_invalid_records_are_routed_whole_to_the_quarantine(spark):
    records = spark.createDataFrame(
        [(b"h1", b"not json", "readings", 0, 41, dt.datetime(2011, 4, 18, 23, 59, 59)),
         (b"h1", json.dumps(GOOD).encode(), "readings", 0, 42, dt.datetime(2011, 4, 19, 0, 0, 1))],
        KAFKA_COLUMNS,
    )
    routed = contract.routed(contract.parsed_messages(records))
    zones = {row.zone: row for row in routed.where("zone = 'quarantine' OR meter = 1").collect()}
    assert zones["quarantine"].value == b"not json" and zones["quarantine"].offset == 41
    assert zones["quarantine"].house_id is None and zones["quarantine"].error
    assert zones["quarantine"].date == dt.date(2011, 4, 18)
    assert zones["raw"].value is None and zones["raw"].offset is None and zones["raw"].error is None
    assert routed.where("zone = 'raw'").count() == 3

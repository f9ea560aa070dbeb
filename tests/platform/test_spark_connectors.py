"""Spark reads Kafka through the Kafka source and round-trips Cassandra through the connector."""
import json
import uuid

import pytest
from kafka import KafkaProducer
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from smw import schema

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def test_kafka_source_to_cassandra_and_back(spark, kafka_ready, topic, cassandra_session, settings):
    house = f"house-{uuid.uuid4().hex[:8]}"
    readings = [
        {"house_id": house, "meter": meter, "label": "lighting", "appliance": "lighting",
         "ts_s": 1303132929.0 + i, "power_w": 10.0 * i + meter}
        for i in range(5) for meter in (3, 4)
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_ready.kafka_bootstrap_list, acks="all")
    try:
        for reading in readings:
            producer.send(topic, key=house.encode(), value=json.dumps(reading).encode())
        producer.flush(timeout=30)
    finally:
        producer.close()

    from_kafka = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_ready.kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .select(F.from_json(F.col("value").cast("string"), schema.reading_spark_schema()).alias("r"))
        .select("r.house_id", "r.meter", "r.ts_s", "r.power_w")
    )
    (from_kafka.write.format("org.apache.spark.sql.cassandra")
        .options(keyspace=settings.cassandra_keyspace, table="spark_roundtrip")
        .mode("append").save())

    from_cassandra = (
        spark.read.format("org.apache.spark.sql.cassandra")
        .options(keyspace=settings.cassandra_keyspace, table="spark_roundtrip")
        .load()
        .where(F.col("house_id") == house)
    )
    expected = spark.createDataFrame(
        [(r["house_id"], r["meter"], r["ts_s"], r["power_w"]) for r in readings],
        "house_id STRING, meter INT, ts_s DOUBLE, power_w DOUBLE",
    )
    assertDataFrameEqual(from_cassandra.select(*expected.columns), expected)

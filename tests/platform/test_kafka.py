"""Produce and consume through the local broker with kafka-python."""
import json

import pytest
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.integration


def test_produce_then_consume_keeps_per_key_order(kafka_ready, topic):
    producer = KafkaProducer(
        bootstrap_servers=kafka_ready.kafka_bootstrap_list,
        acks="all",
        key_serializer=str.encode,
        value_serializer=lambda value: json.dumps(value).encode(),
    )
    sent = [(f"house_{i % 3}", {"seq": i}) for i in range(60)]
    try:
        for key, value in sent:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_ready.kafka_bootstrap_list,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10000,
        key_deserializer=bytes.decode,
        value_deserializer=json.loads,
    )
    try:
        received = [(message.key, message.value) for message in consumer]
    finally:
        consumer.close()

    assert len(received) == len(sent)
    for house in {key for key, _ in sent}:
        assert [v["seq"] for k, v in received if k == house] == [v["seq"] for k, v in sent if k == house]

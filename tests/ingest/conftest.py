"""Helpers for the ingest tests that read Kafka back."""
from __future__ import annotations

import pytest


def read_all(bootstrap: list[str] | str, topic: str) -> list:
    """Every record of `topic` on the brokers at `bootstrap`, read until each partition's end offset
    (no idle timeout)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records = []
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.fixture(scope="session")
def read_topic(kafka_ready):
    """read_topic(name): every record of topic `name` on the local broker (`read_all`)."""
    return lambda name: read_all(kafka_ready.kafka_bootstrap_list, name)

"""Helpers for the ingest tests that read Kafka back."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def read_topic(kafka_ready):
    """read_topic(name): every record of topic `name`, read until each partition's end offset (no idle timeout)."""
    from kafka import KafkaConsumer, TopicPartition

    def read(name: str) -> list:
        consumer = KafkaConsumer(bootstrap_servers=kafka_ready.kafka_bootstrap_list, enable_auto_commit=False)
        try:
            partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name)]
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

    return read

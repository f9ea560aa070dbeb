"""A producer's close() ends, also when it meets the idempotent producer still fetching its id."""
import threading
import time

import pytest
from kafka.producer import sender as kafka_sender

from smw import kafka_clients

pytestmark = pytest.mark.integration


def closed_within(producer, seconds: float) -> bool:
    closer = threading.Thread(target=producer.close, daemon=True)
    closer.start()
    closer.join(seconds)
    return not closer.is_alive()


def test_a_close_during_the_producer_id_fetch_ends(kafka_ready, monkeypatch):
    """A broker that has just started answers InitProducerId with CoordinatorLoadInProgress, and
    a close() that comes during the retry has its wakeup swallowed by the retry's own poll. The
    retry is made to last until close() has begun and to poll once, as the real one does."""
    fetch = kafka_sender.Sender._maybe_wait_for_producer_id
    swallowed = threading.Event()

    def fetch_during_a_close(self):
        deadline = time.monotonic() + 10.0
        while self._running and time.monotonic() < deadline:
            time.sleep(0.01)
        self._client.poll(timeout_ms=100)  # reads the close's wakeup, as a retry's request does
        swallowed.set()
        fetch(self)

    monkeypatch.setattr(kafka_sender.Sender, "_maybe_wait_for_producer_id", fetch_during_a_close)
    producer = kafka_clients.producer(kafka_ready, enable_idempotence=True, acks="all")
    assert closed_within(producer, 15.0)
    assert swallowed.is_set()


def test_a_close_delivers_what_was_sent_first(kafka_ready, topic):
    producer = kafka_clients.producer(kafka_ready, enable_idempotence=True, acks="all", linger_ms=500)
    futures = [producer.send(topic, value=b"%d" % i) for i in range(100)]
    assert closed_within(producer, 30.0)
    assert all(f.is_done and f.succeeded() for f in futures)

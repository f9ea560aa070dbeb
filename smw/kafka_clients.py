"""Every kafka-python client the project makes: brokers and credentials from the settings.

    producer = kafka_clients.producer(settings, acks="all")
    consumer = kafka_clients.consumer(settings, topic, group_id="...")
    admin = kafka_clients.admin(settings, request_timeout_ms=15000)

Each one gets `settings.kafka_client_kwargs()` (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM,
KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD). kafka-python says little when a broker refuses
SASL credentials: a producer is made without a word and its first send waits for metadata
until `max_block_ms`, an admin client fails with `IncompatibleBrokerVersion`. So with SASL
configured each constructor first authenticates one connection (`check_credentials`, a few
milliseconds) and raises `KafkaAuthError`, one line naming the settings to check. Without
SASL (the local stack) nothing is checked and nothing changes.

A producer's `close()` without a timeout waits for what was sent to be delivered, as
kafka-python's does, and then gives its I/O thread `CLOSE_GRACE_S` to stop (`Producer`).
"""
from __future__ import annotations

import logging
import socket

from kafka import KafkaProducer
from kafka.errors import KafkaError

from smw import config

log = logging.getLogger(__name__)

CLOSE_GRACE_S = 1.0  # for the I/O thread to stop once everything sent is delivered


class KafkaAuthError(KafkaError):
    """The brokers refused the configured credentials; the message is one line saying what to check.

    A `KafkaError`, so a caller that retries an unreachable broker (a serial device's spool)
    treats it the same way; the command-line tools print it as it is."""

    retriable = False

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def auth_failed(settings: config.Settings, detail: str = "") -> KafkaAuthError:
    return KafkaAuthError(
        f"Kafka at {settings.kafka_bootstrap} refused the {settings.kafka_sasl_mechanism} credentials of user "
        f"{settings.kafka_sasl_username!r}{f' ({detail})' if detail else ''}; check KAFKA_SASL_USERNAME and "
        "KAFKA_SASL_PASSWORD (and KAFKA_SASL_MECHANISM, KAFKA_SECURITY_PROTOCOL)")


def security_kwargs(settings: config.Settings) -> dict[str, str]:
    """`settings.kafka_client_kwargs()`; settings that do not fit together are a `KafkaAuthError`."""
    try:
        return settings.kafka_client_kwargs()
    except ValueError as exc:
        raise KafkaAuthError(str(exc)) from None


def check_credentials(settings: config.Settings, timeout_s: float = 10.0) -> None:
    """With SASL configured, authenticate one connection to the first bootstrap server that answers;
    `KafkaAuthError` if the brokers refuse the credentials. Servers that cannot be reached are left
    to the client, which reports them its own way; without SASL this does nothing."""
    kwargs = security_kwargs(settings)
    if not settings.kafka_sasl:
        return
    from kafka.conn import BrokerConnection
    from kafka.errors import SaslAuthenticationFailedError, UnsupportedSaslMechanismError

    for address in settings.kafka_bootstrap_list:
        host, _, port = address.rpartition(":")
        connection = BrokerConnection(host.strip("[]"), int(port), socket.AF_UNSPEC, **kwargs)
        errors: list[BaseException] = []
        close = connection.close

        def recording_close(error=None, _close=close, _errors=errors):
            # kafka-python logs a refused authentication and closes the connection with the error,
            # then reports only "not connected": keep the error to tell a refusal from an outage.
            if error is not None:
                _errors.append(error)
            _close(error)

        connection.close = recording_close
        try:
            logger = logging.getLogger("kafka.conn")
            level = logger.level
            logger.setLevel(logging.CRITICAL)  # the line raised below says it once
            try:
                connected = connection.connect_blocking(timeout_s)
            except (SaslAuthenticationFailedError, UnsupportedSaslMechanismError) as exc:
                raise auth_failed(settings, str(exc)) from None
            finally:
                logger.setLevel(level)
        finally:
            close()
        refused = [e for e in errors if isinstance(e, (SaslAuthenticationFailedError, UnsupportedSaslMechanismError))]
        if refused:
            said = str(refused[0]).split(": ", 1)[-1]
            raise auth_failed(settings, said)
        if connected:
            return


def _common(settings: config.Settings, options: dict) -> dict:
    check_credentials(settings)
    return {"bootstrap_servers": settings.kafka_bootstrap_list, **security_kwargs(settings), **options}


class Producer(KafkaProducer):
    """A `KafkaProducer` whose `close()` without a timeout cannot wait forever once nothing is left to send.

    kafka-python 2.3.3's idempotent producer fetches its producer id in its I/O thread, retrying
    while a broker that has just started answers `CoordinatorLoadInProgress`. A `close()` in that
    window (a replay that stops at once: a missing topic) wakes the thread while it is inside
    that retry, whose own poll swallows the wakeup; the thread then polls with no deadline and
    `close()` joins it forever. Here `close()` first waits for delivery (what `close()` waits
    for), then lets the thread stop within `CLOSE_GRACE_S` before forcing it: by then nothing is
    left to send, so forcing loses nothing. With a timeout, kafka-python's own bound applies.
    """

    def close(self, timeout=None, null_logger=False):
        if timeout is None and not getattr(self, "_closed", True):
            self.flush()
            timeout = CLOSE_GRACE_S
        super().close(timeout, null_logger)


def producer(settings: config.Settings, **options) -> Producer:
    """A `Producer` (a `KafkaProducer`) to the configured brokers with the configured credentials."""
    return Producer(**_common(settings, options))


def consumer(settings: config.Settings, *topics: str, **options):
    """A `KafkaConsumer` of `topics` (or none: assign partitions later) to the configured brokers."""
    from kafka import KafkaConsumer

    return KafkaConsumer(*topics, **_common(settings, options))


def admin(settings: config.Settings, **options):
    """A `KafkaAdminClient` of the configured brokers with the configured credentials."""
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**_common(settings, options))

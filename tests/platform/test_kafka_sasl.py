"""Kafka with SASL/SCRAM-SHA-512: every client the project makes authenticates with the
KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* settings, and refused credentials are one clear line.

A broker of its own for the module (KRaft, SASL_PLAINTEXT listener, the SCRAM user written into
its metadata by the storage tool's `--add-scram`), on free loopback ports, stopped by pid.
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from ingest import land
from smw import config, init, jars, jobs, kafka_clients, zones
from tools.services import INFRA, new_cluster_id

pytestmark = [pytest.mark.integration, pytest.mark.spark]

USER = "smw-client"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}
log.dirs={data}
num.partitions=2
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
"""


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory, settings):
    """Settings of a SASL_PLAINTEXT + SCRAM-SHA-512 broker of our own, with the right credentials."""
    home = tmp_path_factory.mktemp("scram-kafka")
    password = secrets.token_urlsafe(12)
    port, controller = free_port(), free_port()
    sasl = settings.replace(kafka_bootstrap=f"127.0.0.1:{port}", kafka_security_protocol="SASL_PLAINTEXT",
                            kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username=USER,
                            kafka_sasl_password=password)
    properties = home / "server.properties"
    properties.write_text(SERVER_PROPERTIES.format(port=port, controller=controller, data=home / "data",
                                                   jaas=sasl.kafka_java_properties()["sasl.jaas.config"]))
    java = ["java", "-Xmx256m", "-XX:+UseSerialGC", f"-Dlog4j.configuration=file:{INFRA / 'kafka' / 'log4j.properties'}",
            f"-Dkafka.logs.dir={home / 'logs'}", "-cp", jars.classpath("kafka", settings)]
    formatted = subprocess.run(
        java + ["kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(properties),
                "--add-scram", f"SCRAM-SHA-512=[name={USER},password={password}]"],
        capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    broker = subprocess.Popen(java + ["kafka.Kafka", str(properties)], stdout=open(home / "kafka.out", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with jobs.quiet_logger("kafka"):
                    admin = kafka_clients.admin(sasl, request_timeout_ms=3000)
                admin.list_topics()
                admin.close()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if broker.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the SCRAM broker did not start:\n" + (home / "kafka.out").read_text()[-3000:])
                time.sleep(0.5)
        yield sasl
    finally:
        if broker.poll() is None:
            os.killpg(broker.pid, signal.SIGTERM)
            try:
                broker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(broker.pid, signal.SIGKILL)
                broker.wait()


def replay(settings: config.Settings, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.environ()}
    return subprocess.run([sys.executable, "-m", "ingest.replay", "--no-progress", *args], cwd=config.ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def test_the_settings_become_every_clients_options():
    settings = config.load(environ={"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u",
                                    "KAFKA_SASL_PASSWORD": 'p"q\\r'}, dotenv=None)
    assert settings.kafka_client_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u", "sasl_plain_password": 'p"q\\r'}
    options = settings.spark_kafka_options()
    assert options["kafka.bootstrap.servers"] == "127.0.0.1:9092"
    assert options["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p\\"q\\\\r";')
    assert "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule" in settings.kafka_properties_text()
    # Spark's Kafka source: the same, and how long its clients wait for a broker (KAFKA_SOURCE_TIMEOUT_MS).
    source = settings.spark_kafka_source_options()
    assert source == {**options, "kafka.default.api.timeout.ms": "15000", "kafka.request.timeout.ms": "7500"}
    kafka_defaults = settings.replace(kafka_source_timeout_ms="")
    assert kafka_defaults.spark_kafka_source_options() == options
    for wrong in ("15s", "999", "-1"):
        with pytest.raises(ValueError, match="KAFKA_SOURCE_TIMEOUT_MS"):
            settings.replace(kafka_source_timeout_ms=wrong).spark_kafka_source_options()
    # The default: PLAINTEXT, no SASL, nothing added to any client.
    plain = config.load(environ={}, dotenv=None)
    assert plain.kafka_client_kwargs() == {} and plain.spark_kafka_options() == {"kafka.bootstrap.servers": "127.0.0.1:9092"}
    with pytest.raises(ValueError, match="KAFKA_SECURITY_PROTOCOL"):
        config.load(environ={"KAFKA_SASL_USERNAME": "u"}, dotenv=None).kafka_client_kwargs()


def test_the_cluster_launcher_logs_in_with_the_same_settings():
    """tools.cluster's probes and its Kafka admin tool get their credentials from smw.config too."""
    from tools import cluster

    settings = cluster.kafka_settings(["127.0.0.2:19092", "127.0.0.3:19092"], cluster.Login("smw-broker", "pw"))
    assert settings.kafka_bootstrap_list == ["127.0.0.2:19092", "127.0.0.3:19092"]
    assert kafka_clients.security_kwargs(settings) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "smw-broker", "sasl_plain_password": "pw"}
    assert settings.kafka_properties_text() == (
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="smw-broker" password="pw";\n')


def test_replay_and_landing_go_through_sasl(scram_broker, spark, tmp_path):
    settings = scram_broker.replace(kafka_topic="sasl-readings", data_dir=str(tmp_path / "data"))
    init.create_topics(settings, {settings.kafka_topic: 2})  # the admin client, with the credentials
    produced = replay(settings, "--source", "synthetic", "--houses", "2", "--days", "1", "--period-s", "60",
                      "--seed", "5")
    assert produced.returncode == 0, produced.stderr[-3000:]
    readings = int(produced.stdout.split(" readings in ")[0].replace(",", "").split()[-1])
    assert readings > 1000 and "delivered" in produced.stdout

    query = land.start(spark, settings, once=True, trigger_interval="1 second", max_offsets_per_trigger=None,
                       files_per_trigger=1)
    query.awaitTermination(120)
    assert query.exception() is None
    assert zones.read_raw(spark, settings).count() == readings


def test_a_wrong_password_is_one_clear_line_within_seconds(scram_broker, spark, tmp_path):
    wrong = scram_broker.replace(kafka_topic="sasl-readings", kafka_sasl_password="not-the-password",
                                 data_dir=str(tmp_path / "data"))
    started = time.monotonic()
    produced = replay(wrong, "--source", "synthetic", "--houses", "1", "--days", "1", "--period-s", "60", timeout_s=60)
    replay_s = time.monotonic() - started
    assert produced.returncode == 1
    lines = [line for line in produced.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Kafka at 127.0.0.1:"), produced.stderr
    assert "refused" in lines[0] and "KAFKA_SASL_PASSWORD" in lines[0] and USER in lines[0]
    assert "not-the-password" not in produced.stderr
    assert replay_s < 20, replay_s

    # The landing job: refused before Spark tries the credentials.
    started = time.monotonic()
    with pytest.raises(kafka_clients.KafkaAuthError, match="KAFKA_SASL_PASSWORD"):
        land.start(spark, wrong, once=True, trigger_interval="1 second", max_offsets_per_trigger=None,
                   files_per_trigger=1)
    assert time.monotonic() - started < 10

    # make init, and a consumer: the same line.
    with pytest.raises(init.InitError, match="refused the SCRAM-SHA-512 credentials"):
        init.init(wrong, ["kafka"])
    with pytest.raises(kafka_clients.KafkaAuthError):
        kafka_clients.consumer(wrong, "sasl-readings")


def test_spark_refused_mid_run_is_one_line_too(scram_broker, spark, tmp_path, monkeypatch, caplog):
    """Credentials the brokers stop accepting after the job started: Spark's own Kafka consumers fail."""
    wrong = scram_broker.replace(kafka_topic="sasl-readings", kafka_sasl_password="revoked",
                                 data_dir=str(tmp_path / "data"))
    monkeypatch.setattr(kafka_clients, "check_credentials", lambda *_a, **_k: None)
    started = time.monotonic()
    query = land.start(spark, wrong, once=True, trigger_interval="1 second", max_offsets_per_trigger=None,
                       files_per_trigger=1)
    logger = logging.getLogger("test-sasl")
    with caplog.at_level(logging.ERROR, logger="test-sasl"):
        assert jobs.await_queries([query], logger, "landing") == 1
    assert time.monotonic() - started < 60
    said = [r.getMessage() for r in caplog.records if r.name == "test-sasl"]
    assert len(said) == 1 and "Kafka refused the SASL credentials" in said[0] and "KAFKA_SASL_PASSWORD" in said[0]
    assert "\n" not in said[0]


def test_every_kafka_client_is_made_by_smw_kafka_clients():
    """No module makes a kafka-python client itself: it would leave out the configured credentials."""
    import re

    made_here = re.compile(r"\b(KafkaProducer|KafkaConsumer|KafkaAdminClient)\(")
    offenders = []
    for top in ("smw", "ingest", "batch", "streaming", "webapp", "datasets", "tools"):
        for path in sorted((config.ROOT / top).rglob("*.py")):
            relative = path.relative_to(config.ROOT).as_posix()
            if relative == "smw/kafka_clients.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if made_here.search(line):
                    offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)

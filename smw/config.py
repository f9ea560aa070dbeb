"""One place for configuration: environment variables with local defaults.

Every setting has an environment variable (see `.env.example`); a `.env` file at
the repository root is read too, but a variable already set in the environment
wins. Command-line tools layer their own flags on top with `add_arguments()` /
`from_args()`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a `.env` file; comments and blank lines ignored."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    host = host.strip().strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setting(env: str, default: str, help_text: str):
    """A field of a settings dataclass (`Settings`, the cluster launcher's): its environment variable,
    default and help, which `from_environment` and `add_arguments` read."""
    return field(default=default, metadata={"env": env, "help": help_text})


def comma_list(text: str) -> list[str]:
    """The non-empty items of a comma-separated setting, stripped."""
    return [item.strip() for item in text.split(",") if item.strip()]


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")
# The JAAS login module of each SASL mechanism the project's clients speak (kafka-python has these three).
KAFKA_SASL_LOGIN_MODULES = {
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
}


# Consistency levels of plain reads and writes (the SERIAL ones are for lightweight transactions).
CASSANDRA_CONSISTENCY_LEVELS = ("ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM",
                                "LOCAL_ONE")


@dataclass(frozen=True)
class Settings:
    """Connection points, sizes and locations of every part of the platform."""

    kafka_bootstrap: str = setting("KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers, comma separated")
    kafka_topic: str = setting("KAFKA_TOPIC", "readings", "Kafka topic carrying readings")
    kafka_events_topic: str = setting(
        "KAFKA_EVENTS_TOPIC", "meter-events", "Kafka topic for device events (EMU-2 summation and price)"
    )
    kafka_partitions: str = setting("KAFKA_PARTITIONS", "4", "partitions of the readings topic (make init)")
    kafka_replication_factor: str = setting(
        "KAFKA_REPLICATION_FACTOR", "1", "replicas of each topic make init creates (at most the number of brokers)")
    kafka_min_insync_replicas: str = setting(
        "KAFKA_MIN_INSYNC_REPLICAS", "1", "min.insync.replicas of each topic make init creates (acks=all waits for them)")
    kafka_security_protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
        "Kafka security protocol: PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL (every client the project makes)")
    kafka_sasl_mechanism: str = setting(
        "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "SASL mechanism: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN")
    kafka_sasl_username: str = setting("KAFKA_SASL_USERNAME", "", "Kafka SASL user (empty: no SASL)")
    kafka_sasl_password: str = setting("KAFKA_SASL_PASSWORD", "", "Kafka SASL password")
    kafka_source_timeout_ms: str = setting(
        "KAFKA_SOURCE_TIMEOUT_MS", "15000",
        "how long Spark's Kafka source (landing, alert and live-power jobs) waits for a broker: an offset lookup "
        "(default.api.timeout.ms) before Spark tries again with a new client (3 attempts), each request half as "
        "long (request.timeout.ms); empty: Kafka's own 60 s and 30 s")
    cassandra_hosts: str = setting("CASSANDRA_HOSTS", "127.0.0.1", "Cassandra contact points, comma separated")
    cassandra_port: str = setting("CASSANDRA_PORT", "9042", "Cassandra native protocol port")
    cassandra_keyspace: str = setting("CASSANDRA_KEYSPACE", "smw", "Cassandra keyspace")
    cassandra_replication: str = setting(
        "CASSANDRA_REPLICATION",
        "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        "replication map used when the keyspace is created",
    )
    cassandra_consistency: str = setting(
        "CASSANDRA_CONSISTENCY", "LOCAL_QUORUM",
        "consistency level of every Cassandra read and write the project makes (LOCAL_QUORUM, LOCAL_ONE, QUORUM, ONE, "
        "ALL, ...); with one replica every level is that replica")
    cassandra_username: str = setting("CASSANDRA_USERNAME", "", "Cassandra user (empty: no authentication)")
    cassandra_password: str = setting("CASSANDRA_PASSWORD", "", "Cassandra password")
    rethinkdb_host: str = setting("RETHINKDB_HOST", "127.0.0.1", "RethinkDB (or reqlite) host")
    rethinkdb_port: str = setting("RETHINKDB_PORT", "28015", "RethinkDB driver port")
    rethinkdb_db: str = setting("RETHINKDB_DB", "smw", "RethinkDB database")
    spark_master: str = setting("SPARK_MASTER", "local[*]", "Spark master URL (python -m runs; spark-submit takes --master)")
    spark_driver_memory: str = setting("SPARK_DRIVER_MEMORY", "2g", "Spark driver memory (python -m runs)")
    spark_driver_host: str = setting(
        "SPARK_DRIVER_HOST", "127.0.0.1",
        "address the Spark driver binds to and gives its executors (for a cluster master: one they can reach)"
    )
    spark_shuffle_partitions: str = setting("SPARK_SHUFFLE_PARTITIONS", "8", "spark.sql.shuffle.partitions")
    max_future_skew_s: str = setting(
        "SMW_MAX_FUTURE_SKEW_S", "300", "readings dated further ahead of the clock than this are quarantined")
    data_dir: str = setting("DATA_DIR", str(ROOT / "var" / "data"), "raw zone, quarantine and checkpoints")
    var_dir: str = setting("SMW_VAR_DIR", str(ROOT / "var"), "data and logs of the local services")
    jars_dir: str = setting("SMW_JARS_DIR", str(ROOT / ".deps" / "jars"), "jars fetched by make setup")
    # Local stack (make up) only: where and how big the local services are.
    local_services: str = setting(
        "LOCAL_SERVICES", "auto",
        "auto: make init and the job targets start a local service configured on a loopback address that is "
        "not running; 0: they never start one")
    kafka_controller_port: str = setting("KAFKA_CONTROLLER_PORT", "9093", "local Kafka KRaft controller port")
    kafka_heap: str = setting("KAFKA_HEAP", "512m", "local Kafka broker heap")
    cassandra_storage_port: str = setting("CASSANDRA_STORAGE_PORT", "7000", "local Cassandra internode port")
    cassandra_heap: str = setting("CASSANDRA_HEAP", "1G", "local Cassandra heap (at most 1G on a laptop)")
    service_timeout_s: str = setting("SMW_SERVICE_TIMEOUT_S", "180", "seconds to wait for a local service to be ready")
    # Outgoing e-mail of the notifier (python -m webapp.notify); the defaults suit a local test server.
    smtp_host: str = setting("SMW_SMTP_HOST", "127.0.0.1", "SMTP server of notification e-mails")
    smtp_port: str = setting("SMW_SMTP_PORT", "8025", "SMTP server port")
    smtp_starttls: str = setting("SMW_SMTP_STARTTLS", "0", "1: upgrade the SMTP connection with STARTTLS")
    smtp_username: str = setting("SMW_SMTP_USERNAME", "", "SMTP user (empty: no login)")
    smtp_password: str = setting("SMW_SMTP_PASSWORD", "", "SMTP password")
    smtp_from: str = setting("SMW_SMTP_FROM", "smw-notify@localhost", "From address of notification e-mails")

    # Typed views -----------------------------------------------------------
    @property
    def cassandra_host_list(self) -> list[str]:
        return comma_list(self.cassandra_hosts)

    @property
    def kafka_bootstrap_list(self) -> list[str]:
        return comma_list(self.kafka_bootstrap)

    @property
    def rethinkdb_host_list(self) -> list[str]:
        return [self.rethinkdb_host.strip()]

    def is_local(self, service: str) -> bool:
        """Whether every configured address of `service` (kafka, cassandra, rethinkdb) is a loopback
        address, where the local stack (make up) serves it; anything else is someone else's service."""
        hosts = {
            "kafka": [address.rpartition(":")[0] or address for address in self.kafka_bootstrap_list],
            "cassandra": self.cassandra_host_list,
            "rethinkdb": self.rethinkdb_host_list,
        }[service]
        return bool(hosts) and all(is_loopback(host) for host in hosts)

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap_list[0].rsplit(":", 1)[1])

    # Kafka security: one mapping of the KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* settings for
    # every kind of client (kafka-python, Spark's Kafka source, the Java command-line tools).
    @property
    def kafka_sasl(self) -> bool:
        """Whether the Kafka clients authenticate with SASL (a KAFKA_SASL_USERNAME is set)."""
        return bool(self.kafka_sasl_username)

    @property
    def cassandra_consistency_level(self) -> str:
        """CASSANDRA_CONSISTENCY's level name, checked (a ValueError naming the levels otherwise)."""
        name = self.cassandra_consistency.strip().upper()
        if name not in CASSANDRA_CONSISTENCY_LEVELS:
            raise ValueError(f"CASSANDRA_CONSISTENCY={self.cassandra_consistency!r} is not a consistency level; "
                             f"one of {', '.join(CASSANDRA_CONSISTENCY_LEVELS)}")
        return name

    def _kafka_security_checked(self) -> tuple[str, str]:
        """(protocol, mechanism), checked: a SASL user needs a SASL protocol and a supported mechanism."""
        protocol = self.kafka_security_protocol.strip().upper() or "PLAINTEXT"
        mechanism = self.kafka_sasl_mechanism.strip().upper()
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL {self.kafka_security_protocol!r} is not one of "
                             f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}")
        if self.kafka_sasl:
            if not protocol.startswith("SASL_"):
                raise ValueError(f"KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL is {protocol}: set it to "
                                 "SASL_PLAINTEXT or SASL_SSL (or leave KAFKA_SASL_USERNAME empty)")
            if mechanism not in KAFKA_SASL_LOGIN_MODULES:
                raise ValueError(f"KAFKA_SASL_MECHANISM {self.kafka_sasl_mechanism!r} is not one of "
                                 f"{', '.join(KAFKA_SASL_LOGIN_MODULES)}")
        elif protocol.startswith("SASL_"):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL is {protocol} but KAFKA_SASL_USERNAME is empty: set the "
                             "user and KAFKA_SASL_PASSWORD")
        return protocol, mechanism

    def kafka_client_kwargs(self) -> dict[str, str]:
        """Security keyword arguments of a kafka-python KafkaProducer, KafkaConsumer or KafkaAdminClient
        (empty for PLAINTEXT, the default: the clients' own default)."""
        protocol, mechanism = self._kafka_security_checked()
        if protocol == "PLAINTEXT":
            return {}
        kwargs = {"security_protocol": protocol}
        if self.kafka_sasl:
            kwargs.update(sasl_mechanism=mechanism, sasl_plain_username=self.kafka_sasl_username,
                          sasl_plain_password=self.kafka_sasl_password)
        return kwargs

    def kafka_java_properties(self) -> dict[str, str]:
        """The same as Java Kafka client properties (`security.protocol`, `sasl.mechanism`,
        `sasl.jaas.config`): for a command-line tool's properties file (`kafka_properties_text`)."""
        protocol, mechanism = self._kafka_security_checked()
        if protocol == "PLAINTEXT":
            return {}
        properties = {"security.protocol": protocol}
        if self.kafka_sasl:
            def quoted(value: str) -> str:
                return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

            properties["sasl.mechanism"] = mechanism
            properties["sasl.jaas.config"] = (
                f"{KAFKA_SASL_LOGIN_MODULES[mechanism]} required username={quoted(self.kafka_sasl_username)} "
                f"password={quoted(self.kafka_sasl_password)};")
        return properties

    def spark_kafka_options(self) -> dict[str, str]:
        """Options of Spark's Kafka source and sink: the brokers and `kafka.`-prefixed security properties."""
        options = {"kafka.bootstrap.servers": self.kafka_bootstrap}
        options.update({f"kafka.{key}": value for key, value in self.kafka_java_properties().items()})
        return options

    def spark_kafka_source_options(self) -> dict[str, str]:
        """Options of Spark's Kafka source: `spark_kafka_options()` and, from KAFKA_SOURCE_TIMEOUT_MS, the
        timeouts of its Kafka clients (the driver's offset lookups, the executors' consumers). A lookup
        that waits for a broker that died fails after `kafka.default.api.timeout.ms` (Kafka's default: 60 s)
        and Spark tries it again with a new client, which finds the partitions' new leaders."""
        options = self.spark_kafka_options()
        timeout = self.kafka_source_timeout_ms.strip()
        if timeout:
            if not timeout.isdigit() or int(timeout) < 1000:
                raise ValueError(f"KAFKA_SOURCE_TIMEOUT_MS={self.kafka_source_timeout_ms!r} is not a number of "
                                 "milliseconds of at least 1000 (or empty: Kafka's own timeouts)")
            options["kafka.default.api.timeout.ms"] = str(int(timeout))
            # At most the lookup's: Kafka's admin client refuses a request timeout longer than its API timeout.
            options["kafka.request.timeout.ms"] = str(int(timeout) // 2)
        return options

    def kafka_properties_text(self) -> str:
        """A Java properties file for the Kafka command-line tools (`--command-config`, `--producer.config`)."""
        def escaped(value: str) -> str:
            return value.replace("\\", "\\\\").replace("\n", "\\n")

        lines = [f"{key}={escaped(value)}" for key, value in self.kafka_java_properties().items()]
        return "".join(line + "\n" for line in lines)

    def environ(self) -> dict[str, str]:
        """These settings as environment variables, for a child process to `load()` them back."""
        return {f.metadata["env"]: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: str) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def from_environment(cls, environ: dict[str, str] | None = None, dotenv: Path | None = ROOT / ".env"):
    """An instance of the settings dataclass `cls` (fields made by `setting`) from `.env`, overridden
    by the environment; what neither sets keeps its default."""
    values = _read_dotenv(dotenv) if dotenv else {}
    values.update(os.environ if environ is None else environ)
    return cls(**{f.name: values[f.metadata["env"]] for f in fields(cls) if f.metadata["env"] in values})


def load(environ: dict[str, str] | None = None, dotenv: Path | None = ROOT / ".env") -> Settings:
    """Settings from `.env`, overridden by the environment."""
    return from_environment(Settings, environ, dotenv)


def add_arguments(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add `--kafka-bootstrap` style overrides for the named settings; each one's help shows the
    value in force (from the environment, `.env` or the built-in default), secrets masked."""
    by_name = {f.name: f for f in fields(Settings)}
    current = load()
    for name in names:
        f = by_name[name]
        value = getattr(current, name)
        shown = ("(set)" if value else "(not set)") if "password" in name else repr(value).replace("%", "%%")
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=None,
            help=f"{f.metadata['help']} (env {f.metadata['env']}; now {shown})",
        )


def from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment with any command-line overrides applied."""
    names = {f.name for f in fields(Settings)}
    return load().replace(**{k: v for k, v in vars(args).items() if k in names})


# Parameter sets (the alert rules, the nightly maths) are frozen dataclasses whose fields
# carry their own help; the command-line flags are made from them, so that a default is
# written once.


def option(default, help_text: str):
    """A dataclass field with its command-line help."""
    return field(default=default, metadata={"help": help_text})


def add_options(parser: argparse.ArgumentParser, cls, names: tuple[str, ...] | None = None) -> None:
    """Add a `--field-name` flag per field of the dataclass `cls` (or the `names` among them)."""
    for f in fields(cls):
        if names is not None and f.name not in names:
            continue
        kind = ({"action": argparse.BooleanOptionalAction} if isinstance(f.default, bool)
                else {"type": type(f.default)})
        parser.add_argument("--" + f.name.replace("_", "-"), default=f.default,
                            help=f"{f.metadata['help']} (default {f.default})", **kind)


def options_from_args(cls, args: argparse.Namespace, **overrides):
    """An instance of `cls` from the flags `add_options` added (fields without a flag keep their default)."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **overrides})


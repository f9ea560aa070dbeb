"""A multi-node stack on this machine: 3 Kafka brokers, 3 Cassandra nodes, a Spark master and 2 workers.

Kafka runs in KRaft mode, each node broker and controller (three voters), clients and brokers
authenticating with SASL/SCRAM-SHA-512; Cassandra asks for a password (PasswordAuthenticator,
CassandraAuthorizer, `system_auth` on all three nodes); the Spark standalone workers run in mount
namespaces of their own with an empty tmpfs over the checkout, from a copy of pyspark's Spark
outside it (SMW_CLUSTER_HOME). Everything binds to SMW_CLUSTER_HOSTS (127.0.0.1-3, all loopback),
with data, logs and pid files under `<SMW_VAR_DIR>/cluster/`, next to the single-node stack of
`tools.services` (whose Service machinery every node uses) and on other ports.

Credentials come from the environment (or `.env`): KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD and
CASSANDRA_USERNAME / CASSANDRA_PASSWORD; what is not set is generated once. `up` writes
`var/cluster/cluster.env` (mode 0600) with everything a client needs; the cluster's own accounts
(the inter-broker SCRAM user, Cassandra's administrator role) are in `var/cluster/internal.env`.

    python -m tools.cluster up|status|down
    python -m tools.cluster kill|stop|start NODE      # kafka-2, cassandra-3, spark-worker-1, ...

`kill` sends SIGKILL to the node's process group, `stop` SIGTERM; `start` starts a node that is not
running (keeping its data) and waits until it answers. The same as functions: `kill("kafka-2")`,
`stop(...)`, `start(...)`, `up()`, `down()`, `status()`.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from smw import config, jars
from smw.config import comma_list, setting
from tools import services
from tools.services import ServiceError

log = logging.getLogger(__name__)

ROOT = config.ROOT
TEMPLATES = services.INFRA / "cluster"


def default_home() -> Path:
    """Where the workers' Spark lives unless SMW_CLUSTER_HOME says otherwise: outside the checkout."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "smw" / "cluster"


@dataclass(frozen=True)
class ClusterSettings:
    """Addresses and sizes of the multi-node stack; each from its environment variable."""

    hosts: str = setting("SMW_CLUSTER_HOSTS", "127.0.0.1,127.0.0.2,127.0.0.3",
                         "one loopback address per Kafka broker and Cassandra node, comma separated")
    kafka_port: str = setting("SMW_CLUSTER_KAFKA_PORT", "19092", "SASL_PLAINTEXT client port of every broker")
    kafka_controller_port: str = setting("SMW_CLUSTER_KAFKA_CONTROLLER_PORT", "19093", "KRaft controller port")
    kafka_heap: str = setting("SMW_CLUSTER_KAFKA_HEAP", "512m", "heap of each broker")
    kafka_min_insync: str = setting("SMW_CLUSTER_KAFKA_MIN_INSYNC_REPLICAS", "2",
                                    "min.insync.replicas of the cluster's topics")
    cassandra_port: str = setting("SMW_CLUSTER_CASSANDRA_PORT", "19042", "native protocol port of every node")
    cassandra_storage_port: str = setting("SMW_CLUSTER_CASSANDRA_STORAGE_PORT", "17000", "internode port")
    cassandra_jmx_port: str = setting("SMW_CLUSTER_CASSANDRA_JMX_PORT", "17199",
                                      "JMX port of the first node (on 127.0.0.1); the next nodes take the next ports")
    cassandra_heap: str = setting("SMW_CLUSTER_CASSANDRA_HEAP", "1G", "heap of each Cassandra node")
    cassandra_dc: str = setting("SMW_CLUSTER_CASSANDRA_DC", "dc1", "data centre name of the ring")
    spark_master_port: str = setting("SMW_CLUSTER_SPARK_MASTER_PORT", "17077", "Spark master RPC port")
    spark_master_ui_port: str = setting("SMW_CLUSTER_SPARK_MASTER_UI_PORT", "18080", "Spark master web UI port")
    spark_worker_port: str = setting("SMW_CLUSTER_SPARK_WORKER_PORT", "17078", "RPC port of every worker")
    spark_worker_ui_port: str = setting("SMW_CLUSTER_SPARK_WORKER_UI_PORT", "18081", "web UI port of every worker")
    spark_workers: str = setting("SMW_CLUSTER_SPARK_WORKERS", "2", "number of Spark workers")
    spark_worker_cores: str = setting("SMW_CLUSTER_SPARK_WORKER_CORES", "2", "cores each worker offers")
    spark_worker_memory: str = setting("SMW_CLUSTER_SPARK_WORKER_MEMORY", "2g",
                                       "memory each worker offers its executors")
    spark_daemon_heap: str = setting("SMW_CLUSTER_SPARK_DAEMON_HEAP", "256m", "heap of the master and each worker")
    home: str = setting("SMW_CLUSTER_HOME", "",
                        "the workers' Spark installation and work dirs, outside the checkout "
                        "(default ${XDG_CACHE_HOME:-~/.cache}/smw/cluster)")
    timeout_s: str = setting("SMW_CLUSTER_TIMEOUT_S", "300", "seconds to wait for the cluster to be ready")
    # The clients' accounts are the settings every client reads (smw.config: KAFKA_SASL_USERNAME,
    # KAFKA_SASL_PASSWORD, CASSANDRA_USERNAME, CASSANDRA_PASSWORD); empty: smw, a generated password.

    @property
    def host_list(self) -> list[str]:
        return comma_list(self.hosts)

    @property
    def home_dir(self) -> Path:
        return Path(self.home).expanduser() if self.home else default_home()


def load_settings(environ: dict[str, str] | None = None, dotenv: Path | None = ROOT / ".env") -> ClusterSettings:
    """Cluster settings from `.env`, overridden by the environment (like `smw.config.load`)."""
    return config.from_environment(ClusterSettings, environ, dotenv)


# ------------------------------------------------------------------ credentials and files

class Login(NamedTuple):
    """A user name and its password (a pair: `user, password = login`)."""

    user: str
    password: str


DEFAULT_CASSANDRA_SUPERUSER = Login("cassandra", "cassandra")
# internal.env's keys of the cluster's own accounts, by the name of the Credentials field.
INTERNAL_KEYS = {"kafka_broker": ("KAFKA_BROKER_USERNAME", "KAFKA_BROKER_PASSWORD"),
                 "cassandra_admin": ("CASSANDRA_ADMIN_USERNAME", "CASSANDRA_ADMIN_PASSWORD")}
# How every client and broker of the cluster talks to the brokers.
KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM = "SASL_PLAINTEXT", "SCRAM-SHA-512"
# Characters a Kafka user name or password cannot hold here: kafka-configs splits SCRAM settings on
# them and the JAAS configuration quotes with them.
KAFKA_UNSAFE = '"\\,=[]'


def _new_password() -> str:
    return secrets.token_urlsafe(24)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as `write_env_file` writes them (values shell-quoted)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        words = shlex.split(value)
        values[key.strip()] = words[0] if words else ""
    return values


def write_env_file(path: Path, values: dict[str, str], header: str) -> None:
    """Write KEY=VALUE lines a shell can source, readable by the owner only (written beside, renamed in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(header)
        for key, value in values.items():
            out.write(f"{key}={shlex.quote(value)}\n")
    partial.replace(path)


@dataclass
class Credentials:
    """Who connects to what: the clients' accounts and the cluster's own."""

    kafka_client: Login
    kafka_broker: Login  # the brokers among themselves (SCRAM)
    cassandra_client: Login
    cassandra_admin: Login  # the superuser that replaced Cassandra's default one
    kafka_cluster_id: str


# ------------------------------------------------------------------ clients of the cluster (probes, tests)


def kafka_settings(bootstrap: list[str], login: tuple[str, str]) -> config.Settings:
    """The settings of a Kafka client of the cluster that logs in as `login`, from which `smw.config`
    and `smw.kafka_clients` make its credentials, as for every other client of the project."""
    return config.Settings(kafka_bootstrap=",".join(bootstrap), kafka_security_protocol=KAFKA_SECURITY_PROTOCOL,
                           kafka_sasl_mechanism=KAFKA_SASL_MECHANISM, kafka_sasl_username=login[0],
                           kafka_sasl_password=login[1])


class AuthRefused(ServiceError):
    """A node answered and refused the credentials."""


class _SaslRefusals(logging.Handler):
    """Collects what brokers said when they refused a SASL login. kafka-python only logs it (on
    `kafka.conn`) and then fails with an unrelated error (IncompatibleBrokerVersion while it
    probes the broker's version, or NoBrokersAvailable)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "SaslAuthenticationFailedError" in message:
            self.reasons.append(message.split("SaslAuthenticationFailedError", 1)[1].strip(":() "))


@contextlib.contextmanager
def _kafka_login(bootstrap: list[str], user: str):
    """Raise AuthRefused, with the broker's reason, for any failure of the block that follows a
    refused SASL login; other Kafka errors pass unchanged."""
    from kafka.errors import KafkaError

    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the client's own retries and tracebacks
    conn_log = logging.getLogger("kafka.conn")
    refusals = _SaslRefusals()
    saved = conn_log.level, conn_log.propagate
    conn_log.addHandler(refusals)
    conn_log.setLevel(logging.ERROR)
    conn_log.propagate = False
    try:
        yield
    except KafkaError:
        if refusals.reasons:
            raise AuthRefused(f"Kafka at {','.join(bootstrap)} refused the SASL/SCRAM-SHA-512 login of user "
                              f"{user!r}: {refusals.reasons[-1]}") from None
        raise
    finally:
        conn_log.removeHandler(refusals)
        conn_log.setLevel(saved[0])
        conn_log.propagate = saved[1]


def broker_metadata(address: str, login: tuple[str, str], timeout_s: float = 5.0) -> list[int]:
    """The broker ids one broker reports in answer to a metadata request, after a SASL/SCRAM-SHA-512
    login; AuthRefused (with the broker's reason) when it refuses the login."""
    import socket

    from kafka.conn import BrokerConnection
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError
    from kafka.protocol.metadata import MetadataRequest

    from smw import kafka_clients

    host, port = services._host_port(address)
    deadline = time.monotonic() + timeout_s
    conn = None
    try:
        with _kafka_login([address], login[0]):
            conn = BrokerConnection(host, port, socket.AF_INET, request_timeout_ms=int(timeout_s * 1000),
                                    **kafka_clients.security_kwargs(kafka_settings([address], login)))
            if not conn.connect_blocking(timeout_s):
                raise KafkaConnectionError(f"no connection to {address}")
            conn.send(MetadataRequest[1](topics=[]))  # no topics: the brokers only
            while time.monotonic() < deadline:
                for response, _future in conn.recv():
                    return sorted(broker[0] for broker in response.brokers)
                if conn.disconnected():
                    raise KafkaConnectionError(f"{address} closed the connection")
                time.sleep(0.01)
            raise KafkaTimeoutError(f"{address} did not answer a metadata request within {timeout_s:.0f} s")
    finally:
        if conn is not None:
            conn.close()


def kafka_brokers(bootstrap: list[str], login: tuple[str, str], timeout_s: float = 5.0) -> list[int]:
    """The broker ids a SCRAM-authenticated metadata request reports (from the first broker of
    `bootstrap` that answers)."""
    from kafka.errors import KafkaError

    failures = []
    for address in bootstrap:
        try:
            return broker_metadata(address, login, timeout_s)
        except KafkaError as exc:
            failures.append(f"{address}: {exc}")
    raise ServiceError("no Kafka broker answered: " + "; ".join(failures))


def cassandra_session(hosts: list[str], port: int, login: tuple[str, str], timeout_s: float = 10.0,
                      only_first: bool = False):
    """(cluster, session) logged in as `login`; only_first: every request coordinated by hosts[0].

    Raises AuthRefused when the node refuses the credentials."""
    from cassandra import AuthenticationFailed
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
    from cassandra.policies import RoundRobinPolicy, WhiteListRoundRobinPolicy

    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    policy = WhiteListRoundRobinPolicy([hosts[0]]) if only_first else RoundRobinPolicy()
    handle = Cluster(
        hosts, port=port, auth_provider=PlainTextAuthProvider(*login), protocol_version=5,
        connect_timeout=min(timeout_s, 5.0), control_connection_timeout=timeout_s,
        schema_metadata_enabled=False, token_metadata_enabled=False,
        execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=policy,
                                                                   request_timeout=timeout_s)},
    )
    try:
        return handle, handle.connect()
    except (NoHostAvailable, AuthenticationFailed) as exc:
        handle.shutdown()
        errors = getattr(exc, "errors", None) or {}
        refused = [e for e in (errors.values() if isinstance(errors, dict) else ()) if isinstance(e, AuthenticationFailed)]
        if isinstance(exc, AuthenticationFailed) or refused:
            raise AuthRefused(f"Cassandra at {','.join(hosts)} port {port} refused the credentials of role "
                              f"{login[0]!r}: {refused[0] if refused else exc}") from None
        raise


def cassandra_view(host: str, port: int, login: tuple[str, str], timeout_s: float = 10.0) -> tuple[int, int | None]:
    """What one node sees, through authenticated requests it coordinates: (nodes in the ring counting
    itself, nodes UP). UP comes from a read of `system_auth.roles`, which has a replica on every node
    (`cassandra.system_auth.default_rf`), at consistency ALL: the node answers it only when every
    replica is alive and replies, and otherwise says how many replicas it holds alive (None: it timed
    out, as right after a node was killed and before it is known DOWN). Only a superuser may read that
    table: `login` is the cluster's administrator role (Cluster.credentials().cassandra_admin)."""
    from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, Unavailable
    from cassandra.cluster import NoHostAvailable
    from cassandra.query import SimpleStatement

    handle, session = cassandra_session([host], port, login, timeout_s, only_first=True)
    try:
        ring = len(list(session.execute("SELECT peer FROM system.peers_v2"))) + 1
        query = SimpleStatement("SELECT role FROM system_auth.roles WHERE role = %s",
                                consistency_level=ConsistencyLevel.ALL)
        try:
            session.execute(query, (login[0],))
            return ring, ring
        except NoHostAvailable as exc:  # the one host's answer, wrapped
            causes = list(exc.errors.values()) if isinstance(exc.errors, dict) else []
        except (Unavailable, ReadTimeout, OperationTimedOut) as exc:
            causes = [exc]
        for cause in causes:
            if isinstance(cause, Unavailable):
                return ring, cause.alive_replicas
            if isinstance(cause, (ReadTimeout, OperationTimedOut)):
                return ring, None
        raise causes[0] if causes else RuntimeError("no answer")
    finally:
        handle.shutdown()


def _cql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def http_json(url: str, timeout_s: float = 3.0):
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.load(response)


# ------------------------------------------------------------------ processes


def tree_rss_mib(pid: int) -> float | None:
    sizes = [services._rss_mib(p) for p in services.process_tree(pid)]
    known = [s for s in sizes if s is not None]
    return sum(known) if known else None


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


class KafkaNode(services.Kafka):
    """One broker and KRaft controller of the cluster."""

    def __init__(self, cluster: "Cluster", index: int):
        services.Service.__init__(self, f"kafka-{index}", cluster.node_settings,
                                  cluster.hosts[index - 1], int(cluster.cs.kafka_port))
        self.cluster, self.index = cluster, index

    def prepare(self) -> None:
        cs, creds = self.cluster.cs, self.cluster.credentials()
        voters = ",".join(f"{i}@{host}:{cs.kafka_controller_port}" for i, host in enumerate(self.cluster.hosts, 1))
        self.properties.touch(mode=0o600)
        os.chmod(self.properties, 0o600)  # it holds the inter-broker password
        self.render_config("cluster/kafka.properties.template", self.properties, node_id=self.index, voters=voters,
                           controller_port=cs.kafka_controller_port, partitions=self.settings.kafka_partitions,
                           replication_factor=len(self.cluster.hosts), min_insync=cs.kafka_min_insync,
                           broker_user=creds.kafka_broker.user, broker_password=creds.kafka_broker.password)
        if (self.data_dir / "meta.properties").exists():
            return  # formatted on the first start only: formatting again would erase the log
        # Every node is formatted with the same cluster id and the same SCRAM credentials, which the
        # first active controller writes into the metadata log (KRaft has no ZooKeeper to hold them).
        scram = [f'SCRAM-SHA-512=[name="{user}",password="{password}"]'
                 for user, password in (creds.kafka_broker, creds.kafka_client)]
        args = ["format", "-t", creds.kafka_cluster_id, "-c", str(self.properties)]
        for entry in scram:
            args += ["--add-scram", entry]
        result = subprocess.run(self._java("kafka.tools.StorageTool", *args), capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise ServiceError(f"formatting the storage of {self.name} failed:\n{result.stdout}{result.stderr}")

    def probe(self) -> None:
        """A SCRAM-authenticated metadata request to this broker (as the brokers' own user while the
        cluster starts, when the clients' user may not exist yet; as the clients' user otherwise)."""
        creds = self.cluster.credentials()
        login = creds.kafka_broker if self.cluster.starting else creds.kafka_client
        broker_metadata(f"{self.host}:{self.port}", login, timeout_s=3.0)


class CassandraNode(services.Cassandra):
    """One node of the Cassandra ring (its own rack)."""

    def __init__(self, cluster: "Cluster", index: int):
        services.Service.__init__(self, f"cassandra-{index}", cluster.node_settings,
                                  cluster.hosts[index - 1], int(cluster.cs.cassandra_port))
        self.cluster, self.index = cluster, index

    @property
    def rackdc(self) -> Path:
        return self.home / "cassandra-rackdc.properties"

    @property
    def jmx_port(self) -> int:
        return int(self.cluster.cs.cassandra_jmx_port) + self.index - 1

    def prepare(self) -> None:
        cs = self.cluster.cs
        seeds = ",".join(f"{host}:{cs.cassandra_storage_port}" for host in self.cluster.hosts)
        self.render_config("cluster/cassandra.yaml.template", self.yaml, cluster_name="smw-cluster", seeds=seeds,
                           storage_port=cs.cassandra_storage_port)
        self.render_config("cluster/cassandra-rackdc.properties.template", self.rackdc, dc=cs.cassandra_dc,
                           rack=f"rack{self.index}")

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("-cp")
        # Later -D flags win over infra/cassandra/jvm.options (which suits a single node).
        return command[:at] + [
            f"-Dcassandra.jmx.local.port={self.jmx_port}",  # JMX binds 127.0.0.1 whatever the node's address
            f"-Dcassandra-rackdc.properties=file://{self.rackdc}",
            # The ring's auth and repair tables on every node from the first start: no ALTER and repair later.
            f"-Dcassandra.system_auth.default_rf={len(self.cluster.hosts)}",
            f"-Dcassandra.system_distributed.default_rf={len(self.cluster.hosts)}",
            "-Dcassandra.ring_delay_ms=5000",  # peers to hear from: a few seconds, not the single node's one
        ] + command[at:]

    def probe(self) -> None:
        """An authenticated SELECT coordinated by this node. While the cluster starts it logs in as the
        administrator role, or as Cassandra's default superuser before that role exists."""
        creds = self.cluster.credentials()
        logins = [creds.cassandra_admin, DEFAULT_CASSANDRA_SUPERUSER] if self.cluster.starting \
            else [creds.cassandra_client]
        refused = None
        for login in logins:
            try:
                handle, session = cassandra_session([self.host], self.port, login, timeout_s=5.0, only_first=True)
            except AuthRefused as exc:
                refused = exc
                continue
            try:
                session.execute("SELECT release_version FROM system.local").one()
                return
            finally:
                handle.shutdown()
        raise refused


class SparkHome:
    """pyspark's Spark (bin, sbin, jars, the Python side the executors run) and the connector jars,
    hard-linked (or copied) outside the checkout, where a worker that cannot see the checkout
    runs from. Rebuilt when pyspark or the jars change."""

    def __init__(self, root: Path, settings: config.Settings):
        self.root, self.settings = root, settings
        self.spark = root / "spark"
        self.extra_jars = self.spark / "extra-jars"
        self.conf = self.spark / "conf"

    @staticmethod
    def source() -> Path:
        return jars.pyspark_jars_dir().parent

    def _files(self) -> list[tuple[Path, str]]:
        """(source file, place in the home) of everything the home holds."""
        source = self.source()
        files = [(p, f"jars/{p.name}") for p in sorted((source / "jars").glob("*.jar"))]
        files += [(p, f"{folder}/{p.name}") for folder in ("bin", "sbin") for p in sorted((source / folder).iterdir())
                  if p.is_file()]
        files += [(p, f"python/lib/{p.name}") for p in sorted((source / "python" / "lib").glob("*.zip"))]
        files += [(p, f"extra-jars/{p.name}") for p in jars.jars("spark", self.settings)]
        files.append((TEMPLATES / "spark-log4j2.properties", "conf/log4j2.properties"))
        return files

    def _stamp(self, files) -> str:
        digest = hashlib.sha256()
        for path, place in files:
            stat = path.stat()
            digest.update(f"{place} {stat.st_size} {stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def current(self) -> bool:
        try:
            return (self.spark / ".source").read_text() == self._stamp(self._files())
        except OSError:
            return False

    def ensure(self, in_use: bool) -> None:
        """Build the home if it is missing or stale; a stale one in use by running daemons is kept."""
        if _inside(self.root, ROOT):
            raise ServiceError(f"SMW_CLUSTER_HOME ({self.root}) is inside the checkout {ROOT}, which the Spark "
                               "workers must not see: choose a folder outside it")
        files = self._files()
        stamp = self._stamp(files)
        try:
            if (self.spark / ".source").read_text() == stamp:
                return
        except OSError:
            pass
        if in_use and self.spark.exists():
            print(f"warning: pyspark or the connector jars changed since {self.spark} was made; "
                  "it is rebuilt after `make cluster-down`")
            return
        fresh = self.root / "spark.partial"
        shutil.rmtree(fresh, ignore_errors=True)
        for path, place in files:
            target = fresh / place
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(path, target)
        (fresh / ".source").write_text(stamp)
        old = self.root / "spark.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.spark.exists():
            self.spark.rename(old)
        fresh.rename(self.spark)
        shutil.rmtree(old, ignore_errors=True)
        print(f"spark home  {self.spark} (pyspark's Spark and the connector jars, outside the checkout)")

    def work_dir(self, node: str) -> Path:
        return self.root / "work" / node


class _SparkDaemon(services.Service):
    """A Spark standalone daemon run from the cluster's Spark home."""

    cluster: "Cluster"
    main_class = ""

    def prepare(self) -> None:
        self.cluster.spark_home.ensure(in_use=self.cluster.spark_running(besides=self))

    def daemon_args(self) -> list[str]:
        raise NotImplementedError

    def java(self, *extra: str) -> list[str]:
        home = self.cluster.spark_home
        heap = self.cluster.cs.spark_daemon_heap
        return [
            "java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC",
            # Marks the process as ours (Service.pid looks for the node's folder in the command line).
            f"-Dsmw.cluster.node={self.home}",
            *extra,
            "-cp", f"{home.conf}:{home.spark / 'jars'}/*",
            self.main_class, *self.daemon_args(),
        ]

    def command(self) -> list[str]:
        return self.java()

    def environment(self) -> dict[str, str]:
        """A clean environment: nothing of the checkout's (PATH entries, SPARK_CONF_DIR, a venv) reaches
        the daemon or, through it, the executors; SPARK_LOCAL_IP binds its UI and RPC to its address."""
        env = {k: v for k, v in os.environ.items()
               if k in ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "JAVA_HOME", "TMPDIR")
               and not _inside(Path(v), ROOT)}
        env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                      if p and not _inside(Path(p), ROOT))
        home = self.cluster.spark_home
        env.update(SPARK_HOME=str(home.spark), SPARK_CONF_DIR=str(home.conf), SPARK_LOCAL_IP=self.host,
                   SPARK_SCALA_VERSION="2.12")
        return env

    def master_state(self) -> dict:
        master = self.cluster.spark_master
        return http_json(f"http://{master.host}:{master.ui_port}/json/")


class SparkMaster(_SparkDaemon):
    """The Spark standalone master."""

    main_class = "org.apache.spark.deploy.master.Master"

    def __init__(self, cluster: "Cluster"):
        services.Service.__init__(self, "spark-master", cluster.node_settings, cluster.hosts[0],
                                  int(cluster.cs.spark_master_port))
        self.cluster, self.index = cluster, 0
        self.ui_port = int(cluster.cs.spark_master_ui_port)

    @property
    def url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    def daemon_args(self) -> list[str]:
        return ["--host", self.host, "--port", str(self.port), "--webui-port", str(self.ui_port)]

    def probe(self) -> None:
        state = self.master_state()
        if state.get("status") != "ALIVE":
            raise ServiceError(f"master status {state.get('status')}")


# Run by `sh` as the first process of a new PID and mount namespace: an empty read-only tmpfs over
# the checkout, the work dir outside it as the current directory, then the worker. `sh` stays (no
# exec) to reap the orphans the executors' Python daemons leave, as the first process must.
HIDE_CHECKOUT = 'mount -t tmpfs -o ro,mode=0555,size=16k smw-hidden-checkout "$1" && cd "$2" && shift 2 && "$@"'


class SparkWorker(_SparkDaemon):
    """A Spark standalone worker that cannot see the checkout (nor, through it, its executors)."""

    main_class = "org.apache.spark.deploy.worker.Worker"

    def __init__(self, cluster: "Cluster", index: int):
        hosts = cluster.hosts
        services.Service.__init__(self, f"spark-worker-{index}", cluster.node_settings, hosts[index % len(hosts)],
                                  int(cluster.cs.spark_worker_port))
        self.cluster, self.index = cluster, index
        self.ui_port = int(cluster.cs.spark_worker_ui_port)

    @property
    def work_dir(self) -> Path:
        return self.cluster.spark_home.work_dir(self.name)

    def daemon_args(self) -> list[str]:
        cs = self.cluster.cs
        return ["--host", self.host, "--port", str(self.port), "--webui-port", str(self.ui_port),
                "--cores", cs.spark_worker_cores, "--memory", cs.spark_worker_memory,
                "--work-dir", str(self.work_dir), self.cluster.spark_master.url]

    def command(self) -> list[str]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "local").mkdir(exist_ok=True)
        java = self.java("-Dspark.worker.cleanup.enabled=true", "-Dspark.worker.cleanup.appDataTtl=86400")
        return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
                "--kill-child", "sh", "-c", HIDE_CHECKOUT, "smw-worker", str(ROOT), str(self.work_dir), *java]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "SPARK_LOCAL_DIRS": str(self.work_dir / "local")}

    def probe(self) -> None:
        """The master lists this worker ALIVE."""
        for worker in self.master_state().get("workers", []):
            if worker.get("host") == self.host and worker.get("port") == self.port and worker.get("state") == "ALIVE":
                return
        raise ServiceError(f"the master does not list {self.name} ({self.host}:{self.port}) as ALIVE")

    def checkout_view(self) -> list[str] | None:
        """What the worker's processes see at the checkout's path (None when it is not running)."""
        pid = self.pid()
        if pid is None:
            return None
        inner = services.process_tree(pid)[1:2]  # the namespace's first process (sh)
        if not inner:
            return None
        try:
            return sorted(os.listdir(f"/proc/{inner[0]}/root{ROOT}"))
        except OSError:
            return None


class Cluster:
    """The nodes of the multi-node stack, in start order."""

    def __init__(self, cs: ClusterSettings | None = None, settings: config.Settings | None = None):
        self.cs = cs or load_settings()
        self.settings = base = settings or config.load()
        self.dir = Path(base.var_dir) / "cluster"
        self.hosts = self.cs.host_list
        self.node_settings = base.replace(var_dir=str(self.dir), kafka_heap=self.cs.kafka_heap,
                                          cassandra_heap=self.cs.cassandra_heap)
        self.spark_home = SparkHome(self.cs.home_dir, base)
        self.starting = False  # probes log in with the cluster's own accounts while it starts
        self._credentials: Credentials | None = None
        self.kafka = [KafkaNode(self, i) for i in range(1, len(self.hosts) + 1)]
        self.cassandra = [CassandraNode(self, i) for i in range(1, len(self.hosts) + 1)]
        self.spark_master = SparkMaster(self)
        self.spark_workers = [SparkWorker(self, i) for i in range(1, int(self.cs.spark_workers) + 1)]

    @property
    def nodes(self) -> list[services.Service]:
        return [*self.kafka, *self.cassandra, self.spark_master, *self.spark_workers]

    def node(self, name: str) -> services.Service:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ServiceError(f"no node {name!r}; the nodes are {', '.join(n.name for n in self.nodes)}")

    @property
    def env_file(self) -> Path:
        return self.dir / "cluster.env"

    @property
    def internal_file(self) -> Path:
        return self.dir / "internal.env"

    @property
    def kafka_bootstrap(self) -> list[str]:
        return [f"{node.host}:{node.port}" for node in self.kafka]

    def spark_running(self, besides=None) -> bool:
        return any(node.pid() for node in (self.spark_master, *self.spark_workers) if node is not besides)

    # -- credentials ---------------------------------------------------------------------------------
    def credentials(self) -> Credentials:
        """The environment's credentials, else those of cluster.env, else new ones; the cluster's own
        accounts from internal.env, else new ones (written by `write_files`)."""
        if self._credentials is None:
            client, internal = read_env_file(self.env_file), read_env_file(self.internal_file)
            settings = self.settings

            def client_login(user: str, password: str, keys: tuple[str, str]) -> Login:
                """The configured account, else cluster.env's, else smw with a new password."""
                return Login(user or client.get(keys[0]) or "smw", password or client.get(keys[1]) or _new_password())

            def own_login(keys: tuple[str, str], default_user: str) -> Login:
                """internal.env's account, else `default_user` with a new password."""
                return Login(internal.get(keys[0]) or default_user, internal.get(keys[1]) or _new_password())

            cluster_id = internal.get("KAFKA_CLUSTER_ID") or self._formatted_cluster_id() or services.new_cluster_id()
            self._credentials = Credentials(
                kafka_client=client_login(settings.kafka_sasl_username, settings.kafka_sasl_password,
                                          ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")),
                kafka_broker=own_login(INTERNAL_KEYS["kafka_broker"], "smw-broker"),
                cassandra_client=client_login(settings.cassandra_username, settings.cassandra_password,
                                              ("CASSANDRA_USERNAME", "CASSANDRA_PASSWORD")),
                cassandra_admin=own_login(INTERNAL_KEYS["cassandra_admin"], "smw_admin"),
                kafka_cluster_id=cluster_id,
            )
            for what, value in zip(("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"), self._credentials.kafka_client):
                if not value or any(c in value for c in KAFKA_UNSAFE) or any(c.isspace() for c in value):
                    raise ServiceError(f"{what} must be non-empty, without spaces or any of {KAFKA_UNSAFE} "
                                       "(Kafka's SCRAM and JAAS settings quote and split it)")
        return self._credentials

    def _formatted_cluster_id(self) -> str | None:
        for node in self.kafka:
            meta = node.data_dir / "meta.properties"
            if meta.exists():
                for line in meta.read_text().splitlines():
                    if line.startswith("cluster.id="):
                        return line.split("=", 1)[1].strip()
        return None

    def client_environment(self) -> dict[str, str]:
        """Everything a client of the cluster needs, as environment variables."""
        creds = self.credentials()
        dc = self.cs.cassandra_dc
        return {
            "KAFKA_BOOTSTRAP": ",".join(self.kafka_bootstrap),
            "KAFKA_SECURITY_PROTOCOL": KAFKA_SECURITY_PROTOCOL,
            "KAFKA_SASL_MECHANISM": KAFKA_SASL_MECHANISM,
            "KAFKA_SASL_USERNAME": creds.kafka_client.user,
            "KAFKA_SASL_PASSWORD": creds.kafka_client.password,
            "KAFKA_REPLICATION_FACTOR": str(len(self.kafka)),
            "KAFKA_MIN_INSYNC_REPLICAS": self.cs.kafka_min_insync,
            "CASSANDRA_HOSTS": ",".join(node.host for node in self.cassandra),
            "CASSANDRA_PORT": self.cs.cassandra_port,
            "CASSANDRA_USERNAME": creds.cassandra_client.user,
            "CASSANDRA_PASSWORD": creds.cassandra_client.password,
            "CASSANDRA_REPLICATION": f"{{'class': 'NetworkTopologyStrategy', '{dc}': {len(self.cassandra)}}}",
            "CASSANDRA_CONSISTENCY": "LOCAL_QUORUM",
            "SPARK_MASTER": self.spark_master.url,
            "SMW_CLUSTER_HOME": str(self.cs.home_dir),
            "LOCAL_SERVICES": "0",
        }

    def write_files(self) -> None:
        creds = self.credentials()
        write_env_file(self.env_file, self.client_environment(), (
            "# The multi-node stack of `make cluster-up` (tools/cluster.py): addresses and credentials of\n"
            "# its clients. Readable by you only. Use it with:  set -a; . var/cluster/cluster.env; set +a\n"))
        internal = {"KAFKA_CLUSTER_ID": creds.kafka_cluster_id}
        for name, keys in INTERNAL_KEYS.items():
            internal.update(zip(keys, getattr(creds, name)))
        write_env_file(self.internal_file, internal, (
            "# The cluster's own accounts (tools/cluster.py): the brokers' SCRAM user and the Cassandra role\n"
            "# that administers roles. Its data was set up with these: keep this file with var/cluster.\n"))

    # -- accounts -------------------------------------------------------------------------------------
    def ensure_cassandra_roles(self, timeout_s: float) -> None:
        """The clients' role with the configured password and every permission on every keyspace; the
        administrator role; Cassandra's default superuser unable to log in. The first time, the default
        superuser creates the administrator role."""
        creds = self.credentials()
        hosts, port = [n.host for n in self.cassandra], int(self.cs.cassandra_port)
        admin, client = creds.cassandra_admin, creds.cassandra_client
        try:
            handle, session = cassandra_session(hosts, port, admin)
        except AuthRefused:
            try:
                handle, session = cassandra_session(hosts, port, DEFAULT_CASSANDRA_SUPERUSER)
            except AuthRefused:
                raise ServiceError(
                    f"Cassandra refuses both the cluster's administrator role {admin[0]!r} ({self.internal_file}) and "
                    "the default superuser: the ring was set up with other credentials. To start it afresh: "
                    f"make cluster-down, then delete {self.dir}") from None
            try:
                session.execute(f"CREATE ROLE IF NOT EXISTS {_cql_name(admin[0])} WITH PASSWORD = "
                                f"{_cql_text(admin[1])} AND SUPERUSER = true AND LOGIN = true")
            finally:
                handle.shutdown()
            print(f"cassandra  role {admin[0]} created (administrator); the default superuser is disabled next")
            handle, session = _retry(lambda: cassandra_session(hosts, port, admin), timeout_s, AuthRefused)
        try:
            default = session.execute("SELECT can_login, is_superuser FROM system_auth.roles WHERE role = 'cassandra'").one()
            if default and (default.can_login or default.is_superuser):
                session.execute(f"ALTER ROLE cassandra WITH PASSWORD = {_cql_text(_new_password())} "
                                "AND SUPERUSER = false AND LOGIN = false")
            try:
                cassandra_session(hosts, port, client)[0].shutdown()
                return
            except AuthRefused:
                pass
            exists = session.execute("SELECT role FROM system_auth.roles WHERE role = %s", (client[0],)).one()
            verb = "ALTER" if exists else "CREATE"
            session.execute(f"{verb} ROLE {_cql_name(client[0])} WITH PASSWORD = {_cql_text(client[1])} AND LOGIN = true")
            session.execute(f"GRANT ALL PERMISSIONS ON ALL KEYSPACES TO {_cql_name(client[0])}")
            print(f"cassandra  role {client[0]} {'given the configured password' if exists else 'created'} "
                  "(CASSANDRA_USERNAME, CASSANDRA_PASSWORD)")
        finally:
            handle.shutdown()
        # Roles and credentials are cached for a few seconds on each node.
        _retry(lambda: cassandra_session(hosts, port, client)[0].shutdown(), timeout_s, AuthRefused)

    def ensure_kafka_user(self, timeout_s: float) -> None:
        """The clients' SCRAM user with the configured password. It is created when the storage is
        formatted; a user or password set since is written by the brokers' own user."""
        creds = self.credentials()
        try:
            kafka_brokers(self.kafka_bootstrap, creds.kafka_client)
            return
        except AuthRefused:
            pass
        command_config = self.dir / "kafka-admin.properties"
        write_env_file(command_config, {}, "")
        command_config.write_text(kafka_settings(self.kafka_bootstrap, creds.kafka_broker).kafka_properties_text())
        try:
            result = subprocess.run(self.kafka[0]._java(
                "kafka.admin.ConfigCommand", "--bootstrap-server", ",".join(self.kafka_bootstrap),
                "--command-config", str(command_config), "--alter", "--entity-type", "users",
                "--entity-name", creds.kafka_client.user,
                "--add-config", f"SCRAM-SHA-512=[iterations=4096,password={creds.kafka_client.password}]"),
                capture_output=True, text=True, check=False)
        finally:
            command_config.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServiceError(f"setting the SCRAM credentials of Kafka user {creds.kafka_client.user!r} failed:\n"
                               f"{result.stdout}{result.stderr}")
        print(f"kafka      SCRAM user {creds.kafka_client.user} given the configured password (KAFKA_SASL_USERNAME, "
              "KAFKA_SASL_PASSWORD)")
        _retry(lambda: kafka_brokers(self.kafka_bootstrap, creds.kafka_client), timeout_s, AuthRefused)

    # -- the whole ---------------------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        """The whole as clients see it: the brokers a metadata request by the clients' SCRAM user reports,
        the ring each Cassandra node sees (`cassandra_view`), the workers the master lists ALIVE."""
        creds = self.credentials()
        found: dict[str, object] = {}
        try:
            found["kafka_brokers"] = kafka_brokers(self.kafka_bootstrap, creds.kafka_client)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            found["kafka_brokers"] = exc
        for node in self.cassandra:
            try:
                found[node.name] = cassandra_view(node.host, node.port, creds.cassandra_admin, timeout_s=5.0)
            except Exception as exc:  # noqa: BLE001
                found[node.name] = exc
        try:
            state = self.spark_master.master_state()
            found["spark_workers"] = sorted(f"{w['host']}:{w['port']}" for w in state.get("workers", [])
                                            if w.get("state") == "ALIVE")
        except Exception as exc:  # noqa: BLE001
            found["spark_workers"] = exc
        return found

    def missing(self, health: dict[str, object]) -> list[tuple[str, list[services.Service]]]:
        """What keeps the cluster from being whole: (what, the nodes to look at)."""
        problems = []
        brokers = health["kafka_brokers"]
        if not isinstance(brokers, list) or len(brokers) < len(self.kafka):
            problems.append((f"kafka: a SCRAM-authenticated metadata request reports brokers {brokers}; wanted "
                             f"{len(self.kafka)}", self.kafka))
        for node in self.cassandra:
            view = health[node.name]
            if node.pid() is None:
                problems.append((f"cassandra: {node.name} is not running", [node]))
            elif not isinstance(view, tuple):
                problems.append((f"cassandra: {node.name} does not answer: {' '.join(str(view).split())}", [node]))
            elif view != (len(self.cassandra), len(self.cassandra)):
                up = "not all" if view[1] is None else view[1]
                problems.append((f"cassandra: {node.name} sees {view[0]} nodes, {up} UP; wanted "
                                 f"{len(self.cassandra)} UP", [node]))
        workers = health["spark_workers"]
        wanted = sorted(f"{w.host}:{w.port}" for w in self.spark_workers)
        if not isinstance(workers, list) or not set(wanted) <= set(workers):
            problems.append((f"spark: the master lists ALIVE workers {workers}; wanted {wanted}",
                             [self.spark_master, *self.spark_workers]))
        return problems

    def wait_whole(self, timeout_s: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while True:
            health = self.health()
            problems = self.missing(health)
            if not problems:
                return health
            if time.monotonic() > deadline:
                lines = []
                for what, nodes in problems:
                    lines.append(what)
                    for node in nodes:
                        lines.append(f"last lines of {node.log_file}:\n{node.log_tail(15)}")
                raise ServiceError("the cluster is not whole after {:.0f} s:\n".format(timeout_s) + "\n".join(lines))
            time.sleep(1.0)

    def up(self, timeout_s: float | None = None) -> dict[str, object]:
        """Start every node that is not running (a dead one keeps its data), wait until each answers,
        set up the accounts, and wait until the cluster is whole."""
        timeout_s = timeout_s or float(self.cs.timeout_s)
        t0 = time.monotonic()
        self.check_layout()
        self.write_files()
        self.spark_home.ensure(in_use=self.spark_running())
        self.starting = True
        try:
            services.up(self.nodes, timeout_s)
        finally:
            self.starting = False
        self.ensure_cassandra_roles(timeout_s)
        self.ensure_kafka_user(timeout_s)
        health = self.wait_whole(timeout_s)
        print(f"cluster    whole in {time.monotonic() - t0:.1f} s: kafka brokers {health['kafka_brokers']}, "
              f"cassandra {len(self.cassandra)} nodes UP as each of them sees it, "
              f"spark workers {', '.join(health['spark_workers'])} ALIVE")
        return health

    def check_layout(self) -> None:
        if len(set(self.hosts)) != len(self.hosts) or len(self.hosts) < 1:
            raise ServiceError(f"SMW_CLUSTER_HOSTS ({self.cs.hosts}) must name distinct addresses: every node "
                               "uses the same ports on its own address")
        for host in self.hosts:
            if not config.is_loopback(host):
                raise ServiceError(f"SMW_CLUSTER_HOSTS: {host} is not a loopback address; this launcher runs the "
                                   "cluster on this machine only (see docs/cluster.md for real hosts)")
        if not shutil.which("unshare") or os.geteuid() != 0:
            raise ServiceError("the Spark workers run in mount namespaces of their own that hide the checkout: "
                               "that needs root and util-linux's unshare")

    def usage(self) -> str:
        where = os.path.relpath(self.env_file) if _inside(self.env_file, Path.cwd()) else str(self.env_file)
        return (f"clients: {where} holds the addresses and credentials (readable by you only):\n"
                f"  set -a; . {where}; set +a\n"
                "  make init            # topics (3 replicas, min.insync.replicas 2) and the keyspace (RF 3) there\n"
                "  make batch / make stream / ...   # jobs on the Spark master "
                f"{self.spark_master.url}\n"
                "RethinkDB is not part of the cluster: it stays the single-node stack's (make up).")

    def down(self) -> None:
        """Stop the nodes by pid file: the workers and master, then the Cassandra nodes and the brokers,
        the nodes of each kind at once (a broker alone would wait for a controller quorum)."""
        for group in ([*self.spark_workers, self.spark_master], self.cassandra, self.kafka):
            with concurrent.futures.ThreadPoolExecutor(len(group)) as pool:
                pids = [node.pid() for node in group]
                stopped = list(pool.map(lambda node: node.stop(), group))
            for node, pid, was in zip(group, pids, stopped):
                print(f"{node.name:<15} {'stopped (pid %d)' % pid if was else 'not running'}")

    def status(self) -> bool:
        """One line per node: pid, address, ready or not, memory of its process tree; then the whole."""
        print(f"{'node':<15} {'pid':>8} {'address':<22} {'state':<9} {'rss':>9}  notes")
        all_ready, total = True, 0.0
        for node in self.nodes:
            pid = node.pid()
            ready = pid is not None and node.ready()
            all_ready &= ready
            state = "ready" if ready else ("starting" if pid else "stopped")
            rss = tree_rss_mib(pid) if pid else None
            total += rss or 0.0
            notes = ""
            if isinstance(node, SparkWorker) and pid:
                view = node.checkout_view()
                notes = (f"sees {ROOT} empty" if view == [] else
                         f"SEES THE CHECKOUT ({len(view)} entries at {ROOT})" if view else "checkout view unknown")
            elif isinstance(node, SparkMaster):
                notes = f"ui {node.host}:{node.ui_port}"
            elif isinstance(node, CassandraNode):
                notes = f"jmx 127.0.0.1:{node.jmx_port}"
            print(f"{node.name:<15} {pid or '-':>8} {node.host + ':' + str(node.port):<22} {state:<9} "
                  f"{f'{rss:.0f} MiB' if rss else '-':>9}  {notes}")
        print(f"{'total':<15} {'':>8} {'':<22} {'':<9} {f'{total / 1024:.2f} GiB':>9}")
        if any(node.pid() for node in self.nodes):
            problems = self.missing(self.health())
            for what, _nodes in problems:
                print(f"not whole: {what}")
            all_ready &= not problems
            if not problems:
                print(f"whole: {len(self.kafka)} brokers, {len(self.cassandra)} Cassandra nodes UP, "
                      f"{len(self.spark_workers)} Spark workers ALIVE")
        return all_ready

    def start_node(self, name: str, timeout_s: float | None = None) -> int:
        """Start one node that is not running (its data is kept) and wait until it answers; its pid."""
        node = self.node(name)
        pid = node.pid()
        if pid is None:
            if isinstance(node, _SparkDaemon):
                self.spark_home.ensure(in_use=True)
            pid = node.start()
        node.wait_ready(pid, timeout_s or float(self.cs.timeout_s))
        return pid

    def kill_node(self, name: str, signum: int = signal.SIGKILL) -> int:
        """Send `signum` (SIGKILL) to one node's process group and wait until it is gone; its pid."""
        node = self.node(name)
        pid = node.pid()
        if pid is None:
            raise ServiceError(f"{name} is not running")
        os.killpg(pid, signum)
        deadline = time.monotonic() + 60
        # Until it is gone, not until its node's pid() is None: a killed JVM's command line is empty
        # while it still frees its memory.
        while not services.exited(pid) and time.monotonic() < deadline:
            services._reap(pid)
            time.sleep(0.1)
        if not services.exited(pid):
            raise ServiceError(f"{name} (pid {pid}) still runs 60 s after {signal.Signals(signum).name}")
        return pid


def _retry(action, timeout_s: float, *errors: type[BaseException]):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except errors:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


# ------------------------------------------------------------------ the API of the fault tests


def up(cluster: Cluster | None = None, timeout_s: float | None = None) -> dict[str, object]:
    return (cluster or Cluster()).up(timeout_s)


def down(cluster: Cluster | None = None) -> None:
    (cluster or Cluster()).down()


def status(cluster: Cluster | None = None) -> bool:
    return (cluster or Cluster()).status()


def kill(name: str, cluster: Cluster | None = None) -> int:
    """SIGKILL one node (`kafka-2`, `cassandra-3`, `spark-worker-1`, ...) and its children; its pid."""
    return (cluster or Cluster()).kill_node(name, signal.SIGKILL)


def stop(name: str, cluster: Cluster | None = None) -> bool:
    """SIGTERM one node (SIGKILL after a minute); True if it was running."""
    return (cluster or Cluster()).node(name).stop()


def start(name: str, cluster: Cluster | None = None, timeout_s: float | None = None) -> int:
    """Start one node that is not running (keeping its data) and wait until it answers; its pid."""
    return (cluster or Cluster()).start_node(name, timeout_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "status", "down", "kill", "stop", "start", "env"],
                        help="up: start what is not running and wait until the cluster is whole; status: each node; "
                             "down: stop every node; kill/stop/start NODE: one node (SIGKILL / SIGTERM / start); "
                             "env: print the path of the clients' environment file")
    parser.add_argument("node", nargs="?", help="kill, stop, start: the node (kafka-1, cassandra-2, spark-master, "
                                                "spark-worker-1, ...)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait (SMW_CLUSTER_TIMEOUT_S)")
    args = parser.parse_args(argv)
    if (args.action in ("kill", "stop", "start")) != (args.node is not None):
        parser.error("kill, stop and start take a node; the other actions none")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cluster = Cluster()

    def act() -> int:
        if args.action == "up":
            cluster.up(args.timeout)
            print(cluster.usage())
        elif args.action == "down":
            cluster.down()
        elif args.action == "status":
            return 0 if cluster.status() else 1
        elif args.action == "kill":
            print(f"{args.node} killed (pid {cluster.kill_node(args.node)})")
        elif args.action == "stop":
            print(f"{args.node} {'stopped' if cluster.node(args.node).stop() else 'was not running'}")
        elif args.action == "start":
            print(f"{args.node} ready (pid {cluster.start_node(args.node, args.timeout)})")
        else:
            print(cluster.env_file)
        return 0

    return services.exit_status(act)


if __name__ == "__main__":
    sys.exit(main())

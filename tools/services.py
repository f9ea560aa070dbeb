"""Start, stop and inspect the local stack: Kafka (KRaft), Cassandra and reqlite.

Each service runs as a local process bound to 127.0.0.1 (hosts and ports from
`smw.config`), with its data, rendered configuration, log and pid file under
`<SMW_VAR_DIR>/<service>/`. `up` starts what is not running and waits until
each service answers a real client request; `down` stops exactly the processes
whose pid files it wrote. Only services configured on a loopback address are
started (`smw.config.Settings.is_local`): one at any other address belongs to
whoever runs that host and is left alone. `ensure` is `up` for a command that
needs the services (`make init`, the job targets): it says when it starts one,
and starts nothing when LOCAL_SERVICES=0.

    python -m tools.services up|ensure|down|status [kafka|cassandra|rethinkdb ...]
"""
from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import socket
import string
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from smw import config, jars

log = logging.getLogger(__name__)

INFRA = config.ROOT / "infra"
LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service could not be started or did not become ready."""


def _port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _render(template: Path, target: Path, **values: object) -> None:
    text = string.Template(template.read_text(encoding="utf-8")).substitute(
        {k: str(v) for k, v in values.items()}
    )
    target.write_text(text, encoding="utf-8")


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc)."""
    found, index = [pid], 0
    while index < len(found):
        try:
            for task in Path(f"/proc/{found[index]}/task").iterdir():
                found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
        index += 1
    return found


def _status_field(pid: int, name: str) -> str | None:
    """A field of /proc/<pid>/status ("State", "VmRSS"); None without such a process or field."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    except OSError:
        return None
    return None


def exited(pid: int) -> bool:
    """No such process, or only its exit status left for its parent (a zombie)."""
    state = _status_field(pid, "State")
    return state is None or state.startswith("Z")


def _rss_mib(pid: int) -> float | None:
    rss = _status_field(pid, "VmRSS")
    return int(rss.split()[0]) / 1024 if rss else None


class PidFileProcess:
    """A process this project started and tracks by a pid file (a service, a demo job).

    Subclasses give `name`, `pid_file` and `pid()`, which tells whether the process in the pid
    file is still ours; stopping signals only that process's group, never a process by name.
    """

    name: str
    pid_file: Path
    stop_timeout_s = 60.0
    stop_signal = signal.SIGTERM

    def pid(self) -> int | None:
        raise NotImplementedError

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop our process (TERM, then KILL after timeout_s); True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        stop_process_group(pid, lambda: self.pid() == pid, timeout_s or self.stop_timeout_s, self.name,
                           self.stop_signal)
        self.pid_file.unlink(missing_ok=True)
        return True


@dataclass
class Service(PidFileProcess):
    """A local service process with a pid file, a log file and a readiness probe."""

    name: str
    settings: config.Settings

    # Subclasses fill these in.
    host: str = LOOPBACK
    port: int = 0

    @property
    def home(self) -> Path:
        return Path(self.settings.var_dir) / self.name

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    # -- to override ---------------------------------------------------------
    def prepare(self) -> None:
        """Render configuration and initialise storage before a start."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def probe(self) -> None:
        """Raise unless the service answers a real client request."""
        raise NotImplementedError

    def render_config(self, template: str, target: Path, **values) -> None:
        """Write a configuration file from a template under infra/, with this service's
        host, port and data folder and the given values."""
        _render(INFRA / template, target, host=self.host, port=self.port, data_dir=self.data_dir, **values)

    # -- process handling ----------------------------------------------------
    def pid(self) -> int | None:
        """Pid from the pid file if that process is alive and is ours; else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        # A recycled pid belongs to some other program: ours always name our home.
        if str(self.home) not in cmdline or exited(pid):
            return None
        return pid

    def ready(self) -> bool:
        try:
            self.probe()
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means "not ready"
            log.debug("%s not ready: %s", self.name, exc)
            return False
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log yet)"

    def start(self) -> int:
        """Start the process (not waiting for readiness); return its pid."""
        # A process of ours that was just killed may hold its port for a moment.
        deadline = time.monotonic() + 15
        while _port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _port_open(self.host, self.port):
            raise ServiceError(
                f"{self.name}: port {self.host}:{self.port} is already in use by a process "
                f"this launcher did not start; stop it or choose another port in .env"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_file, "ab") as log_out:
            log_out.write(f"\n=== starting {self.name} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
            log_out.flush()
            process = subprocess.Popen(
                self.command(),
                stdout=log_out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                env=self.environment(),
                start_new_session=True,  # Ctrl-C in the terminal does not reach the service
            )
        self.pid_file.write_text(f"{process.pid}\n")
        # Until exec() completes the child still shows our own command line.
        deadline = time.monotonic() + 10
        while self.pid() != process.pid and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return process.pid

    def wait_ready(self, pid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() != pid:
                raise ServiceError(
                    f"{self.name} exited during start-up; last lines of {self.log_file}:\n{self.log_tail()}"
                )
            if self.ready():
                return
            time.sleep(1.0)
        raise ServiceError(
            f"{self.name} not ready after {timeout_s:.0f} s; last lines of {self.log_file}:\n{self.log_tail()}"
        )

def stop_process_group(pid: int, running, timeout_s: float, name: str, signum: int = signal.SIGTERM) -> None:
    """Send `signum` (SIGTERM) to the process group led by `pid`, SIGKILL it if `running()`
    still holds after `timeout_s`; reap it when this process is its parent."""
    os.killpg(pid, signum)
    deadline = time.monotonic() + timeout_s
    while running() and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if running():
        log.warning("%s (pid %d) ignored %s for %.0f s; killing it", name, pid, signal.Signals(signum).name,
                    timeout_s)
        os.killpg(pid, signal.SIGKILL)
        while running():
            _reap(pid)
            time.sleep(0.1)
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # started by another process: init reaps it


def new_cluster_id() -> str:
    """A random KRaft cluster id: 22 URL-safe base64 characters, never starting with '-'
    (the storage tool would read it as an option; Kafka's own Uuid.randomUuid avoids it too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Service):
    """Single-node Apache Kafka broker in KRaft mode (broker and controller in one)."""

    def __init__(self, settings: config.Settings):
        host, port = _host_port(settings.kafka_bootstrap_list[0])
        super().__init__("kafka", settings, host, port)

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    def _java(self, main_class: str, *args: str, heap: str | None = None) -> list[str]:
        cmd = ["java"]
        if heap:
            cmd += [f"-Xms{heap}", f"-Xmx{heap}"]
        cmd += [
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{INFRA / 'kafka' / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp", jars.classpath("kafka", self.settings),
            main_class, *args,
        ]
        return cmd

    def prepare(self) -> None:
        self.render_config("kafka/server.properties.template", self.properties,
                           controller_port=self.settings.kafka_controller_port,
                           partitions=self.settings.kafka_partitions)
        if (self.data_dir / "meta.properties").exists():
            return  # formatted on the first start only: formatting again would erase the log
        cluster_id = new_cluster_id()
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.properties)),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.properties), heap=self.settings.kafka_heap)

    def probe(self) -> None:
        from smw import kafka_clients

        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        # With the configured credentials: a broker that wants SASL refuses a plain metadata request.
        admin = kafka_clients.admin(self.settings.replace(kafka_bootstrap=f"{self.host}:{self.port}"),
                                    request_timeout_ms=3000, api_version_auto_timeout_ms=3000)
        try:
            admin.list_topics()  # a metadata request
        finally:
            admin.close()


class Cassandra(Service):
    """Single-node Apache Cassandra 5.0."""

    def __init__(self, settings: config.Settings):
        super().__init__("cassandra", settings, settings.cassandra_host_list[0], int(settings.cassandra_port))

    @property
    def yaml(self) -> Path:
        return self.home / "cassandra.yaml"

    def prepare(self) -> None:
        self.render_config("cassandra/cassandra.yaml.template", self.yaml,
                           storage_port=self.settings.cassandra_storage_port)

    def command(self) -> list[str]:
        jvm_options = [
            line.strip()
            for line in (INFRA / "cassandra" / "jvm.options").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        jamm = next(p for p in jars.jars("cassandra", self.settings) if p.name.startswith("jamm-"))
        heap = self.settings.cassandra_heap
        return [
            "java",
            f"-Xms{heap}", f"-Xmx{heap}",
            *jvm_options,
            f"-javaagent:{jamm}",
            f"-Dcassandra.config=file://{self.yaml}",
            f"-Dcassandra.storagedir={self.data_dir}",
            f"-Dcassandra.logdir={self.home / 'logs'}",
            f"-Dlogback.configurationFile={INFRA / 'cassandra' / 'logback.xml'}",
            "-cp", jars.classpath("cassandra", self.settings),
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def probe(self) -> None:
        from smw import cql

        logging.getLogger("cassandra").setLevel(logging.CRITICAL)
        cluster = cql.cluster(self.settings, connect_timeout_s=3, request_timeout_s=5)
        try:
            session = cluster.connect()
            session.execute("SELECT release_version FROM system.local").one()
        finally:
            cluster.shutdown()


class RethinkDB(Service):
    """reqlite, a RethinkDB-protocol server kept in memory, wrapped to bind loopback."""

    def __init__(self, settings: config.Settings):
        super().__init__("rethinkdb", settings, settings.rethinkdb_host, int(settings.rethinkdb_port))

    def command(self) -> list[str]:
        serve = INFRA / "reqlite" / "serve.js"
        if not (INFRA / "reqlite" / "node_modules" / "reqlite").is_dir():
            raise ServiceError("reqlite is not installed: run `make setup`")
        # The home path in argv marks the process as ours (see Service.pid).
        return ["node", str(serve), f"--home={self.home}"]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "RETHINKDB_BIND": self.host, "RETHINKDB_PORT": str(self.port)}

    def probe(self) -> None:
        from smw import rethink

        with rethink.connection(self.settings, timeout_s=3) as conn:
            rethink.r.db_list().run(conn)


SERVICES = {"kafka": Kafka, "cassandra": Cassandra, "rethinkdb": RethinkDB}


def select(names: list[str] | None, settings: config.Settings) -> list[Service]:
    return [SERVICES[name](settings) for name in (names or list(SERVICES))]


ADDRESS_VARIABLES = {"kafka": "KAFKA_BOOTSTRAP", "cassandra": "CASSANDRA_HOSTS", "rethinkdb": "RETHINKDB_HOST"}


def configured_address(name: str, settings: config.Settings) -> str:
    """Where the configuration says a service is, as the user wrote it."""
    return {
        "kafka": settings.kafka_bootstrap,
        "cassandra": f"{settings.cassandra_hosts} port {settings.cassandra_port}",
        "rethinkdb": f"{settings.rethinkdb_host}:{settings.rethinkdb_port}",
    }[name]


def local_only(services: list[Service]) -> list[Service]:
    """The services configured on a loopback address (the local stack's); one line for each other one,
    which this launcher never starts: it belongs to whoever runs that host."""
    local = []
    for service in services:
        if service.settings.is_local(service.name):
            local.append(service)
        else:
            print(f"{service.name:<10} at {configured_address(service.name, service.settings)} "
                  f"({ADDRESS_VARIABLES[service.name]}): not a local address, not started here")
    return local


def up(services: list[Service], timeout_s: float, on_demand: bool = False) -> None:
    """Start every service that is not running, then wait until all are ready. on_demand: started
    because a command needs it (make init, a job target), which the line about the start says."""
    running: list[tuple[Service, int, float, bool]] = []
    for service in services:
        pid = service.pid()
        already = pid is not None
        if not already:
            if on_demand and _port_open(service.host, service.port) and service.ready():
                print(f"{service.name:<10} answering on {service.host}:{service.port} (not started by make up): "
                      "using it")
                continue
            if service.pid_file.exists():
                print(f"{service.name:<10} stale pid file: the process is gone; restarting")
            pid = service.start()
            if on_demand:
                print(f"{service.name:<10} was not running on {service.host}:{service.port}: started it (pid {pid}; "
                      f"`make down` stops it, LOCAL_SERVICES=0 starts nothing), log {service.log_file}")
            else:
                print(f"{service.name:<10} started (pid {pid}), log {service.log_file}")
        running.append((service, pid, time.monotonic(), already))
    # One line per service that was already up (every `make` target that needs the stack says it).
    for service, pid, t0, already in running:
        service.wait_ready(pid, timeout_s)
        how = f"already running, pid {pid}" if already else f"{time.monotonic() - t0:.1f} s"
        print(f"{service.name:<10} ready on {service.host}:{service.port} ({how})")


def down(services: list[Service]) -> None:
    # Reverse order: clients of the others (none yet) would stop first.
    for service in reversed(services):
        pid = service.pid()
        if service.stop():
            print(f"{service.name:<10} stopped (pid {pid})")
        else:
            print(f"{service.name:<10} not running")


def status(services: list[Service]) -> bool:
    """Print one line per service; True when all are running and ready."""
    all_ready = True
    print(f"{'service':<10} {'pid':>8} {'address':<22} {'state':<10} {'rss':>9}")
    for service in services:
        pid = service.pid()
        ready = pid is not None and service.ready()
        all_ready &= ready
        state = "ready" if ready else ("starting" if pid else "stopped")
        rss = _rss_mib(pid) if pid else None
        print(
            f"{service.name:<10} {pid or '-':>8} {service.host + ':' + str(service.port):<22} {state:<10} "
            f"{f'{rss:.0f} MiB' if rss else '-':>9}"
        )
    return all_ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.services", description="Start, stop and inspect the local stack."
    )
    parser.add_argument("action", choices=["up", "ensure", "down", "status"],
                        help="up: start the services configured on loopback addresses; ensure: the same for a "
                             "command that needs them (make init, job targets), unless LOCAL_SERVICES=0")
    parser.add_argument("services", nargs="*", metavar="service",
                        help=f"any of {', '.join(SERVICES)} (default: all)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = config.load()
    services = select(args.services, settings)
    timeout_s = args.timeout or float(settings.service_timeout_s)

    def act() -> int:
        if args.action == "up":
            up(local_only(services), timeout_s)
        elif args.action == "ensure":
            mode = settings.local_services.strip().lower()
            if mode not in ("auto", "1", "0"):
                raise ServiceError(f"LOCAL_SERVICES={settings.local_services!r}: use auto (or 1) or 0")
            if mode != "0":
                up(local_only(services), timeout_s, on_demand=True)
        elif args.action == "down":
            down(services)
        else:
            return 0 if status(services) else 1
        return 0

    return exit_status(act)


def exit_status(action) -> int:
    """Run a command's `action` (no arguments): its exit status, or 1 after one `error:` line on stderr
    when it raises a ServiceError or misses a file (this module's `main` and tools.cluster's)."""
    try:
        return action()
    except (ServiceError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

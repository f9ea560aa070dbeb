"""Helpers of the cluster's fault tests (tests/cluster/test_fault_*.py).

- the clients' settings of the running cluster (`var/cluster/cluster.env`), and the environment
  of a job run against it;
- `Job`: a job or tool run as a child process in a session of its own, each line of its output
  kept with the moment it arrived, so that a test can act on what the job says (kill a node
  when the nightly starts writing) and time what happens after;
- Kafka probes (end offsets, partition leaders and in-sync replicas) and `Sampler`, which polls
  one of them in a thread and keeps what it saw, with when;
- a streaming query's checkpoint (`committed_batches`) and the landing job's committed files,
  read from the file sink's log (`_spark_metadata`), as Spark reads them;
- `whole_again`: start what a test killed and wait until the cluster is whole.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from smw import config
from tools import cluster as cluster_tool


def cluster_settings(cluster: cluster_tool.Cluster, **changes: str) -> config.Settings:
    """The settings of a client of the running cluster: the environment and `.env`, then cluster.env."""
    env = cluster_tool.read_env_file(cluster.env_file)
    assert env.get("KAFKA_SASL_USERNAME"), f"{cluster.env_file} lacks the clients' settings: run make cluster-up"
    return config.load(environ={**os.environ, **env}).replace(**changes)


def job_env(settings: config.Settings, **extra: str) -> dict[str, str]:
    """The environment of a job or tool run against `settings`: the driver on loopback (the workers
    reach 127.0.0.1), Python's output unbuffered (each log line arrives when it is written)."""
    return {**os.environ, **settings.environ(), "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1", **extra}


def python_m(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def outside_checkout(path: Path) -> Path:
    """`path`, checked to be outside the checkout: the Spark workers cannot see the checkout."""
    assert not path.resolve().is_relative_to(config.ROOT), f"{path} is inside the checkout, which the workers cannot read"
    return path


class Job:
    """A child process in a session of its own, its stdout and stderr read line by line into
    `lines` as (monotonic time of arrival, line) and copied to `log_path`. As a context manager it
    ends whatever is left of the session (SIGKILL to its process group) on exit."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path):
        self.name, self.log_path = name, log_path
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._log = open(log_path, "w", encoding="utf-8")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(command, cwd=config.ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                                     start_new_session=True)
        self.ended: float | None = None
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.monotonic()
            with self._lock:
                self.lines.append((now, line.rstrip("\n")))
            self._log.write(line)
            self._log.flush()
        self.proc.wait()
        self.ended = time.monotonic()
        self._log.close()

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> bool:
        """True while the job runs; fails with the end of its output once it has exited."""
        assert self.running, f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}"
        return True

    def tail(self, count: int = 40) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines[-count:])

    def found(self, pattern: str, after: float = 0.0) -> list[tuple[float, str]]:
        """(time, line) of every line after `after` that `pattern` (a regular expression) matches."""
        regex = re.compile(pattern)
        with self._lock:
            return [(t, line) for t, line in self.lines if t >= after and regex.search(line)]

    def wait_for(self, pattern: str, timeout_s: float, after: float = 0.0) -> tuple[float, str]:
        """The first line after `after` that `pattern` matches; fails if the job ends or time runs out first."""
        deadline = time.monotonic() + timeout_s
        while True:
            hits = self.found(pattern, after)
            if hits:
                return hits[0]
            assert self.running or self._reader.is_alive(), (
                f"{self.name} exited ({self.proc.returncode}) before saying /{pattern}/:\n{self.tail()}")
            assert time.monotonic() < deadline, f"{self.name} did not say /{pattern}/ within {timeout_s:.0f} s:\n{self.tail()}"
            time.sleep(0.05)

    def finish(self, timeout_s: float) -> int:
        """Wait until the job exits (and its output is read); its exit status."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still runs after {timeout_s:.0f} s:\n{self.tail()}") from None
        self._reader.join(30)
        return self.proc.returncode

    def stop(self, timeout_s: float = 90.0) -> int:
        """SIGTERM to the job's own process (the jobs stop their queries cleanly on it); its exit status."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish(timeout_s)

    def kill(self) -> None:
        """SIGKILL to every process left in the job's session (its JVM, Python workers)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self._reader.join(10)


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    """Poll `predicate` until it returns something true; that value. Fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(interval_s)


# ------------------------------------------------------------------ Kafka


class Kafka:
    """One consumer (end offsets) and one admin client (leaders, in-sync replicas) of a topic, each
    used by one thread at a time (kafka-python's clients are not thread-safe)."""

    def __init__(self, settings: config.Settings, topic: str):
        from kafka import TopicPartition

        from smw import kafka_clients

        self.settings, self.topic = settings, topic
        self._consumer_lock = threading.Lock()
        self._admin_lock = threading.Lock()
        self.consumer = kafka_clients.consumer(settings, request_timeout_ms=10000, api_version_auto_timeout_ms=10000)
        self.admin = kafka_clients.admin(settings, request_timeout_ms=10000)
        # A topic created a moment ago may not be in the metadata of the broker that answers yet.
        found = wait_until(self.describe, 30, f"the brokers describe topic {topic}", interval_s=0.2)
        self.partitions = [TopicPartition(topic, p) for p in sorted(found)]

    def describe(self) -> dict[int, dict]:
        """{partition: {"leader": broker id, "isr": [...], "replicas": [...]}} as the brokers report it now."""
        with self._admin_lock:
            answer = self.admin.describe_topics([self.topic])[0]
        return {p["partition"]: {"leader": p["leader"], "isr": sorted(p["isr"]), "replicas": sorted(p["replicas"])}
                for p in answer["partitions"]}

    def isr_holds(self, broker: int) -> bool:
        """Whether `broker` is in the in-sync replicas of every partition (False while the brokers
        cannot say, as when the client's connection to a broker that was just restarted fails)."""
        from kafka.errors import KafkaError

        try:
            return all(broker in d["isr"] for d in self.describe().values())
        except KafkaError:
            return False

    def end_offsets(self) -> dict[int, int]:
        with self._consumer_lock:
            answer = self.consumer.end_offsets(self.partitions)
        return {tp.partition: offset for tp, offset in answer.items()}

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


class Sampler:
    """Calls `probe` every `interval_s` in a thread and keeps (time it answered, answer); a probe that
    fails (a broker just killed) is tried again at the next interval."""

    def __init__(self, probe, interval_s: float = 0.25):
        self.probe, self.interval_s = probe, interval_s
        self.samples: list[tuple[float, object]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.probe()
            except Exception:  # noqa: BLE001 - an outage is what is being watched
                self.errors += 1
            else:
                self.samples.append((time.monotonic(), value))
            self._stop.wait(self.interval_s)

    def latest(self):
        return self.samples[-1][1] if self.samples else None

    def first(self, predicate, after: float = 0.0) -> float | None:
        """When a sample taken after `after` first satisfied `predicate` (None: not yet)."""
        for at, value in list(self.samples):
            if at >= after and predicate(value):
                return at
        return None

    def at(self, moment: float):
        """The last sample taken at or before `moment`."""
        found = None
        for at, value in list(self.samples):
            if at > moment:
                break
            found = value
        return found

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


# ------------------------------------------------------------------ streaming checkpoints, the file sink


def committed_batches(checkpoint: Path) -> dict[int, dict[str, dict[int, int]]]:
    """{batch id: {topic: {partition: end offset}}} of every batch the query committed."""
    found = {}
    commits = checkpoint / "commits"
    if not commits.is_dir():
        return found
    for entry in commits.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            lines = (checkpoint / "offsets" / entry.name).read_text().splitlines()
        except FileNotFoundError:
            continue
        # "v1", the batch's metadata, then one line per source: {"topic": {"partition": offset}}.
        offsets = json.loads(lines[2]) if len(lines) > 2 else {}
        found[int(entry.name)] = {t: {int(p): o for p, o in parts.items()} for t, parts in offsets.items()}
    return found


def sink_files(folder: Path) -> list[Path]:
    """The files a Structured Streaming file sink committed to `folder`, from its `_spark_metadata`
    log as Spark reads it: the newest `N.compact` file holds every entry up to batch N, the batch
    files after it the later ones. Part files of attempts that failed are not in it."""
    log = folder / "_spark_metadata"
    batches = {}
    for entry in log.iterdir():
        name = entry.name.removesuffix(".compact")
        if name.isdigit():
            batches.setdefault(int(name), []).append(entry)
    compacted = [b for b, entries in batches.items() if any(e.name.endswith(".compact") for e in entries)]
    first = max(compacted) if compacted else 0
    files: dict[str, str] = {}
    for batch in sorted(b for b in batches if b >= first):
        path = log / (f"{batch}.compact" if batch in compacted and batch == first else str(batch))
        lines = path.read_text().splitlines()
        assert lines and lines[0] == "v1", f"{path}: not a file sink log"
        for line in lines[1:]:
            record = json.loads(line)
            files[record["path"]] = record["action"]
    return sorted(Path(unquote(urlparse(p).path)) for p, action in files.items() if action == "add")


# ------------------------------------------------------------------ the cluster


@contextlib.contextmanager
def whole_again(cluster: cluster_tool.Cluster, figures=None, label: str = ""):
    """On exit, start every node of the cluster that is not running (as a test's fault left it) and
    wait until the cluster is whole, so that the next test finds it as the first did."""
    try:
        yield
    finally:
        for node in cluster.nodes:
            if node.pid() is None:
                started = time.monotonic()
                cluster_tool.start(node.name, cluster, timeout_s=300)
                if figures is not None:
                    figures(label, f"{node.name} started again and answering in {time.monotonic() - started:.1f} s")
        cluster.wait_whole(300)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

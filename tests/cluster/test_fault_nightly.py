"""The nightly job on the cluster's Spark master: a Cassandra node, then a Spark worker, SIGKILLed
while it runs; the job completes and its six outputs, read back from Cassandra at
CASSANDRA_CONSISTENCY (LOCAL_QUORUM in cluster.env), equal the DuckDB reference (tools/reference.py).

The job runs as `make batch` runs it (spark-submit, its code and Python shipped to the workers,
which cannot see the checkout), on generated houses outside the checkout, into the tests'
keyspace (3 replicas), emptied before each run.

- Cassandra: the node is killed a moment after the job's per-meter pass, when its seven tables
  are being written; the outputs are read back while the node is still down, then it is started
  again.
- Spark: the worker whose executor is running tasks of the per-meter pass (its shuffle files and
  cached blocks go with it) is killed; it is started again after the job.
"""
from __future__ import annotations

import datetime as dt
import subprocess
import time

import pytest

from smw import config, cql
from smw import spark as spark_builder
from tests.cluster import faults
from tests.nightly_outputs import assert_outputs_agree, cassandra_rows
from tools import cluster as cluster_tool
from tools import reference

pytestmark = [pytest.mark.cluster, pytest.mark.disruptive]

FIRST, LAST = dt.date(2024, 4, 1), dt.date(2024, 4, 2)
# 40 houses x 2 days, a mean per channel a minute: ~1.6 M readings to read, ~37,000 hourly rows
# (and the other tables) to write, at RF 3.
GENERATED = ["--houses", "40", "--days", "2", "--seed", "5", "--period-s", "60"]
WRITTEN = ("hourly_energy", "daily_energy_by_house", "daily_house_totals", "daily_house_docs",
           "daily_energy_by_appliance", "daily_energy_by_zip", "thresholds")
CASSANDRA_VICTIM = "cassandra-1"  # the first contact point of the driver and the connector
KILL_AFTER_PASS_S = 0.5  # the writes start right after the per-meter pass


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The generated houses (outside the checkout) and the reference's outputs over them."""
    out = faults.outside_checkout(tmp_path_factory.mktemp("fault-nightly")) / "generated"
    made = subprocess.run(faults.python_m("datasets.generate", *GENERATED, "--out", str(out), "--no-progress"),
                          cwd=config.ROOT, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    connection = reference.connect()
    counts = reference.nightly(connection, str(out / "readings"), str(out / "houses.parquet"), FIRST, LAST)
    return {"path": out, "reference": connection, "counts": counts}


def clear_outputs(settings: config.Settings) -> None:
    """Empty every table the nightly writes (TRUNCATE: every node must be up)."""
    handle, session = cql.connect(settings)
    try:
        for table in WRITTEN:
            session.execute(f"TRUNCATE {table}", timeout=120)
    finally:
        handle.shutdown()


def start_nightly(cluster, settings: config.Settings, dataset, log_path, ui_port: int) -> faults.Job:
    """`make batch` on the cluster's master for FIRST..LAST over the generated houses."""
    command = [spark_builder.spark_submit(), "--master", cluster.spark_master.url,
               "--conf", f"spark.ui.port={ui_port}", str(config.ROOT / "batch" / "nightly.py"),
               "--from", str(FIRST), "--to", str(LAST), "--readings", str(dataset["path"] / "readings"),
               "--houses", str(dataset["path"] / "houses.parquet")]
    env = {**faults.job_env(settings), **{k: v for k, v in spark_builder.submit_env(settings).items()
                                          if k in ("PATH", "SPARK_CONF_DIR")}}
    return faults.Job("nightly", command, env, log_path)


def assert_cassandra_equals_reference(settings: config.Settings, dataset) -> dict[str, int]:
    """Every output read back at the configured consistency, against the reference."""
    assert settings.cassandra_consistency == "LOCAL_QUORUM"
    handle, session = cql.connect(settings)
    try:
        return assert_outputs_agree(dataset["reference"], dataset["counts"],
                                    lambda table: cassandra_rows(session, table))
    finally:
        handle.shutdown()


def phases(job: faults.Job) -> dict[str, float]:
    """When the job started, finished its per-meter pass and ended (monotonic seconds)."""
    passed, _ = job.found(r"per-meter pass:")[0]
    return {"start": job.started, "pass": passed, "end": job.ended}


def nightly_through_a_kill(cluster, settings: config.Settings, dataset, tmp_path, figures, label: str, victim,
                           ui_port: int | None = None):
    """The nightly on the cluster's master, one node SIGKILLed while it runs: `victim(job)` waits for the
    moment and names the node. The job must exit 0, and its outputs, read back while the node is still
    down, equal the reference; the node is started again after that. (job, when the node was killed,
    its name, the rows compared.)"""
    clear_outputs(settings)
    with faults.whole_again(cluster, figures, label):
        with start_nightly(cluster, settings, dataset, tmp_path / "nightly.log", ui_port or faults.free_port()) as job:
            name = victim(job)
            killed = time.monotonic()
            cluster_tool.kill(name, cluster)
            assert job.finish(900) == 0, job.tail()
        assert cluster.node(name).pid() is None
        compared = assert_cassandra_equals_reference(settings, dataset)
    return job, killed, name, sum(compared.values())


def test_a_cassandra_node_killed_while_the_nightly_writes(cluster, client_settings, dataset, tmp_path, figures):
    label = "Cassandra node killed during the nightly's writes"

    def after_the_pass(job):
        job.wait_for(r"per-meter pass:", 900)
        time.sleep(KILL_AFTER_PASS_S)
        job.check()
        return CASSANDRA_VICTIM

    job, killed, victim, compared = nightly_through_a_kill(cluster, client_settings, dataset, tmp_path, figures,
                                                           label, after_the_pass)
    written_after = job.found(r" written in ", after=killed)
    assert written_after, f"every table was written before the kill:\n{job.tail()}"
    times = phases(job)
    figures(label, f"{victim} SIGKILLed {killed - times['pass']:.1f} s after the per-meter pass, {len(written_after)} "
                   f"of {len(WRITTEN)} tables still being written; the first of them written "
                   f"{written_after[0][0] - killed:.1f} s after the kill, the last (the job done) "
                   f"{times['end'] - killed:.1f} s after it; the job {times['end'] - times['start']:.1f} s in all; "
                   f"{compared:,} rows read back at LOCAL_QUORUM with the node down = reference")


def executors(ui_port: int) -> list[dict]:
    """The job's executors as its driver's REST API lists them (none until the UI answers)."""
    try:
        apps = cluster_tool.http_json(f"http://127.0.0.1:{ui_port}/api/v1/applications")
        return cluster_tool.http_json(f"http://127.0.0.1:{ui_port}/api/v1/applications/{apps[0]['id']}/executors")
    except (OSError, ValueError, IndexError, KeyError):
        return []


def test_a_spark_worker_killed_mid_nightly(cluster, client_settings, dataset, tmp_path, figures):
    label = "Spark worker killed mid-nightly"
    ui_port = faults.free_port()
    workers = {worker.host: worker.name for worker in cluster.spark_workers}
    executor = {}

    def busy_worker(job):
        """Mid-pass: tasks done already, and a worker's executor running others; that worker."""
        nonlocal executor

        def running_executor():
            job.check()
            listed = [e for e in executors(ui_port) if e["id"] != "driver"]
            if sum(e["completedTasks"] for e in listed) < 2:
                return None
            running = [e for e in listed if e["activeTasks"] > 0 and e["hostPort"].split(":")[0] in workers]
            return running[0] if running else None

        executor = faults.wait_until(running_executor, 600, "an executor runs tasks of the per-meter pass", 0.1)
        return workers[executor["hostPort"].split(":")[0]]

    job, killed, victim, compared = nightly_through_a_kill(cluster, client_settings, dataset, tmp_path, figures,
                                                           label, busy_worker, ui_port)
    passed = job.found(r"per-meter pass:")
    assert passed and passed[0][0] > killed, "the per-meter pass was over before the kill"
    lost = job.found(r"Lost executor|Lost task|FetchFailed|Resubmitt")
    times = phases(job)
    figures(label, f"{victim} SIGKILLed {killed - times['start']:.1f} s into the job, its executor running "
                   f"{executor['activeTasks']} task(s) of the per-meter pass ({len(lost)} lines of the driver about "
                   f"lost executors, tasks or shuffle files); the pass done {times['pass'] - killed:.1f} s after the "
                   f"kill, the job {times['end'] - killed:.1f} s after it, {times['end'] - times['start']:.1f} s in "
                   f"all; {compared:,} rows = reference")

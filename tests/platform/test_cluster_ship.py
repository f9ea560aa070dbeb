"""The nightly job on a Spark standalone master whose worker cannot read this checkout.

A throwaway master and one worker (2 cores) on loopback, from a copy of pyspark's Spark home
outside the checkout; the worker runs in a mount namespace where the checkout is an empty
tmpfs, so its executors have only what the driver ships them (smw.ship: the code zip, the
venv-pack archive, the connector jars of spark.jars). The same generated input goes through
`spark-submit --master local[2]` and through the standalone master into two scratch keyspaces,
and every table the job writes must hold the same rows.

Needs root (unshare, mount) and the local Cassandra; marked `cluster` (not in `make test`):
    .venv/bin/python -m pytest -m cluster tests/platform/test_cluster_ship.py -s
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from smw import config, cql
from smw import spark as spark_builder

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

KEYSPACES = {"cluster": "smw_ship", "local": "smw_ship_local"}
FIRST_DAY, LAST_DAY = "2024-04-01", "2024-04-03"
# Columns that say when a row was computed, not what: they differ between any two runs.
RUN_COLUMNS = {"computed_at"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group we started (the worker's executors are in it), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_for_worker(ui_port: int, timeout_s: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as answer:
                state = json.load(answer)
            if state.get("aliveworkers", 0) >= 1:
                return state
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no worker registered with the master within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """spark://127.0.0.1:<port> with one 2-core worker that cannot see the checkout."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the standalone test needs root and unshare (util-linux) to hide the checkout from the worker")
    base = tmp_path_factory.mktemp("standalone")
    assert not base.resolve().is_relative_to(config.ROOT), "the worker's files must live outside the checkout"
    home = base / "spark-home"
    source = Path(spark_builder.spark_home())
    for part in ("bin", "sbin", "jars"):
        try:  # hard links: the same files, reachable by a path outside the checkout
            shutil.copytree(source / part, home / part, copy_function=os.link)
        except OSError:
            shutil.rmtree(home / part, ignore_errors=True)
            shutil.copytree(source / part, home / part)
    (base / "conf").mkdir()
    port, ui_port, worker_ui_port = free_port(), free_port(), free_port()
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(base),
           "SPARK_HOME": str(home), "SPARK_CONF_DIR": str(base / "conf"), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(base / "logs"), "SPARK_WORKER_DIR": str(base / "work")}
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    spark_class = str(home / "bin" / "spark-class")
    master = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(ui_port)],
        env=env, cwd=base, stdout=open(base / "master.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    hide = f'mount -t tmpfs none "{config.ROOT}" && exec "$@"'
    worker = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh",
         spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--webui-port",
         str(worker_ui_port), "--cores", "2", "--memory", "2g", "--work-dir", str(base / "work"),
         f"spark://127.0.0.1:{port}"],
        env=env, cwd=base, stdout=open(base / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_worker(ui_port)
        yield {"url": f"spark://127.0.0.1:{port}", "worker": worker, "base": base}
    finally:
        stop_group(worker)
        stop_group(master)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """4 REDD-like houses x 3 days, a reading a minute per meter (~350k readings), outside the checkout."""
    out = tmp_path_factory.mktemp("generated") / "gen"
    subprocess.run([spark_builder.sys.executable, "-m", "datasets.generate", "--houses", "4", "--days", "3",
                    "--seed", "3", "--period-s", "60", "--out", str(out), "--no-progress"],
                   cwd=config.ROOT, check=True, capture_output=True)
    return out


def keyspace_tables(session, keyspace: str) -> list[str]:
    rows = session.execute("SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,))
    return sorted(row.table_name for row in rows)


def table_rows(session, keyspace: str, table: str) -> list[tuple]:
    result = session.execute(f"SELECT * FROM {keyspace}.{table}")
    names = [name for name in result.column_names if name not in RUN_COLUMNS]
    return sorted((tuple(row._asdict()[name] for name in names) for row in result), key=repr)


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def run_nightly(master: str, keyspace: str, generated: Path, log: Path) -> float:
    settings = config.load().replace(cassandra_keyspace=keyspace)
    env = {**spark_builder.submit_env(settings), **settings.environ(), "SPARK_LOCAL_IP": "127.0.0.1"}
    command = [spark_builder.spark_submit(), "--master", master, str(config.ROOT / "batch" / "nightly.py"),
               "--from", FIRST_DAY, "--to", LAST_DAY, "--readings", str(generated / "readings"),
               "--houses", str(generated / "houses.parquet")]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=config.ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-5000:]
    return seconds


def test_the_nightly_on_a_worker_without_the_checkout_equals_local(standalone, generated, tmp_path):
    settings = config.load()
    handle, session = cql.connect(settings, keyspace=False)
    try:
        for keyspace in KEYSPACES.values():
            cql.apply_schema(session, settings.replace(cassandra_keyspace=keyspace))
            for table in keyspace_tables(session, keyspace):
                session.execute(f"TRUNCATE {keyspace}.{table}", timeout=60)

        # The worker really cannot read the checkout: its root shows an empty folder there.
        hidden = Path(f"/proc/{standalone['worker'].pid}/root") / config.ROOT.relative_to("/")
        assert hidden.is_dir() and not any(hidden.iterdir())

        local_s = run_nightly("local[2]", KEYSPACES["local"], generated, tmp_path / "local.log")
        cluster_s = run_nightly(standalone["url"], KEYSPACES["cluster"], generated, tmp_path / "cluster.log")
        print(f"\nnightly {FIRST_DAY}..{LAST_DAY}, same input: local[2] {local_s:.1f} s, "
              f"standalone (1 worker, 2 cores, shipped code and environment) {cluster_s:.1f} s")

        # Its executor ran the shipped interpreter from the unpacked archive, in its own work folder.
        executor_logs = list((standalone["base"] / "work").glob("app-*/*/stderr"))
        assert executor_logs, "the standalone run had no executor"
        said = executor_logs[-1].read_text(errors="replace")
        assert "Unpacking an archive" in said and "#environment" in said
        assert list((standalone["base"] / "work").glob("app-*/*/environment/bin/python"))

        compared = 0
        for table in keyspace_tables(session, KEYSPACES["local"]):
            local_rows = table_rows(session, KEYSPACES["local"], table)
            cluster_rows = table_rows(session, KEYSPACES["cluster"], table)
            assert len(local_rows) == len(cluster_rows), table
            assert all(same(a, b) for a, b in zip(local_rows, cluster_rows)), table
            compared += bool(local_rows)
        assert compared >= 6, "the job wrote fewer tables than expected"
    finally:
        handle.shutdown()


def test_the_landing_job_runs_as_python_m_on_the_worker_without_the_checkout(standalone, topic, tmp_path_factory):
    """`make land-once SPARK_MASTER=spark://...`: the driver is `python -m ingest.land`, which launches its own
    JVM; the executors read Kafka and write the raw zone from the shipped code and environment."""
    import pyarrow.dataset as pads

    data_dir = tmp_path_factory.mktemp("landing") / "data"
    settings = config.load().replace(kafka_topic=topic, data_dir=str(data_dir), spark_master=standalone["url"])
    env = {**os.environ, **settings.environ(), "SPARK_LOCAL_IP": "127.0.0.1"}
    produced = subprocess.run(
        [spark_builder.sys.executable, "-m", "ingest.replay", "--no-progress", "--source", "synthetic", "--houses",
         "2", "--days", "1", "--period-s", "60", "--seed", "9"],
        cwd=config.ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert produced.returncode == 0, produced.stderr[-3000:]
    readings = int(produced.stdout.split(" readings in ")[0].replace(",", "").split()[-1])

    started = time.perf_counter()
    landed = subprocess.run([spark_builder.sys.executable, "-m", "ingest.land", "--once"], cwd=config.ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    print(f"\nlanding {readings:,} readings through the standalone master (python -m): "
          f"{time.perf_counter() - started:.1f} s")
    assert landed.returncode == 0, landed.stderr[-5000:]
    raw = pads.dataset(str(data_dir / "landing" / "zone=raw"), format="parquet", partitioning="hive")
    assert raw.count_rows() == readings
    apps = sorted((standalone["base"] / "work").glob("app-*"), key=lambda p: p.stat().st_mtime)
    assert list(apps[-1].glob("*/environment/bin/python")), "the landing executors did not get the environment"

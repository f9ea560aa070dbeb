"""The README's "pipeline, step by step" works as written: its commands, read from the
README itself and run at a small scale in a namespace of their own, take generated houses
through Kafka, the raw zone and the nightly job, and the alert job then raises live alerts
on the user's own data, which the web app serves to the admin the README creates, signed in
with the password the command printed."""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

from smw import config, rethink
from smw.alert import RETHINKDB_TABLE
from tools.server import sign_in

pytestmark = pytest.mark.integration

HOUSES, DAYS = 3, 2
# A laptop-sized run, made test-sized: fewer houses and days, and spikes often enough to
# see one within a minute. Each replacement must find its text: the README is the subject.
SMALLER = [("--houses 20", f"--houses {HOUSES}"), ("--days 14", f"--days {DAYS}"),
           ("--to 2024-04-14", f"--to 2024-04-0{DAYS}"), ("--spikes-per-house-day 24", "--spikes-per-house-day 1440")]


def readme_blocks() -> list[list[str]]:
    """The commands of each shell block of the step-by-step section (comments dropped)."""
    text = (config.ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The pipeline, step by step", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [[re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()
             if line.strip() and not line.startswith((" ", "#"))] for block in blocks]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def background(command: str, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(command, shell=True, cwd=config.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen) -> int:
    """Ctrl-C, as in a terminal: SIGINT to the command's process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def test_the_step_by_step_section_runs_and_raises_live_alerts(settings, kafka_ready, cassandra_session,
                                                              rethinkdb_ready, tmp_path):
    steps, live = readme_blocks()
    commands = []
    for command in steps + live:
        for old, new in SMALLER:
            command = command.replace(old, new)
        commands.append(command.replace("var/gen", str(tmp_path / "gen")))
    assert [c.split()[:2] for c in commands] == [
        [".venv/bin/python", "-m"], ["make", "houses"], ["make", "replay"], ["make", "land-once"],
        ["make", "batch"], ["make", "stream"], [".venv/bin/flask", "--app"], ["make", "web"], ["make", "replay"]]
    namespace = f"smw_readme_{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {**os.environ, "KAFKA_TOPIC": f"readme-{namespace}", "CASSANDRA_KEYSPACE": namespace,
           "RETHINKDB_DB": namespace, "DATA_DIR": str(tmp_path / "data"), "SMW_WEB_PORT": str(port)}
    own = settings.replace(cassandra_keyspace=namespace, rethinkdb_db=namespace)
    for command in commands[:5]:
        done = subprocess.run(command, shell=True, cwd=config.ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    limits = cassandra_session.execute(f"SELECT count(*) FROM {namespace}.thresholds").one()[0]
    assert limits > 10 * HOUSES

    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("stream", "web", "live")}
    running = {}
    try:
        running["stream"] = background(commands[5], env, logs["stream"])
        deadline = time.monotonic() + 180
        while " started (id " not in (tmp_path / "stream.log").read_text() and time.monotonic() < deadline:
            time.sleep(1)
        made = subprocess.run(commands[6], shell=True, cwd=config.ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert made.returncode == 0, f"{commands[6]}\n{made.stdout}\n{made.stderr}"
        password = re.search(r"password \(shown once\): (\S+)", made.stdout).group(1)
        running["web"] = background(commands[7], env, logs["web"])
        started = time.time()
        running["live"] = background(commands[8], env, logs["live"])
        found = []
        with rethink.connection(own) as conn:
            while not found and time.monotonic() < deadline + 240:
                found = list(rethink.r.db(namespace).table(RETHINKDB_TABLE)
                             .filter(rethink.r.row["start_ts_s"] >= started - 120).run(conn))
                time.sleep(2)
        assert found, (tmp_path / "stream.log").read_text()[-3000:]
        cookie = sign_in(f"http://127.0.0.1:{port}", "admin", password)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/houses", headers={"Cookie": cookie})
        houses = json.load(urllib.request.urlopen(request, timeout=30))
        assert len(houses["houses"]) == HOUSES
    finally:
        for process in running.values():
            stop(process)
        for log in logs.values():
            log.close()
        from smw.init import delete_topic

        delete_topic(kafka_ready, env["KAFKA_TOPIC"])
    # Each long-running command stops cleanly on Ctrl-C (make itself then dies of the signal).
    assert "alert job stopped" in (tmp_path / "stream.log").read_text()
    for name in ("stream", "live", "web"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text(), name

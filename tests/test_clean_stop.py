"""Ctrl-C (SIGINT to the terminal's process group) and SIGTERM stop a streaming job within a
few seconds: exit status 0, no traceback, the job's own line saying it stopped."""
import os
import signal
import subprocess
import sys
import time

import pytest

from smw import config

pytestmark = pytest.mark.integration

STARTED = {"ingest.land": "landing topic", "streaming.alerts": "alerting on topic"}


def start(module: str, settings, topic: str, tmp_path) -> subprocess.Popen:
    env = {**os.environ, **settings.replace(kafka_topic=topic, data_dir=str(tmp_path / "data")).environ(),
           "SPARK_LOG_LEVEL": "WARN"}
    # A session of its own: the signal goes to the whole group, as a terminal's Ctrl-C does.
    return subprocess.Popen([sys.executable, "-m", module, "--trigger", "1 second"], cwd=config.ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(process: subprocess.Popen, text: str, timeout_s: float) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    pytest.fail(f"{text!r} not seen:\n{''.join(lines)}")


@pytest.mark.parametrize("module, signum", [("ingest.land", signal.SIGINT), ("streaming.alerts", signal.SIGINT),
                                            ("ingest.land", signal.SIGTERM)])
def test_a_signal_stops_the_job_cleanly(module, signum, settings, kafka_ready, cassandra_session, rethinkdb_ready,
                                        topic, tmp_path):
    process = start(module, settings, topic, tmp_path)
    try:
        lines = wait_for(process, STARTED[module], 120)
        time.sleep(3)  # a few empty micro-batches
        sent = time.monotonic()
        os.killpg(process.pid, signum)
        rest, _ = process.communicate(timeout=30)
        stopped_s = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    for sign in ("Traceback", "Py4JError", "You hit a bug", "reentrant call"):
        assert sign not in output, output
    assert "stopped" in rest and stopped_s < 15, (stopped_s, output)

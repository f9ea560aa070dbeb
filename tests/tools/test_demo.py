"""End to end at a tiny scale: `python -m tools.demo start`, then check every layer's output.

generate -> Kafka -> landing -> nightly batch -> Cassandra equals the DuckDB reference
computed from the generated history; the live day's injected spikes raise alerts that
reach RethinkDB and the web app's SSE stream; the dashboard answers with data to the
demo's admin, and a household signs in with the password the demo wrote; `stop` leaves
none of the demo's processes behind.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from datasets import generator
from smw import cql, rethink
from tools.demo import ACCOUNTS_FILE, JOBS, Job, demo_today
from tools.server import sign_in
from smw.init import delete_topic

pytestmark = pytest.mark.integration

NAMESPACE = "smw_e2e"
HOUSES, DAYS, PERIOD_S, SEED = 3, 2, 60.0, 7


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, kafka_ready, cassandra_session, rethinkdb_ready):
    home = tmp_path_factory.mktemp("demo")
    port = free_port()
    topic = f"smw-e2e-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, CASSANDRA_KEYSPACE=NAMESPACE, RETHINKDB_DB=NAMESPACE)
    command = [sys.executable, "-m", "tools.demo", "--home", str(home), "start", "--houses", str(HOUSES),
               "--days", str(DAYS), "--period-s", str(PERIOD_S), "--seed", str(SEED), "--speed", "60",
               "--live-spikes", "96", "--port", str(port), "--topic", topic, "--namespace", NAMESPACE,
               "--alert-timeout-s", "240"]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    info = {"home": home, "port": port, "url": f"http://127.0.0.1:{port}", "topic": topic, "env": env,
            "output": started.stdout + started.stderr, "returncode": started.returncode}
    try:
        yield info
    finally:
        subprocess.run([sys.executable, "-m", "tools.demo", "--home", str(home), "stop"], env=env, timeout=120)
        delete_topic(kafka_ready, topic)


@pytest.fixture(scope="module")
def e2e_settings(settings):
    return settings.replace(cassandra_keyspace=NAMESPACE, rethinkdb_db=NAMESPACE)


def accounts_of(demo) -> dict:
    return json.loads((demo["home"] / ACCOUNTS_FILE).read_text())


def get(url: str, token: str | None = None, cookie: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {"Cookie": cookie} if cookie else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    with response:
        return response.status, response.read()


def test_demo_starts_and_prints_where_to_look(demo):
    assert demo["returncode"] == 0, demo["output"][-3000:]
    assert demo["url"] in demo["output"]
    for name in JOBS:
        assert Job(demo["home"], name).pid() is not None, f"{name} is not running"


def test_daily_kwh_in_cassandra_equal_the_reference(demo, e2e_settings):
    from tools import reference

    assert demo["returncode"] == 0, demo["output"][-3000:]
    history = demo["home"] / "history"
    first = demo_today() - dt.timedelta(days=DAYS)
    last = demo_today() - dt.timedelta(days=1)
    expected = reference.daily_energy(reference.connect(), str(history / "readings"), str(history / "houses.parquet"),
                                      first, last, mains_cap_s=1.5 * PERIOD_S, circuit_cap_s=1.5 * PERIOD_S)
    assert len(expected) > HOUSES * DAYS * 5
    handle, session = cql.connect(e2e_settings)
    try:
        statement = session.prepare("SELECT energy_kwh FROM daily_energy_by_house WHERE house_id = ? AND day = ? "
                                    "AND meter = ?")
        for house_id, meter, day, energy_kwh, _samples in expected:
            rows = list(session.execute(statement, (house_id, day, meter)))
            assert rows, f"no daily kWh for {house_id} meter {meter} on {day}"
            assert rows[0].energy_kwh == pytest.approx(energy_kwh, rel=1e-9, abs=1e-12)
    finally:
        handle.shutdown()


def live_spikes(not_before_ts_s: float) -> list:
    """Ground truth of today's replayed spikes (the demo's live day, regenerated)."""
    source = generator.Generator(generator.GeneratorConfig(
        HOUSES, 3, SEED, spikes_per_house_day=96, start_date=(demo_today() - dt.timedelta(days=1)).isoformat(),
        period_s=PERIOD_S))
    return [s for plan in source.plans for day in range(3) for s in source.house_day(plan, day).spikes
            if s.start_ts_s + s.duration_s >= not_before_ts_s - 3600]


def test_injected_spikes_raise_alerts_in_rethinkdb_and_on_the_sse_stream(demo, e2e_settings):
    assert demo["returncode"] == 0, demo["output"][-3000:]
    with rethink.connection(e2e_settings) as conn:
        alerts = list(rethink.r.db(NAMESPACE).table("alerts").filter({"kind": "overshoot"}).run(conn))
    assert alerts
    earliest = min(a["start_ts_s"] for a in alerts)
    spikes = live_spikes(earliest)
    matched = [a for a in alerts if any(
        s.house_id == a["house_id"] and s.meter == a["meter"]
        and a["start_ts_s"] <= s.start_ts_s + s.duration_s + PERIOD_S
        and (a["end_ts_s"] or a["start_ts_s"]) >= s.start_ts_s - PERIOD_S for s in spikes)]
    assert matched, f"none of {len(alerts)} alerts is on an injected spike"

    alert = matched[0]
    url = f"{demo['url']}/alerts/stream?house_id={alert['house_id']}"
    seen = set()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {accounts_of(demo)['admin_api_token']}"})
    with urllib.request.urlopen(request, timeout=30) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data: "):
                seen.add(json.loads(line[6:])["id"])
            if line == ": ready" or alert["id"] in seen:
                break
    assert alert["id"] in seen


def test_dashboard_pages_answer_with_data(demo):
    assert demo["returncode"] == 0, demo["output"][-3000:]
    token = accounts_of(demo)["admin_api_token"]
    assert get(f"{demo['url']}/api/overview")[0] == 401  # nothing without credentials
    status, body = get(f"{demo['url']}/api/overview", token)
    overview = json.loads(body)
    assert status == 200 and len(overview["houses"]) == HOUSES
    assert all(h["mains_kwh"] and h["mains_kwh"] > 0 for h in overview["houses"]), overview["houses"]
    house_id = overview["houses"][0]["house_id"]
    first = (demo_today() - dt.timedelta(days=DAYS)).isoformat()
    last = (demo_today() - dt.timedelta(days=1)).isoformat()
    status, body = get(f"{demo['url']}/api/houses/{house_id}/daily?from={first}&to={last}", token)
    assert status == 200 and json.loads(body)["days"]
    for path in ("/", f"/houses/{house_id}", "/alerts", "/zips", "/appliances/refrigerator"):
        status, body = get(demo["url"] + path, token)
        assert status == 200 and b"<html" in body.lower()


def test_households_sign_in_with_the_written_passwords_and_see_only_their_houses(demo):
    assert demo["returncode"] == 0, demo["output"][-3000:]
    path = demo["home"] / ACCOUNTS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"{demo['url']}/login" in demo["output"] and str(path) in demo["output"]
    users = {u["username"]: u for u in accounts_of(demo)["users"]}
    assert users["admin"]["role"] == "admin" and set(users) == {"admin", "household-1", "household-2"}
    assert users["household-1"]["password"] not in demo["output"]
    first, second = users["household-1"], users["household-2"]
    assert first["houses"] and second["houses"] and not set(first["houses"]) & set(second["houses"])
    cookie = sign_in(demo["url"], first["username"], first["password"])
    status, body = get(f"{demo['url']}/houses/{first['houses'][0]}", cookie=cookie)
    assert status == 200 and first["houses"][0].encode() in body
    assert get(f"{demo['url']}/houses/{second['houses'][0]}", cookie=cookie)[0] == 403
    assert get(f"{demo['url']}/", cookie=cookie)[0] == 403
    status, body = get(f"{demo['url']}/api/houses", cookie=cookie)
    assert [h["house_id"] for h in json.loads(body)["houses"]] == first["houses"]
    assert sign_in(demo["url"], "admin", users["admin"]["password"])


def test_stop_leaves_no_process_behind(demo):
    pids = [Job(demo["home"], name).pid() for name in JOBS]
    subprocess.run([sys.executable, "-m", "tools.demo", "--home", str(demo["home"]), "stop"], env=demo["env"],
                   check=True, timeout=120)
    for name in JOBS:
        assert Job(demo["home"], name).pid() is None
    for pid in pids:
        if pid is not None:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", demo["port"])) != 0, "the web port still answers"

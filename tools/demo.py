"""The whole lambda pipeline on one machine: history, nightly batch, live alerts, dashboard.

    python -m tools.demo start [--houses 50] [--days 14] [--speed 60] [--port 8000]
    python -m tools.demo status
    python -m tools.demo stop

`make demo` runs `make setup` and then `start`, which:

1. starts the local services (`make up`) and meanwhile generates `--days` days of
   history for `--houses` REDD-derived houses, ending yesterday, at one mean reading
   per channel and `--period-s` (like meters that report once a minute; the REDD
   rates would be ~0.7 M readings per house-day);
2. starts the landing job and replays the history through Kafka into the raw zone,
   waiting until every reading has landed; meanwhile the alert job (from the latest
   offsets, so history is not alerted on), the web app and the notifier start;
3. registers the houses and runs the nightly batch over those days (daily kWh,
   rollups, thresholds into Cassandra);
4. makes an admin and two household users (each granted some of the houses), with
   generated passwords and an admin API token in <home>/accounts.json (mode 0600);
5. replays today's last `--catch-up-hours` at `--speed` x real time, then goes on in
   real time (so the live power graph is live), with injected spikes, and waits for
   the first alert.

Everything runs in the background with logs and pid files under var/demo/; `stop`
stops exactly those processes (by pid). The local services are left to `make down`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from smw import config
from smw import spark as spark_builder
from smw.alert import RETHINKDB_TABLE
from tools.server import make_user
from tools.services import PidFileProcess

DEMO_TOPIC = "smw-demo-readings"
DEMO_NAMESPACE = "smw_demo"
JOBS = ("land", "alerts", "web", "notify", "live")
ACCOUNTS_FILE = "accounts.json"
HOUSES_PER_HOUSEHOLD = 2


def demo_today() -> dt.date:
    """The day that has begun for every house, whatever its zone (the earliest date on Earth,
    UTC-12): the history ends the day before it, so no house's history lies in its future
    (producers quarantine such readings) after this machine's midnight."""
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=12)).date()


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/<pid>/stat field 22): tells a recycled pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Job(PidFileProcess):
    """A background process of the demo: its own session, a log file and a pid file under var/demo/."""

    stop_timeout_s = 30.0
    # Ctrl-C, as in a terminal: the Spark jobs' JVMs (launched by pyspark) ignore it, so the
    # driver stops its queries and exits cleanly; SIGTERM would end the JVM under the driver.
    stop_signal = signal.SIGINT

    def __init__(self, home: Path, name: str):
        self.name = name
        self.pid_file = home / "pids" / f"{name}.pid"
        self.log_file = home / "logs" / f"{name}.log"

    def pid(self) -> int | None:
        """The pid if the process we started is still alive (same pid and start time)."""
        try:
            pid_text, ticks = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        state = None
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None
        if _start_ticks(pid) != ticks or state == "Z":
            return None
        return pid

    def start(self, command: list[str], env: dict[str, str]) -> int:
        if self.pid() is not None:
            raise DemoError(f"{self.name} is already running (pid {self.pid()}); `make demo-stop` first")
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(command)}\n".encode())
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=config.ROOT, env=env, start_new_session=True)
        self.pid_file.write_text(f"{process.pid} {_start_ticks(process.pid)}\n")
        return process.pid

    def tail(self, lines: int = 30) -> str:
        return tail(self.log_file, lines)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Demo:
    """Steps of `start`, with the settings, paths and environment they share."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.home = Path(args.home)
        # The demo's data lives apart from the pipeline's own: its topic, keyspace, RethinkDB
        # database and data folder.
        self.settings = config.load().replace(kafka_topic=args.topic, data_dir=str(self.home / "data"),
                                              cassandra_keyspace=args.namespace, rethinkdb_db=args.namespace)
        self.env = dict(os.environ)
        self.env.update({"KAFKA_TOPIC": self.settings.kafka_topic, "DATA_DIR": self.settings.data_dir,
                         "CASSANDRA_KEYSPACE": args.namespace, "RETHINKDB_DB": args.namespace,
                         # The Spark jobs run as python -m; their JVM reads its logging setup here.
                         "SPARK_CONF_DIR": str(spark_builder.spark_conf_dir(self.settings)),
                         "SMW_WEB_PORT": str(args.port), "SPARK_LOCAL_IP": self.env.get("SPARK_LOCAL_IP", "127.0.0.1"),
                         "PYTHONPATH": str(config.ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        self.today = demo_today()
        self.first_day = self.today - dt.timedelta(days=args.days)
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------ helpers
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {text}", flush=True)

    def job(self, name: str) -> Job:
        return Job(self.home, name)

    def python(self, *args: str) -> list[str]:
        return [sys.executable, "-m", *args]

    def spark_submit(self, script: str, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "spark-submit"), script, *args]

    def run(self, name: str, command: list[str]) -> None:
        """A foreground step; its output goes to var/demo/logs/<name>.log."""
        log_file = self.home / "logs" / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(command)}\n".encode())
            out.flush()
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=config.ROOT, env=self.env)
        if result.returncode != 0:
            raise DemoError(f"{name} failed (exit {result.returncode}); last lines of {log_file}:\n{tail(log_file)}")

    def wait_for(self, what: str, check, timeout_s: float, jobs: tuple[str, ...] = ()) -> object:
        """Poll `check()` until it returns something truthy; fail early if one of `jobs` died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            for name in jobs:
                job = self.job(name)
                if job.pid() is None:
                    raise DemoError(f"{name} stopped while waiting for {what}; last lines of {job.log_file}:\n"
                                    f"{job.tail()}")
            time.sleep(1.0)
        raise DemoError(f"no {what} after {timeout_s:.0f} s; see the logs in {self.home / 'logs'}")

    # ------------------------------------------------------------------ steps
    def clean(self) -> None:
        """A fresh demo: no old history, raw zone, checkpoints or logs."""
        for name in JOBS:
            if self.job(name).pid() is not None:
                raise DemoError(f"a demo is running ({name}); `make demo-stop` first")
        for sub in ("data", "history", "logs"):
            shutil.rmtree(self.home / sub, ignore_errors=True)

    def services_up(self) -> subprocess.Popen:
        """`python -m tools.services up` in the background (idempotent); the history is generated meanwhile."""
        log_file = self.home / "logs" / "services.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            return subprocess.Popen(self.python("tools.services", "up"), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=config.ROOT, env=self.env)

    def init(self, services: subprocess.Popen) -> None:
        """Wait for the services, empty the demo topic, create topics, tables and indexes."""
        if services.wait() != 0:
            raise DemoError(f"the local services did not start:\n{tail(self.home / 'logs' / 'services.log')}")
        from smw.init import delete_topic

        if delete_topic(self.settings, self.settings.kafka_topic):
            time.sleep(2)  # Kafka deletes in the background before the topic can be created again
        self.run("init", self.python("smw.init"))

    def generate(self) -> int:
        self.say(f"generating {self.args.houses} houses x {self.args.days} days "
                 f"({self.first_day} .. {self.today - dt.timedelta(days=1)}), one reading per channel per "
                 f"{self.args.period_s:g} s")
        self.run("generate", self.python("datasets.generate", "--houses", str(self.args.houses),
                                         "--days", str(self.args.days), "--seed", str(self.args.seed),
                                         "--start-date", self.first_day.isoformat(),
                                         "--period-s", str(self.args.period_s), "--spikes-per-house-day", "0",
                                         "--out", str(self.home / "history"), "--no-progress"))
        manifest = json.loads((self.home / "history" / "manifest.json").read_text())
        return int(manifest["summary"]["readings"])

    def start_landing(self) -> None:
        self.say("starting the landing job")
        self.job("land").start(self.python("ingest.land", "--trigger", "5 seconds"), self.env)

    def land_history(self, readings: int) -> None:
        self.say("replaying the history through Kafka")
        self.run("replay-history", self.python("ingest.replay", "--source",
                                               f"parquet:{self.home / 'history' / 'readings'}", "--no-progress"))
        self.start_live_jobs()  # from the latest offsets: after the history, so it sees only live readings
        self.say(f"{readings:,} readings in Kafka; waiting until all have landed in the raw zone")
        counted: dict[Path, int] = {}
        self.wait_for("fully landed history", lambda: landed_rows(self.settings, counted) >= readings, 600,
                      jobs=("land",))

    def nightly(self) -> None:
        self.say("registering houses; running the nightly batch over the history")
        self.run("houses", self.python("batch.houses", str(self.home / "history" / "houses.parquet")))
        cap = str(1.5 * self.args.period_s)
        self.run("nightly", self.spark_submit("batch/nightly.py", "--from", self.first_day.isoformat(),
                                              "--to", (self.today - dt.timedelta(days=1)).isoformat(),
                                              "--mains-cap-s", cap, "--circuit-cap-s", cap))

    def start_live_jobs(self) -> None:
        """The alert job and the web app start while the history lands and the nightly batch
        runs; the alert job re-reads the thresholds every 5 s, so it picks up the nightly's
        as soon as they are written."""
        self.say("starting the alert job, the web app and the notifier")
        self.job("alerts").start(self.python(
            "streaming.alerts", "--starting-offsets", "latest", "--threshold-refresh-s", "5"), self.env)
        self.job("web").start(self.python("webapp", "--port", str(self.args.port)), self.env)
        self.job("notify").start(self.python("webapp.notify"), self.env)

    def accounts(self) -> dict:
        """An admin and two households, each granted some of the houses, with generated passwords;
        written with an admin API token to <home>/accounts.json, readable by this user only."""
        import pyarrow.parquet as pq

        houses = sorted(pq.read_table(self.home / "history" / "houses.parquet", columns=["house_id"])
                        .column("house_id").to_pylist())
        users = [("admin", "admin", [])]
        for n in (1, 2):
            share = houses[(n - 1) * HOUSES_PER_HOUSEHOLD:n * HOUSES_PER_HOUSEHOLD] or houses[-1:]
            users.append((f"household-{n}", "household", share))
        made = {"url": f"http://127.0.0.1:{self.args.port}/login", "users": []}
        for name, role, granted in users:
            password = secrets.token_urlsafe(12)
            _name, token = make_user(self.settings, role, granted, password=password, name=name)
            made["users"].append({"username": name, "password": password, "role": role, "houses": granted})
            if role == "admin":
                made["admin_api_token"] = token
        path = self.home / ACCOUNTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(handle, 0o600)  # also when the file was there before
        with os.fdopen(handle, "w") as out:
            json.dump(made, out, indent=2)
        self.say(f"users admin, household-1 and household-2; their passwords are in {path}")
        return made

    def live(self, token: str) -> dict:
        url = f"http://127.0.0.1:{self.args.port}"
        self.wait_for("web app", lambda: http_ok(url + "/api/houses", token), 60, jobs=("web",))
        self.wait_for("alert job", lambda: " started (id " in self.job("alerts").tail(200), 180, jobs=("alerts",))
        started = time.time()
        self.say(f"replaying today's last {self.args.catch_up_hours:g} h at {self.args.speed:g}x, then on in real "
                 f"time, with {self.args.live_spikes:g} spikes per house-day")
        self.job("live").start(self.python(
            # Houses live in several zones: some may still be in yesterday, or already in tomorrow,
            # on this machine's clock. Three days around today hold every house's present.
            "ingest.replay", "--source", "synthetic", "--houses", str(self.args.houses), "--days", "3",
            "--seed", str(self.args.seed), "--start-date", (self.today - dt.timedelta(days=1)).isoformat(),
            "--from-hours-ago", str(self.args.catch_up_hours), "--not-ahead",
            "--period-s", str(self.args.period_s), "--speed", str(self.args.speed),
            "--spikes-per-house-day", str(self.args.live_spikes), "--no-progress"), self.env)
        return self.wait_for("overshoot alert", lambda: first_alert(self.settings, started), self.args.alert_timeout_s,
                             jobs=("alerts", "live", "land", "web"))


def landed_rows(settings: config.Settings, counted: dict[Path, int]) -> int:
    """Rows in the raw zone's Parquet files (footer metadata only). `counted` keeps the rows of
    files already read across polls: a file with a readable footer is complete and never changes."""
    import pyarrow.parquet as pq

    raw = Path(settings.data_dir) / "landing" / "zone=raw"
    for path in raw.glob("date=*/*.parquet"):
        if path not in counted:
            try:
                counted[path] = pq.ParquetFile(path).metadata.num_rows
            except Exception:  # a file still being written: counted on a later poll
                continue
    return sum(counted.values())


def http_ok(url: str, token: str) -> bool:
    try:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def first_alert(settings: config.Settings, since_ts_s: float) -> dict | None:
    """The first overshoot alert written to RethinkDB after `since_ts_s` (wall time)."""
    from smw import rethink

    try:
        with rethink.connection(settings) as conn:
            found = list(rethink.r.db(settings.rethinkdb_db).table(RETHINKDB_TABLE)
                         .filter(lambda a: (a["kind"] == "overshoot") & (a["updated_ts_s"] >= since_ts_s))
                         .limit(1).run(conn))
    except Exception:  # reqlite briefly unreachable: try again on the next poll
        return None
    return found[0] if found else None


def start(args: argparse.Namespace) -> int:
    demo = Demo(args)
    try:
        demo.clean()
        services = demo.services_up()
        readings = demo.generate()
        demo.init(services)
        demo.start_landing()
        demo.land_history(readings)
        demo.nightly()
        accounts = demo.accounts()
        alert = demo.live(accounts["admin_api_token"])
    except (DemoError, OSError) as exc:
        print(f"\ndemo failed: {exc}\n(the jobs started so far keep running; `make demo-stop` stops them)",
              file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{args.port}"
    demo.say(f"first live alert: {alert.get('appliance')} in {alert.get('house_id')} "
             f"(peak {alert.get('peak_w', 0):.0f} W against a {alert.get('threshold_w', 0):.0f} W threshold)")
    pages = [(f"{url}/", "overview: houses, yesterday's kWh, open alerts, top consumers"),
             (f"{url}/alerts", "live alerts as they open and close (Server-Sent Events)"),
             (f"{url}/houses/{alert.get('house_id')}", "a house: daily kWh per appliance, thresholds, cost"),
             (f"{url}/zips", "daily totals per zip code")]
    width = max(len(page) for page, _ in pages)
    listing = "\n".join(f"  {page:<{width}}  {what}" for page, what in pages)
    households = "; ".join(f"{u['username']} sees {', '.join(u['houses'])}" for u in accounts["users"][1:])
    print(f"""
Smart Meter Watchdog demo is running: {url}
Its data: Kafka topic {args.topic}, keyspace and alerts database {args.namespace}, folder {demo.home / 'data'}

Sign in at {url}/login as admin (every house) or as a household ({households}).
Passwords, and an admin API token for scripts: {demo.home / ACCOUNTS_FILE} (readable by you only).

{listing}

Today's last {args.catch_up_hours:g} h are replayed at {args.speed:g}x, then readings go on in real time
with injected spikes; new alerts keep arriving ({url}/houses/<house>/live shows live power).
Logs: {demo.home / 'logs'}/   Stop it all (jobs, web app, services): make demo-stop
Ready in {time.monotonic() - demo.t0:.0f} s.""")
    return 0


def status(args: argparse.Namespace) -> int:
    home = Path(args.home)
    for name in JOBS:
        job = Job(home, name)
        pid = job.pid()
        print(f"{name:8} {'running (pid %d)' % pid if pid else 'stopped':24} log {job.log_file}")
    return 0


def stop(args: argparse.Namespace) -> int:
    home = Path(args.home)
    for name in reversed(JOBS):
        if Job(home, name).stop():
            print(f"{name:8} stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=str(Path(config.load().var_dir) / "demo"),
                        help="logs, pid files, history and raw zone of the demo (default var/demo)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("start", help="run the pipeline and leave the live part running")
    run.add_argument("--houses", type=int, default=50, help="houses (default 50)")
    run.add_argument("--days", type=int, default=14, help="days of history ending yesterday (default 14)")
    run.add_argument("--period-s", type=float, default=60.0, help="seconds between a meter's readings (default 60)")
    run.add_argument("--speed", type=float, default=60.0,
                     help="live replay speed until it reaches the present, x real time (default 60)")
    run.add_argument("--catch-up-hours", type=float, default=2.0,
                     help="the live replay starts this many hours ago (default 2)")
    run.add_argument("--live-spikes", type=float, default=24.0, help="injected spikes per house-day today (default 24)")
    run.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    run.add_argument("--port", type=int, default=int(os.environ.get("SMW_WEB_PORT", "8000")),
                     help="web app port on 127.0.0.1 (default 8000)")
    run.add_argument("--topic", default=DEMO_TOPIC, help=f"Kafka topic of the demo (default {DEMO_TOPIC})")
    run.add_argument("--namespace", default=DEMO_NAMESPACE,
                     help=f"Cassandra keyspace and RethinkDB database of the demo, apart from the pipeline's "
                          f"own (default {DEMO_NAMESPACE})")
    run.add_argument("--alert-timeout-s", type=float, default=300.0, help="give up waiting for an alert (default 300)")
    run.set_defaults(func=start)
    commands.add_parser("status", help="which demo processes run").set_defaults(func=status)
    commands.add_parser("stop", help="stop the demo's processes by pid").set_defaults(func=stop)
    args = parser.parse_args(argv)
    if args.command == "start" and (args.houses < 1 or args.days < 1 or args.period_s <= 0 or args.speed <= 0):
        parser.error("--houses and --days must be at least 1; --period-s and --speed positive")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

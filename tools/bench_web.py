"""Web benchmarks: house daily-kWh API latency under 50 clients over 1,000 houses, one alert to 1,000 SSE subscribers.

    python -m tools.bench_web [--clients 50] [--seconds 10] [--warmup-s 3] [--load python|wrk|python,wrk]
                           [--client-processes 2] [--processes 1,2] [--threads 16] [--houses 1000]
                           [--repeats 3] [--subscribers 1000]

The server is `python -m webapp` in a child process (`ServerProcess`). The API load comes from
other processes: closed-loop clients in threads of `--client-processes` Python processes
(http.client), or with `--load wrk` from wrk (Debian package `wrk`), a C load generator whose
connections cost the shared cores less; `--load python,wrk` measures both side by side. Each
row also gives the server's CPU time (its processes' user + system) per request.
Each request asks for a random house of `--houses` and one of three dashboard ranges, so the
daily response cache cannot hide the query path. For each number of server processes the API
is measured with the cache off and on (its default TTL), each run on a fresh server, the rows
taking turns, `--repeats` times; the table shows the medians. Clients are closed-loop (each
sends its next request when the previous answer arrives), so mean latency = clients /
throughput; every client sends an API token (authentication on). Then `--subscribers` alert
streams of one house are opened on one server process (held by an asyncio loop in this
process: a socket each, no thread each), one alert is inserted into RethinkDB, and the time
until each stream has it is reported (first, median, last); the API is then measured again
while they all stay connected. Sample data goes to the smw_bench keyspace and RethinkDB db.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from smw import config, cql, init, rethink
from smw.alert import RETHINKDB_TABLE
from tools import sample
from tools.server import ServerProcess, make_user
from tools.services import process_tree
from tools.sse_clients import SSEClients

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
WRK_MISSING = "wrk is not installed: install it with 'sudo apt-get install -y wrk' (or measure with --load python)"
SPAWN_SLACK_S = 2.0  # time for the client processes to start before their warm-up


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants so far (Linux /proc)."""
    total = 0.0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a process that ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def daily_paths(houses: list[str], today: dt.date) -> list[str]:
    """Daily-kWh URLs over the sample houses and three ranges a dashboard asks for (the clients
    pick among them at random)."""
    ranges = [(today - dt.timedelta(days=30), today - dt.timedelta(days=1)),
              (today - dt.timedelta(days=7), today - dt.timedelta(days=1)),
              (today - dt.timedelta(days=14), today - dt.timedelta(days=8))]
    return [f"/api/houses/{house}/daily?from={start.isoformat()}&to={end.isoformat()}"
            for house in houses for start, end in ranges]


def client_process(url: str, token: str, paths: list[str], threads: int, first: int, start_at: float,
                   stop_at: float) -> tuple[list[float], int]:
    """Closed-loop keep-alive clients in threads of this process: latencies (s) of the requests
    sent in [start_at, stop_at) of time.monotonic() (system-wide on Linux), and errors."""
    parsed = urlparse(url)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        rng = random.Random(first + n)  # each client its own sequence of random URLs
        while True:
            sent = time.monotonic()
            if sent >= stop_at:
                break
            try:
                conn.request("GET", rng.choice(paths), headers={"Authorization": f"Bearer {token}"})
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors[n] += 1
                conn.close()  # the next request reconnects
                continue
            took = time.monotonic() - sent
            if response.status != 200:
                errors[n] += 1
            elif sent >= start_at:  # earlier requests are the warm-up
                latencies[n].append(took)
        conn.close()

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [t for times in latencies for t in times], sum(errors)


def api_load(url: str, token: str, paths: list[str], clients: int, processes: int, warmup_s: float,
             seconds: float, server_pid: int | None = None) -> dict:
    start_at = time.monotonic() + SPAWN_SLACK_S + warmup_s
    stop_at = start_at + seconds
    cpu: list[float] = []

    def sample_cpu() -> None:  # the server's CPU at the start and the end of the measured seconds
        for at in (start_at, stop_at):
            time.sleep(max(0.0, at - time.monotonic()))
            cpu.append(process_cpu_s(server_pid))

    sampler = threading.Thread(target=sample_cpu, daemon=True)
    if server_pid is not None:
        sampler.start()
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(client_process, url, token, paths, share, sum(shares[:i]), start_at, stop_at)
                   for i, share in enumerate(shares)]
        results = [f.result() for f in futures]
    if server_pid is not None:
        sampler.join()
    times = [t for latencies, _ in results for t in latencies]
    return {"requests": len(times), "errors": sum(e for _, e in results), "rate": len(times) / seconds,
            "p50": percentile(times, 0.5), "p95": percentile(times, 0.95), "p99": percentile(times, 0.99),
            "max": max(times), "cpu_ms": cpu_ms(cpu, len(times))}


def cpu_ms(samples: list[float], requests: int) -> float:
    """Server CPU milliseconds per request between two samples (nan without them)."""
    return (samples[1] - samples[0]) * 1000 / requests if len(samples) == 2 and requests else float("nan")


# wrk's script: each request a random path of PATHS with the token of $SMW_BENCH_TOKEN (kept out of the
# file); the summary printed as one JSON line (latencies in microseconds).
WRK_SCRIPT = """
local paths = {%s}
local header = {["Authorization"] = "Bearer " .. os.getenv("SMW_BENCH_TOKEN")}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  math.randomseed(os.time() * 1000 + seed)
end
function request()
  return wrk.format("GET", paths[math.random(#paths)], header)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "p50": %%d, "p95": %%d, "p99": %%d, "max": %%d, '
    .. '"errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_load(url: str, token: str, paths: list[str], clients: int, warmup_s: float, seconds: float,
             server_pid: int | None = None) -> dict:
    """The same closed-loop load from wrk: `clients` keep-alive connections over 2 threads, a warm-up
    run of `warmup_s` seconds, then `seconds` measured. Errors: failed connections, reads, writes,
    timeouts and answers with a status of 400 or more."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError(WRK_MISSING)
    threads = max(1, min(2, clients))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="smw-bench-") as script:
        script.write(WRK_SCRIPT % ",".join(json.dumps(path) for path in paths))
        script.flush()
        env = {**os.environ, "SMW_BENCH_TOKEN": token}

        def run(duration_s: float) -> dict:
            done = subprocess.run(
                [wrk, f"-t{threads}", f"-c{clients}", f"-d{max(1, round(duration_s))}s", "--timeout", "30s",
                 "-s", script.name, url], env=env, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                said = (done.stderr or done.stdout).strip()[-500:]
                raise RuntimeError(f"wrk failed (exit {done.returncode}): {said}")
            return json.loads(lines[-1])

        if warmup_s > 0:
            run(warmup_s)
        cpu = [process_cpu_s(server_pid)] if server_pid is not None else []
        found = run(seconds)
        if server_pid is not None:
            cpu.append(process_cpu_s(server_pid))
    took_s = found["duration_us"] / 1e6
    errors = sum(found["errors"].values())
    if errors:
        kinds = ", ".join(f"{kind} {count}" for kind, count in found["errors"].items() if count)
        print(f"    wrk: {errors} errors ({kinds}; status: answers of 400 or more)", flush=True)
    return {"requests": found["requests"], "errors": errors, "rate": found["requests"] / took_s,
            **{name: found[name] / 1e6 for name in ("p50", "p95", "p99", "max")},
            "cpu_ms": cpu_ms(cpu, found["requests"])}


def sse_fanout(url: str, token: str, settings, subscribers: int) -> tuple[SSEClients, list[float]]:
    """Open `subscribers` alert streams of a fresh house, insert one alert of it and measure how long
    each stream took to receive it (s); the streams stay open (close the SSEClients)."""
    house_id = f"bench-{uuid.uuid4().hex[:6]}"
    alert_id = f"{house_id}-alert"
    clients = SSEClients(url, {"Authorization": f"Bearer {token}"}, f"/alerts/stream?house_id={house_id}",
                         subscribers).open(timeout_s=300)

    def insert() -> None:
        now_s = time.time()
        with rethink.connection(settings) as conn:
            rethink.r.db(settings.rethinkdb_db).table(RETHINKDB_TABLE).insert({
                "id": alert_id, "kind": "overshoot", "house_id": house_id, "meter": 5, "appliance": "refrigerator",
                "start_ts_s": now_s, "end_ts_s": None, "state": "open", "severity": "warning",
                "updated_ts_s": now_s}).run(conn)

    try:
        return clients, clients.delays(alert_id.encode(), insert, timeout_s=10)
    except BaseException:
        clients.close()
        raise


LOADS = ("wrk", "python")


def measure(load: str, server: ServerProcess, token: str, paths: list[str], args) -> dict:
    pid = server.process.pid if server.process is not None else None
    if load == "wrk":
        return wrk_load(server.url, token, paths, args.clients, args.warmup_s, args.seconds, pid)
    return api_load(server.url, token, paths, args.clients, args.client_processes, args.warmup_s, args.seconds, pid)


FIGURES = ("requests", "rate", "p50", "p95", "p99", "max", "errors", "cpu_ms")


def medians(runs: list[dict]) -> dict:
    return {name: statistics.median(run[name] for run in runs) for name in FIGURES}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent keep-alive API clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="unmeasured seconds before each run")
    parser.add_argument("--load", default="python",
                        help="what sends the API requests: python (client threads in --client-processes "
                             "processes) or wrk (a C load generator), or both, comma-separated, side by side")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the Python clients run in")
    parser.add_argument("--processes", default="1,2",
                        help="comma-separated server process counts to measure (python -m webapp --processes)")
    parser.add_argument("--threads", type=int, default=16, help="server threads per process for the API runs")
    parser.add_argument("--houses", type=int, default=1000, help="distinct houses the API clients ask for")
    parser.add_argument("--days", type=int, default=30, help="days of sample data per house")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the table shows their medians")
    parser.add_argument("--subscribers", type=int, default=1000,
                        help="SSE subscribers to one alert, all on one server process (open streams hold no thread)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=JSON",
                        help='another row with these SMW_WEB_* options, e.g. \'nohouse={"HOUSE_CACHE_TTL_S": 0}\' '
                             "(measured in the same rounds as the others; repeatable)")
    parser.add_argument("--namespace", default="smw_bench")
    args = parser.parse_args(argv)
    loads = [name.strip() for name in args.load.split(",") if name.strip()]
    if not loads or any(name not in LOADS for name in loads):
        parser.error(f"--load {args.load}: choose among {', '.join(LOADS)}")
    if "wrk" in loads and shutil.which("wrk") is None:
        parser.error(WRK_MISSING)
    variants = []
    for spec in args.variant:
        label, _, options = spec.partition("=")
        try:
            variants.append((label, json.loads(options)))
        except json.JSONDecodeError as exc:
            parser.error(f"--variant {spec}: {exc}")
    settings = config.load().replace(cassandra_keyspace=args.namespace, rethinkdb_db=args.namespace)
    handle, session = cql.connect(settings, keyspace=False)
    try:
        cql.apply_schema(session, settings)
        init.create_rethinkdb(settings)
        session.set_keyspace(settings.cassandra_keyspace)
        started = time.monotonic()
        houses = sample.seed_daily(session, args.houses, args.days)
        print(f"sample data: {len(houses)} houses x {args.days} days in keyspace {args.namespace} "
              f"(written or checked in {time.monotonic() - started:.0f} s)")
    finally:
        handle.shutdown()
    _name, token = make_user(settings, "admin", name="bench-admin")  # the clients send its API token
    paths = daily_paths(houses, dt.datetime.now(dt.timezone.utc).date())
    senders = {"wrk": "wrk (2 threads)", "python": f"{args.client_processes} Python processes"}
    print(f"house daily-kWh API: {args.clients} closed-loop keep-alive clients from "
          f"{' / '.join(senders[name] for name in loads)} with an API token, each request a random one of "
          f"{len(paths)} URLs ({len(houses)} houses x 3 ranges up to 30 days, 8 appliances), "
          f"{args.seconds:.0f} s measured after {args.warmup_s:.0f} s warm-up; "
          f"{args.threads} server threads per process; medians of {args.repeats} runs  (goal p99 <= 50 ms)")
    caches = [("off", {"DAILY_CACHE_TTL_S": 0}), ("on", {})] + variants  # on: the default TTL
    width = max(len(label) for label, _ in caches)
    print(f"  {'processes':>9} {'load':<6} {'cache':<{width}} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'errors':>6} {'server CPU ms/req':>17}")
    for processes in [int(n) for n in args.processes.split(",")]:
        runs: dict[tuple[str, str], list[dict]] = {(load, label): [] for load in loads for label, _ in caches}
        for _ in range(args.repeats):  # the rows take turns, so a noisy minute hits each of them
            for load in loads:
                for label, web_config in caches:
                    with ServerProcess(settings, web_config, threads=args.threads, processes=processes) as server:
                        runs[load, label].append(measure(load, server, token, paths, args))
        for load, label in runs:
            found = medians(runs[load, label])
            print(f"  {processes:>9} {load:<6} {label:<{width}} {found['requests']:>8.0f} {found['rate']:>7.0f} "
                  f"{found['p50'] * 1000:>7.1f} {found['p95'] * 1000:>7.1f} {found['p99'] * 1000:>7.1f} "
                  f"{found['max'] * 1000:>7.1f} {found['errors']:>6.0f} {found['cpu_ms']:>17.2f}")
    # Streams wait on the server's event loop and hold no thread; the bench's single user may hold them all.
    with ServerProcess(settings, {"SSE_MAX_STREAMS_PER_USER": args.subscribers}, threads=args.threads) as server:
        started = time.monotonic()
        clients, delays = sse_fanout(server.url, token, settings, args.subscribers)
        opened_s = time.monotonic() - started
        try:
            late = args.subscribers - len(delays)
            print(f"one alert to {args.subscribers} SSE subscribers (1 server process, opened in {opened_s:.0f} s): "
                  f"delivered to {len(delays)}{f' ({late} not within 10 s)' if late else ''}; "
                  + (f"first {min(delays) * 1000:.0f} ms, median {statistics.median(delays) * 1000:.0f} ms, "
                     f"last {max(delays) * 1000:.0f} ms" if delays else "to none")
                  + "  (goal: all within 1000 ms)")
            found = measure(loads[0], server, token, paths, args)
            print(f"  API from {loads[0]} while they stay connected ({args.threads} server threads, 1 process, "
                  f"cache on): "
                  f"{found['rate']:.0f} req/s, p50 {found['p50'] * 1000:.1f} ms, p95 {found['p95'] * 1000:.1f} ms, "
                  f"p99 {found['p99'] * 1000:.1f} ms, {found['errors']} errors, {found['cpu_ms']:.2f} ms server CPU "
                  f"per request; "
                  f"{clients.connected} of {args.subscribers} streams still connected")
        finally:
            clients.close()


if __name__ == "__main__":
    main()

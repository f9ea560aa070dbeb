"""Web benchmarks: house daily-kWh API latency under 50 clients over 1,000 houses, one alert to 1,000 SSE subscribers.

    python -m tools.bench_web [--clients 50] [--seconds 10] [--warmup-s 3] [--client-processes 2]
                           [--processes 1,2] [--threads 16] [--houses 1000] [--repeats 3]
                           [--subscribers 1000]

The server is `python -m webapp` in a child process (`ServerProcess`); the API clients
run in other processes (keep-alive connections, one per client thread), so neither
starves the other of the GIL. Each request asks for a random house of `--houses` and one
of three dashboard ranges, so the daily response cache cannot hide the query path. For
each number of server processes the API is measured with the cache off and on (its
default TTL), each run on a fresh server, off and on alternating, `--repeats` times; the
table shows the medians. Clients are closed-loop (each sends its next request when the
previous answer arrives), so mean latency = clients / throughput; every client sends an
API token (authentication on). Then `--subscribers` alert streams of one house are opened on
one server process (held by an asyncio loop in this process: a socket each, no thread each),
one alert is inserted into RethinkDB, and the time until each stream has it is reported (first,
median, last); the API is then measured again while they all stay connected. Sample data goes
to the smw_bench keyspace and RethinkDB db.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing
import random
import statistics
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from urllib.parse import urlparse

from smw import config, cql, init, rethink
from smw.alert import RETHINKDB_TABLE
from tools import sample
from tools.server import ServerProcess, make_user
from tools.sse_clients import SSEClients

SPAWN_SLACK_S = 2.0  # time for the client processes to start before their warm-up


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
             seconds: float) -> dict:
    start_at = time.monotonic() + SPAWN_SLACK_S + warmup_s
    stop_at = start_at + seconds
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(client_process, url, token, paths, share, sum(shares[:i]), start_at, stop_at)
                   for i, share in enumerate(shares)]
        results = [f.result() for f in futures]
    times = [t for latencies, _ in results for t in latencies]
    return {"requests": len(times), "errors": sum(e for _, e in results), "rate": len(times) / seconds,
            "p50": percentile(times, 0.5), "p95": percentile(times, 0.95), "p99": percentile(times, 0.99),
            "max": max(times)}


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


FIGURES = ("requests", "rate", "p50", "p95", "p99", "max", "errors")


def medians(runs: list[dict]) -> dict:
    return {name: statistics.median(run[name] for run in runs) for name in FIGURES}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent keep-alive API clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="unmeasured seconds before each run")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the API clients run in")
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
    print(f"house daily-kWh API: {args.clients} closed-loop keep-alive clients in {args.client_processes} processes "
          f"with an API token, each request a random one of {len(paths)} URLs ({len(houses)} houses x 3 ranges up "
          f"to 30 days, 8 appliances), {args.seconds:.0f} s measured after {args.warmup_s:.0f} s warm-up; "
          f"{args.threads} server threads per process; medians of {args.repeats} runs  (goal p99 <= 50 ms)")
    caches = [("off", {"DAILY_CACHE_TTL_S": 0}), ("on", {})] + variants  # on: the default TTL
    width = max(len(label) for label, _ in caches)
    print(f"  {'processes':>9} {'cache':<{width}} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'errors':>6}")
    for processes in [int(n) for n in args.processes.split(",")]:
        runs: dict[str, list[dict]] = {label: [] for label, _ in caches}
        for _ in range(args.repeats):  # the rows take turns, so a noisy minute hits each of them
            for label, web_config in caches:
                with ServerProcess(settings, web_config, threads=args.threads, processes=processes) as server:
                    runs[label].append(api_load(server.url, token, paths, args.clients, args.client_processes,
                                                args.warmup_s, args.seconds))
        for label, _ in caches:
            found = medians(runs[label])
            print(f"  {processes:>9} {label:<{width}} {found['requests']:>8.0f} {found['rate']:>7.0f} "
                  f"{found['p50'] * 1000:>7.1f} {found['p95'] * 1000:>7.1f} {found['p99'] * 1000:>7.1f} "
                  f"{found['max'] * 1000:>7.1f} {found['errors']:>6.0f}")
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
            found = api_load(server.url, token, paths, args.clients, args.client_processes, args.warmup_s,
                             args.seconds)
            print(f"  API while they stay connected ({args.threads} server threads, 1 process, cache on): "
                  f"{found['rate']:.0f} req/s, p50 {found['p50'] * 1000:.1f} ms, p95 {found['p95'] * 1000:.1f} ms, "
                  f"p99 {found['p99'] * 1000:.1f} ms, {found['errors']} errors; "
                  f"{clients.connected} of {args.subscribers} streams still connected")
        finally:
            clients.close()


if __name__ == "__main__":
    main()

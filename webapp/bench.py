"""Web benchmarks: house daily-kWh API latency under 50 clients, one alert to 200 SSE subscribers.

    python -m webapp.bench [--clients 50] [--requests 2000] [--subscribers 200]
Prints figures; sample data goes to the smw_bench keyspace and RethinkDB db.
"""
from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from smw import config, cql, init, rethink
from webapp import sample
from webapp.server import ServerProcess


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def api_latency(url: str, house_id: str, clients: int, requests: int) -> list[float]:
    parsed = urlparse(url)
    path = f"/api/houses/{house_id}/daily"
    per_client = requests // clients

    def client(_):
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        times = []
        for _ in range(per_client):
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            times.append(time.perf_counter() - started)
        conn.close()
        return times

    with ThreadPoolExecutor(clients) as pool:
        return [t for times in pool.map(client, range(clients)) for t in times]


def sse_fanout(url: str, settings, subscribers: int) -> list[float]:
    parsed = urlparse(url)
    house_id = f"bench-{uuid.uuid4().hex[:6]}"
    alert_id = f"{house_id}-alert"
    ready = threading.Barrier(subscribers + 1)
    received: list[float] = []
    lock = threading.Lock()

    def subscriber():
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        conn.request("GET", f"/alerts/stream?house_id={house_id}")
        response = conn.getresponse()
        while b": ready" not in response.fp.readline():
            pass
        ready.wait()
        while True:
            line = response.fp.readline()
            if alert_id.encode() in line:
                with lock:
                    received.append(time.perf_counter())
                break
        conn.close()

    threads = [threading.Thread(target=subscriber, daemon=True) for _ in range(subscribers)]
    for t in threads:
        t.start()
    ready.wait()
    now_s = time.time()
    started = time.perf_counter()
    with rethink.connection(settings) as conn:
        rethink.r.db(settings.rethinkdb_db).table("alerts").insert({
            "id": alert_id, "kind": "overshoot", "house_id": house_id, "meter": 5, "appliance": "refrigerator",
            "start_ts_s": now_s, "end_ts_s": None, "state": "open", "severity": "warning", "updated_ts_s": now_s}).run(conn)
    for t in threads:
        t.join(10)
    return [t - started for t in received]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--namespace", default="smw_bench")
    args = parser.parse_args(argv)
    settings = config.load().replace(cassandra_keyspace=args.namespace, rethinkdb_db=args.namespace)
    handle, session = cql.connect(settings, keyspace=False)
    try:
        cql.apply_schema(session, settings)
        init.create_rethinkdb(settings)
        houses = sample.seed(session, settings, houses=4, days=30)
    finally:
        handle.shutdown()
    with ServerProcess(settings, threads=args.clients + args.subscribers + 16) as server:
        api_latency(server.url, houses[0], args.clients, args.clients * 4)  # warm-up: connections, prepares
        started = time.perf_counter()
        times = api_latency(server.url, houses[0], args.clients, args.requests)
        elapsed = time.perf_counter() - started
        print(f"house daily-kWh API (30 days, 8 appliances), {args.clients} concurrent clients, {len(times)} requests:")
        print(f"  p50 {percentile(times, 0.5) * 1000:.1f} ms  p99 {percentile(times, 0.99) * 1000:.1f} ms  "
              f"mean {statistics.fmean(times) * 1000:.1f} ms  throughput {len(times) / elapsed:.0f} req/s  (goal p99 <= 50 ms)")
        delays = sse_fanout(server.url, settings, args.subscribers)
        print(f"one alert to {args.subscribers} SSE subscribers: delivered to {len(delays)}; "
              f"first {min(delays) * 1000:.0f} ms, median {statistics.median(delays) * 1000:.0f} ms, "
              f"last {max(delays) * 1000:.0f} ms  (goal: all within 1000 ms)")


if __name__ == "__main__":
    main()

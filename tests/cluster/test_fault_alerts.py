"""The alert job on the cluster's Spark master raises the alerts it raises in local mode, and a broker
killed mid-run neither duplicates nor drops one.

The input is `make eval-alerts`'s scenario (tools/evaluate_alerts.py): generated houses, half of them
with injected spikes, their thresholds computed over spike-free history days as the nightly computes
them and written to the tests' keyspace, and the replayed day sent once, in event-time order, to a
fresh topic of the cluster (3 replicas). The job then reads that topic three times, each run from
the beginning with a checkpoint of its own and the same micro-batches (`--once`, the same
`--max-offsets-per-trigger`): in local mode (`--spark-master local[2]`), on the cluster's master,
and on the cluster's master with the broker leading the most partitions SIGKILLed after a few
committed batches and started again. Each run's alerts, as RethinkDB's `alerts` and Cassandra's
`alerts_by_house` hold them, must be the local run's, each once.

Recovery figure: from the kill until the job committed its next micro-batch, against the median
time between its batches. The driver's offset lookup that meets the dead leader gives up after
KAFKA_SOURCE_TIMEOUT_MS and Spark tries it again (3 attempts in all) with a new client, which finds the
new leaders: the job must commit again within those attempts (and a micro-batch), not after Kafka's 60 s.
"""
from __future__ import annotations

import statistics
import time
import uuid
from collections import Counter

import pytest

from ingest import producer as producing
from smw import cql, init, rethink, zones
from streaming import alerts as alert_job
from tests.cluster import faults
from tools import cluster as cluster_tool
from tools import evaluate_alerts

pytestmark = [pytest.mark.cluster, pytest.mark.disruptive]

SCENARIO = ["--houses", "4", "--history-days", "2", "--days", "1", "--spikes-per-house-day", "6", "--seed", "3"]
PARTITIONS = 4
MAX_OFFSETS_PER_TRIGGER = "250"  # messages of 60 s of one house: ~20 micro-batches
KILL_AFTER_BATCHES = 4


@pytest.fixture(scope="module")
def scenario(cluster, client_settings):
    """The scenario's thresholds in the tests' keyspace and its readings in a fresh topic of the cluster."""
    args = evaluate_alerts.build_parser().parse_args(SCENARIO)
    params, _rules = evaluate_alerts.params_and_rules(args)
    built = evaluate_alerts.build_scenario(args, params, args.seed, uuid.uuid4().hex[:6])
    topic = f"fault-alerts-{uuid.uuid4().hex[:8]}"
    settings = client_settings.replace(kafka_topic=topic)
    init.create_topics(settings, {topic: PARTITIONS})
    init.create_rethinkdb(settings)
    evaluate_alerts.write_thresholds(settings, built, params)
    sent = producing.send_all(settings, evaluate_alerts.messages_in_time_order(built.house_days, args.window_s))
    yield {"settings": settings, "houses": sorted(built.limits), "messages": sent, "readings": built.readings,
           "spikes": len(built.spikes)}
    forget_alerts(settings, sorted(built.limits))
    init.delete_topic(settings, topic)


def forget_alerts(settings, houses) -> None:
    """Remove the scenario's alerts from RethinkDB and Cassandra (each run starts without any)."""
    with rethink.connection(settings) as conn:
        rethink.r.table("alerts").get_all(*houses, index="house_id").delete().run(conn)
    handle, session = cql.connect(settings)
    try:
        for house in houses:
            session.execute("DELETE FROM alerts_by_house WHERE house_id = %s", (house,))
    finally:
        handle.shutdown()


def stored_alerts(settings, houses) -> tuple[Counter, Counter]:
    """(RethinkDB documents, Cassandra rows) of the scenario's houses, as multisets of what an alert is."""
    with rethink.connection(settings) as conn:
        docs = list(rethink.r.table("alerts").get_all(*houses, index="house_id").run(conn))
    handle, session = cql.connect(settings)
    try:
        rows = [r for house in houses for r in session.execute(
            "SELECT alert_id, house_id, meter, kind, start_ts, end_ts, state, peak_w FROM alerts_by_house "
            "WHERE house_id = %s", (house,))]
    finally:
        handle.shutdown()
    return (Counter((d["id"], d["house_id"], d["meter"], d["kind"], d["start_ts_s"], d["end_ts_s"], d["state"],
                     d["peak_w"]) for d in docs),
            Counter((r.alert_id, r.house_id, r.meter, r.kind, r.start_ts, r.end_ts, r.state, r.peak_w) for r in rows))


def run_job(name: str, scenario, master: str, work, cluster=None):
    """One run of the alert job over the whole topic; with `cluster`, a broker is killed after
    KILL_AFTER_BATCHES committed batches and started again once the job has committed another."""
    settings = scenario["settings"].replace(data_dir=str(work / name))
    forget_alerts(settings, scenario["houses"])
    command = faults.python_m("streaming.alerts", "--once", "--max-offsets-per-trigger", MAX_OFFSETS_PER_TRIGGER,
                              "--spark-master", master, "--spark-shuffle-partitions", "4")
    commits_dir = zones.checkpoint(settings, alert_job.QUERY_NAME) / "commits"
    commits = faults.Sampler(lambda: sorted(int(p.name) for p in commits_dir.glob("[0-9]*")), interval_s=0.1)
    fault = {}
    try:
        with faults.Job(f"alerts-{name}", command, faults.job_env(settings), work / f"alerts-{name}.log") as job:
            if cluster is not None:
                faults.wait_until(lambda: job.check() and len(commits.latest() or []) >= KILL_AFTER_BATCHES, 600,
                                  f"the alert job commits {KILL_AFTER_BATCHES} batches")
                kafka = faults.Kafka(settings, settings.kafka_topic)
                try:
                    leaders = [d["leader"] for d in kafka.describe().values()]
                finally:
                    kafka.close()
                victim = f"kafka-{max(sorted(set(leaders)), key=leaders.count)}"
                done_before = len(commits.latest())
                fault["killed"] = time.monotonic()
                cluster_tool.kill(victim, cluster)
                fault["victim"], fault["done_before"] = victim, done_before

                def next_commit():
                    running = job.running  # first: a job that ended has committed its last batch before
                    at = commits.first(lambda c: len(c) > done_before, after=fault["killed"])
                    if at is None and not running:
                        time.sleep(0.5)  # the sampler's last look at the checkpoint
                        at = commits.first(lambda c: len(c) > done_before, after=fault["killed"])
                        assert at is not None, f"the job ended without a commit after the kill:\n{job.tail()}"
                    return at

                fault["next"] = faults.wait_until(next_commit, 300, "the alert job commits a batch after the kill")
                restarted = time.monotonic()
                cluster_tool.start(victim, cluster, timeout_s=300)
                fault["restart_s"] = time.monotonic() - restarted
            assert job.finish(900) == 0, job.tail()
        # Spark's Kafka source looks the offsets up on the driver; a lookup that waits for the dead
        # leader times out (default.api.timeout.ms) and is tried again with a new admin client.
        fault["offset_retries"] = len(job.found(r"Error in attempt \d+ getting Kafka offsets"))
    finally:
        commits.stop()
    firsts = {}
    for at, committed in commits.samples:
        for batch in committed:
            firsts.setdefault(batch, at)
    times = sorted(firsts.values())
    fault["batches"] = len(times)
    fault["median_gap_s"] = statistics.median(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else float("nan")
    return stored_alerts(settings, scenario["houses"]), fault


def test_the_alert_job_on_the_cluster_raises_the_local_alerts_also_through_a_broker_loss(
        cluster, scenario, tmp_path, figures):
    label = "broker killed during the alert job"
    (local_docs, local_rows), local = run_job("local", scenario, "local[2]", tmp_path)
    alerts = sum(local_docs.values())
    assert alerts >= 5 and sum(1 for key in local_docs if key[3] == "overshoot") >= 3, local_docs
    assert max(local_docs.values()) == 1 and len({key[0] for key in local_docs}) == alerts
    # Each alert once in Cassandra too, the same episode under the same id (timestamps in ms there).
    assert sorted(k[0] for k in local_rows.elements()) == sorted(k[0] for k in local_docs.elements())

    (cluster_docs, cluster_rows), plain = run_job("cluster", scenario, cluster.spark_master.url, tmp_path)
    assert cluster_docs == local_docs
    assert cluster_rows == local_rows

    with faults.whole_again(cluster, figures, label):
        (fault_docs, fault_rows), fault = run_job("cluster-fault", scenario, cluster.spark_master.url, tmp_path,
                                                  cluster=cluster)
    assert fault_docs == local_docs, (f"missing {local_docs - fault_docs}", f"extra {fault_docs - local_docs}")
    assert fault_rows == local_rows, (f"missing {local_rows - fault_rows}", f"extra {fault_rows - local_rows}")
    assert fault["batches"] > fault["done_before"], "the job had committed every batch before the kill"
    timeout_ms = scenario["settings"].kafka_source_timeout_ms.strip()
    recovery_s = fault["next"] - fault["killed"]

    figures(label, f"{scenario['readings']:,} readings in {scenario['messages']:,} messages, {alerts} alerts "
                   f"({scenario['spikes']} injected spikes), the same in local mode, on the cluster and through the "
                   f"fault, each once; {fault['victim']} SIGKILLed after {fault['done_before']} of "
                   f"{fault['batches']} micro-batches; the next committed {recovery_s:.1f} s after the kill "
                   f"(KAFKA_SOURCE_TIMEOUT_MS {timeout_ms or 'empty: Kafka defaults'}; median between batches "
                   f"{fault['median_gap_s']:.1f} s on the cluster, {plain['median_gap_s']:.1f} s without a fault, "
                   f"{local['median_gap_s']:.1f} s in local mode; the driver's Kafka offset lookup timed out and was "
                   f"retried {fault['offset_retries']} time(s)); {fault['victim']} restarted and answering in "
                   f"{fault['restart_s']:.1f} s")
    if timeout_ms:
        # Spark's 3 lookups of KAFKA_SOURCE_TIMEOUT_MS, 1 s apart, and the micro-batch itself.
        assert recovery_s < 3 * int(timeout_ms) / 1000 + 15, (
            f"the next batch committed {recovery_s:.1f} s after the kill: longer than 3 offset lookups of "
            f"KAFKA_SOURCE_TIMEOUT_MS={timeout_ms} and a batch")

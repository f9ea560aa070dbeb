"""Measure alert quality against generated ground truth: precision, recall, false alerts per house-day.

    python -m streaming.evaluate [--houses 6] [--history-days 3] [--days 2] [--spikes-per-house-day 4]

1. Generates derived houses (datasets.generator). The first `--history-days` days
   are generated without spikes and give each (house, meter) its threshold: the 97th
   percentile of positive power (REFERENCE.md §3), written to Cassandra `thresholds`.
2. The next `--days` days are replayed through a fresh Kafka topic in event-time
   order: half of the houses with injected spikes (the scenario), the other half
   spike-free (base readings are identical with or without spikes).
3. The alert job runs on the topic (available-now trigger, default rules unless
   overridden) and its overshoot alerts are read back from RethinkDB.
4. An alert matches a spike when it is on the same house, on the spike's circuit or
   the mains leg that carried it, and its [start, end] overlaps the spike's window
   (+/- `--tolerance-s`). Precision = matching alerts / alerts on spiked houses;
   recall = spikes with a matching alert on their circuit / spikes; false alerts per
   house-day = alerts on spike-free houses / their house-days.

Works in its own keyspace and RethinkDB database (`--namespace`, default smw_eval)
and a throw-away topic, with a run tag in the house ids.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import uuid
from dataclasses import fields
from pathlib import Path

import numpy as np

from smw import config, messages
from smw.messages import Series
from streaming import episodes

log = logging.getLogger("streaming.evaluate")

DATASETS_WORKTREE = Path("/work/wt-datasets")


def generator_module():
    """datasets.generator; from the datasets worktree while that branch is not merged here."""
    try:
        from datasets import generator
    except ImportError:
        if not (DATASETS_WORKTREE / "datasets" / "generator.py").exists():
            raise
        import datasets

        # Only the datasets package is taken from there; everything else stays this tree's.
        datasets.__path__.append(str(DATASETS_WORKTREE / "datasets"))
        from datasets import generator
    return generator


def thresholds_from_history(gen, plan, days: range) -> dict[int, float]:
    """{meter: p97 of positive power} of a house over spike-free days."""
    source = gen.sources[plan.source]
    per_channel: dict[int, list[np.ndarray]] = {}
    for day in days:
        house_day = gen.house_day(plan, day)
        for channel in np.unique(house_day.channel):
            power_w = house_day.power_w[house_day.channel == channel]
            per_channel.setdefault(int(channel), []).append(power_w[power_w > 0])
    result = {}
    for channel, parts in per_channel.items():
        positive = np.concatenate(parts)
        if len(positive):
            result[int(source.meters[channel])] = float(np.percentile(positive, 97))
    return result


def messages_in_time_order(house_days, window_s: float):
    """(key, value) messages: per `window_s` of event time, one message per house with a series per meter."""
    parts = []
    for house_id, gen_source, house_day in house_days:
        parts.append((house_id, gen_source, house_day))
    ts_s = np.concatenate([hd.ts_s for _, _, hd in parts])
    power_w = np.concatenate([hd.power_w for _, _, hd in parts]).astype(np.float64)
    channel = np.concatenate([hd.channel for _, _, hd in parts]).astype(np.int64)
    house = np.concatenate([np.full(len(hd.ts_s), n) for n, (_, _, hd) in enumerate(parts)])
    window = np.floor(ts_s / window_s).astype(np.int64)
    order = np.lexsort((ts_s, channel, house, window))
    ts_s, power_w, channel, house, window = ts_s[order], power_w[order], channel[order], house[order], window[order]
    cut = np.flatnonzero(np.r_[True, (window[1:] != window[:-1]) | (house[1:] != house[:-1])])
    ends = np.r_[cut[1:], len(ts_s)]
    for lo, hi in zip(cut, ends):
        house_id, source, _ = parts[house[lo]]
        series = []
        ch = channel[lo:hi]
        bounds = np.flatnonzero(np.r_[True, ch[1:] != ch[:-1]])
        for a, b in zip(bounds, np.r_[bounds[1:], len(ch)]):
            c = int(ch[a])
            series.append(Series(int(source.meters[c]), source.labels[c], source.appliances[c],
                                 np.round(ts_s[lo + a:lo + b], 3).tolist(), np.round(power_w[lo + a:lo + b], 2).tolist()))
        yield messages.encode(house_id, series)


def produce(settings: config.Settings, message_iter) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_list, acks="all", linger_ms=20,
                             batch_size=1 << 20, max_request_size=8 << 20)
    sent = 0
    try:
        for key, value in message_iter:
            producer.send(settings.kafka_topic, key=key, value=value)
            sent += 1
        producer.flush(timeout=300)
    finally:
        producer.close()
    return sent


def score(alerts: list[dict], spikes: list, spiked_houses: set, clean_house_days: int, tolerance_s: float) -> dict:
    """Precision, recall and false alerts per house-day of overshoot alerts against the spikes."""
    overshoots = [a for a in alerts if a["kind"] == episodes.KIND_OVERSHOOT]
    on_spiked = [a for a in overshoots if a["house_id"] in spiked_houses]
    on_clean = [a for a in overshoots if a["house_id"] not in spiked_houses]

    def overlaps(alert, spike, meters):
        end_s = alert["end_ts_s"] if alert["end_ts_s"] is not None else alert["start_ts_s"]
        return (alert["house_id"] == spike.house_id and alert["meter"] in meters
                and alert["start_ts_s"] <= spike.start_ts_s + spike.duration_s + tolerance_s
                and end_s >= spike.start_ts_s - tolerance_s)

    matching = [a for a in on_spiked
                if any(overlaps(a, s, {s.meter, s.mains_meter}) for s in spikes)]
    found = [s for s in spikes if any(overlaps(a, s, {s.meter}) for a in on_spiked)]
    return {
        "spikes": len(spikes), "spikes_found": len(found),
        "alerts_on_spiked_houses": len(on_spiked), "alerts_matching": len(matching),
        "precision": len(matching) / len(on_spiked) if on_spiked else float("nan"),
        "recall": len(found) / len(spikes) if spikes else float("nan"),
        "alerts_on_spike_free_houses": len(on_clean), "spike_free_house_days": clean_house_days,
        "false_alerts_per_house_day": len(on_clean) / clean_house_days if clean_house_days else float("nan"),
        "missed": [(s.spike_id, s.appliance, s.magnitude_w, s.duration_s) for s in spikes if s not in found][:10],
        "unmatched": [(a["house_id"], a["meter"], a["appliance"], round(a["peak_w"]), a["threshold_w"] and
                       round(a["threshold_w"]), a["start_ts_s"]) for a in on_spiked if a not in matching][:10],
    }


def build_parser() -> argparse.ArgumentParser:
    from streaming import alerts

    parser = argparse.ArgumentParser(prog="python -m streaming.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--houses", type=int, default=6, help="houses; half get spikes (default 6)")
    parser.add_argument("--history-days", type=int, default=3, help="spike-free days for thresholds (default 3)")
    parser.add_argument("--days", type=int, default=2, help="days replayed through the job (default 2)")
    parser.add_argument("--spikes-per-house-day", type=float, default=4.0,
                        help="mean injected spikes per house-day on spiked houses (default 4)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--source", default="synthetic:6:12",
                        help="generator source (default synthetic:6:12, enough clean days that replayed days "
                             "differ from the history days)")
    parser.add_argument("--tolerance-s", type=float, default=30.0, help="slack when matching windows (default 30)")
    parser.add_argument("--window-s", type=float, default=60.0, help="event time per Kafka message (default 60)")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=2000)
    parser.add_argument("--namespace", default="smw_eval", help="Cassandra keyspace and RethinkDB db (default smw_eval)")
    # The job's own rule flags, so that a rule change can be evaluated before it becomes a default.
    job = alerts.build_parser()
    for action in job._actions:
        if action.dest in {f.name for f in fields(episodes.Rules)}:
            if isinstance(action, argparse.BooleanOptionalAction):
                parser.add_argument(action.option_strings[0], action=argparse.BooleanOptionalAction,
                                    default=action.default, help=action.help)
            else:
                parser.add_argument(*action.option_strings, type=action.type, default=action.default,
                                    help=action.help)
    config.add_arguments(parser, "kafka_bootstrap", "spark_master")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from smw import init, rethink
    from smw import spark as spark_builder
    from streaming import alerts

    gen_mod = generator_module()
    settings = config.from_args(args).replace(cassandra_keyspace=args.namespace, rethinkdb_db=args.namespace)
    rules = alerts.rules_from_args(args)
    tag = uuid.uuid4().hex[:6]
    topic = f"eval-{tag}"
    settings = settings.replace(kafka_topic=topic, data_dir=tempfile.mkdtemp(prefix="smw-eval-"))
    init.create_cassandra(settings)
    init.create_rethinkdb(settings)
    init.create_topics(settings, {topic: 4})

    total_days = args.history_days + args.days
    common = dict(houses=args.houses, days=total_days, seed=args.seed, source=args.source)
    clean_gen = gen_mod.Generator(gen_mod.GeneratorConfig(spikes_per_house_day=0.0, **common))
    spiked_gen = gen_mod.Generator(gen_mod.GeneratorConfig(spikes_per_house_day=args.spikes_per_house_day, **common),
                                   sources=clean_gen.sources)
    started = time.perf_counter()
    from smw import cql

    handle, session = cql.connect(settings)
    insert = session.prepare("INSERT INTO thresholds (house_id, meter, appliance, quantile, threshold_w, samples, "
                             "window_days, computed_at) VALUES (?, ?, ?, 0.97, ?, 0, ?, toTimestamp(now()))")
    history = range(args.history_days)
    replay = range(args.history_days, total_days)
    spiked_houses, house_days, spikes = set(), [], []
    for n, plan in enumerate(clean_gen.plans):
        house_id = f"e{tag}-{plan.house_id}"
        source = clean_gen.sources[plan.source]
        for meter, threshold_w in thresholds_from_history(clean_gen, plan, history).items():
            appliance = source.appliances[list(source.meters).index(meter)]
            session.execute(insert, (house_id, meter, appliance, threshold_w, args.history_days))
        with_spikes = n % 2 == 0
        gen = spiked_gen if with_spikes else clean_gen
        if with_spikes:
            spiked_houses.add(house_id)
        for day in replay:
            house_day = gen.house_day(plan, day)
            house_days.append((house_id, source, house_day))
            spikes += [s.__class__(**{**s.__dict__, "house_id": house_id}) for s in house_day.spikes]
    handle.shutdown()
    readings = sum(len(hd.ts_s) for _, _, hd in house_days)
    sent = produce(settings, messages_in_time_order(house_days, args.window_s))
    produced_s = time.perf_counter() - started
    print(f"generated and produced {readings:,} readings of {args.houses} houses x {args.days} days "
          f"in {sent:,} messages ({produced_s:.0f} s); {len(spikes)} spikes on {len(spiked_houses)} houses")

    spark = spark_builder.session("smw-eval-alerts", settings.replace(spark_master=args.spark_master or "local[2]"),
                                  conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"})
    t0 = time.perf_counter()
    alert_query, quarantine_query, writer = alerts.start(
        spark, settings, rules, once=True, max_offsets_per_trigger=args.max_offsets_per_trigger)
    try:
        alert_query.awaitTermination()
        quarantine_query.awaitTermination()
        if alert_query.exception():
            raise RuntimeError(f"alert job failed: {alert_query.exception()}")
    finally:
        writer.sinks.close()
    job_s = time.perf_counter() - t0
    spark.stop()

    with rethink.connection(settings) as conn:
        found = list(rethink.r.table("alerts").get_all(*[h for h, _, _ in house_days], index="house_id").run(conn))
    clean_house_days = sum(1 for h, _, _ in house_days if h not in spiked_houses)
    result = score(found, spikes, spiked_houses, clean_house_days, args.tolerance_s)
    kinds = {k: sum(1 for a in found if a["kind"] == k) for k in (episodes.KIND_OVERSHOOT, episodes.KIND_NO_DATA,
                                                                  episodes.KIND_NEW_PEAK)}
    print(f"job: {readings:,} readings in {job_s:.0f} s ({readings / job_s:,.0f} readings/s); alerts by kind: {kinds}")
    print(f"rules: {rules}")
    for name in ("spikes", "spikes_found", "alerts_on_spiked_houses", "alerts_matching", "alerts_on_spike_free_houses",
                 "spike_free_house_days"):
        print(f"  {name:30s} {result[name]}")
    print(f"precision                      {result['precision']:.3f}   (goal >= 0.95)")
    print(f"recall                         {result['recall']:.3f}   (goal >= 0.95)")
    print(f"false alerts per house-day     {result['false_alerts_per_house_day']:.3f}   (spike-free houses; goal <= 0.1)")
    if result["missed"]:
        print(f"  missed spikes (first 10): {result['missed']}")
    if result["unmatched"]:
        print(f"  unmatched alerts (first 10): {result['unmatched']}")
    ok = (result["precision"] >= 0.95 and result["recall"] >= 0.95 and result["false_alerts_per_house_day"] <= 0.1)
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_list)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

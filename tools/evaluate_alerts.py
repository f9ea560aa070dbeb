"""Measure alert quality against generated ground truth: precision, recall, false alerts per house-day.

    python -m tools.evaluate_alerts [--houses 12] [--history-days 7] [--days 3] [--spikes-per-house-day 4] [--seed 1]

1. Generates derived houses (datasets.generator). The first `--history-days` days
   are generated without spikes and give each (house, meter) its threshold and
   hourly profile with the nightly job's own maths (`smw.energy.quantile_thresholds`,
   the nightly defaults of quantile, off level and standby ratio unless overridden),
   written to Cassandra `thresholds` as the nightly job writes them.
2. The next `--days` days are replayed through a fresh Kafka topic in event-time
   order: half of the houses with injected spikes (the scenario), the other half
   spike-free (base readings are identical with or without spikes). Houses live in
   different time zones, so their days start and end at different instants; only
   the event time that every house covers is replayed, so no house falls silent
   while the others go on (which would raise no_data alerts that say nothing).
3. The alert job runs on the topic (available-now trigger, default rules unless
   overridden) and its alerts are read back from RethinkDB.
4. An overshoot alert matches a spike when it is on the same house, on the spike's
   circuit or the mains leg that carried it, and its [start, end] overlaps the
   spike's window (+/- `--tolerance-s`). Precision = matching alerts / alerts on
   spiked houses; recall = spikes with a matching alert on their circuit / spikes
   (spikes wholly inside the replayed time); false alerts per house-day = alerts on
   spike-free houses / their replayed days.

Works in its own keyspace and RethinkDB database (`--namespace`, default smw_eval)
and a throw-away topic, with a run tag in the house ids.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

import numpy as np

from batch.nightly import Params
from datasets import generator
from ingest import producer as producing
from smw import alert, config, energy, messages
from smw.messages import Series
from streaming import episodes

log = logging.getLogger("tools.evaluate_alerts")


@dataclass(frozen=True)
class Threshold:
    """A meter's row of the thresholds table, as the nightly job computes it."""

    threshold_w: float
    samples: int
    hourly_w: dict[int, float]


def thresholds_from_history(gen: generator.Generator, plan: generator.HousePlan, days: range,
                            params: Params) -> dict[int, Threshold]:
    """{meter: Threshold} of a house over spike-free days, with the nightly job's maths."""
    source = gen.sources[plan.source]
    house_days = [gen.house_day(plan, day) for day in days]
    ts_s = np.concatenate([hd.ts_s for hd in house_days])
    power_w = np.concatenate([hd.power_w for hd in house_days]).astype(np.float64)
    channel = np.concatenate([hd.channel for hd in house_days])
    result = {}
    for index in np.unique(channel):
        mine = channel == index
        threshold_w, samples, profile = energy.quantile_thresholds(
            ts_s[mine], power_w[mine], plan.tz, params.quantile, params.off_level_w, params.min_hour_samples,
            params.standby_ratio)
        if not np.isnan(threshold_w):
            hourly_w = {hour: w for hour, w in enumerate(profile) if not np.isnan(w)}
            result[int(source.meters[index])] = Threshold(threshold_w, samples, hourly_w)
    return result


def common_window(house_days) -> tuple[float, float]:
    """[first, last] event time covered by every house: the latest first reading, the earliest last one."""
    first_s, last_s = {}, {}
    for house_id, _, house_day in house_days:
        first_s[house_id] = min(first_s.get(house_id, np.inf), float(house_day.ts_s.min()))
        last_s[house_id] = max(last_s.get(house_id, -np.inf), float(house_day.ts_s.max()))
    return max(first_s.values()), min(last_s.values())


def clipped(house_day, first_s: float, last_s: float):
    """The house-day's readings within [first_s, last_s] (spikes are filtered separately)."""
    keep = (house_day.ts_s >= first_s) & (house_day.ts_s <= last_s)
    return generator.HouseDay(house_day.plan, house_day.day, house_day.ts_s[keep], house_day.power_w[keep],
                              house_day.channel[keep], house_day.spikes)


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


def score(alerts: list[dict], spikes: list, spiked_houses: set, clean_house_days: float, tolerance_s: float) -> dict:
    """Precision, recall and false alerts per house-day of overshoot alerts against the spikes."""
    overshoots = [a for a in alerts if a["kind"] == alert.KIND_OVERSHOOT]
    on_spiked = [a for a in overshoots if a["house_id"] in spiked_houses]
    on_clean = [a for a in overshoots if a["house_id"] not in spiked_houses]

    def overlaps(candidate, spike, meters):
        end_s = candidate["end_ts_s"] if candidate["end_ts_s"] is not None else candidate["start_ts_s"]
        return (candidate["house_id"] == spike.house_id and candidate["meter"] in meters
                and candidate["start_ts_s"] <= spike.start_ts_s + spike.duration_s + tolerance_s
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
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate_alerts", description=__doc__.splitlines()[0])
    parser.add_argument("--houses", type=int, default=12, help="houses; half get spikes (default 12)")
    parser.add_argument("--history-days", type=int, default=7, help="spike-free days for thresholds (default 7)")
    parser.add_argument("--days", type=int, default=3, help="days replayed through the job (default 3)")
    parser.add_argument("--spikes-per-house-day", type=float, default=4.0,
                        help="mean injected spikes per house-day on spiked houses (default 4)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--source", default="synthetic:6:24",
                        help="generator source (default synthetic:6:24, enough clean days that replayed days "
                             "differ from the history days)")
    # The nightly job's threshold flags and the alert job's rule flags, so that a change can be
    # evaluated before it becomes a default.
    config.add_options(parser, Params, ("quantile", "off_level_w", "standby_ratio"))
    config.add_options(parser, episodes.Rules)
    parser.add_argument("--tolerance-s", type=float, default=30.0, help="slack when matching windows (default 30)")
    parser.add_argument("--window-s", type=float, default=60.0, help="event time per Kafka message (default 60)")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=2000)
    parser.add_argument("--namespace", default="smw_eval", help="Cassandra keyspace and RethinkDB db (default smw_eval)")
    config.add_arguments(parser, "kafka_bootstrap", "spark_master")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from smw import init, rethink
    from smw import spark as spark_builder
    from streaming import alerts

    params = config.options_from_args(Params, args, window_days=args.history_days)
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
    clean_gen = generator.Generator(generator.GeneratorConfig(spikes_per_house_day=0.0, **common))
    spiked_gen = generator.Generator(
        generator.GeneratorConfig(spikes_per_house_day=args.spikes_per_house_day, **common), sources=clean_gen.sources)
    started = time.perf_counter()
    from smw import cql

    handle, session = cql.connect(settings)
    insert = session.prepare("INSERT INTO thresholds (house_id, meter, appliance, quantile, threshold_w, "
                             "hourly_threshold_w, samples, window_days, computed_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, toTimestamp(now()))")
    history = range(args.history_days)
    replay = range(args.history_days, total_days)
    spiked_houses, house_days, spikes = set(), [], []
    for n, plan in enumerate(clean_gen.plans):
        house_id = f"e{tag}-{plan.house_id}"
        source = clean_gen.sources[plan.source]
        for meter, limit in thresholds_from_history(clean_gen, plan, history, params).items():
            appliance = source.appliances[list(source.meters).index(meter)]
            session.execute(insert, (house_id, meter, appliance, params.quantile, limit.threshold_w,
                                     limit.hourly_w or None, limit.samples, args.history_days))
        with_spikes = n % 2 == 0
        gen = spiked_gen if with_spikes else clean_gen
        if with_spikes:
            spiked_houses.add(house_id)
        for day in replay:
            house_days.append((house_id, source, gen.house_day(plan, day)))
    handle.shutdown()
    first_s, last_s = common_window(house_days)
    house_days = [(house_id, source, clipped(hd, first_s, last_s)) for house_id, source, hd in house_days]
    spikes = [dataclasses.replace(s, house_id=house_id) for house_id, _, hd in house_days for s in hd.spikes
              if s.start_ts_s >= first_s and s.start_ts_s + s.duration_s <= last_s]
    readings = sum(len(hd.ts_s) for _, _, hd in house_days)
    sent = producing.send_all(settings, messages_in_time_order(house_days, args.window_s))
    produced_s = time.perf_counter() - started
    window_days = (last_s - first_s) / 86400.0
    print(f"generated and produced {readings:,} readings of {args.houses} houses x {window_days:.2f} days "
          f"(the event time all houses cover of {args.days} local days) in {sent:,} messages ({produced_s:.0f} s); "
          f"{len(spikes)} spikes on {len(spiked_houses)} houses")

    spark = spark_builder.session("smw-eval-alerts", settings.replace(spark_master=args.spark_master or "local[2]"),
                                  conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"})
    t0 = time.perf_counter()
    alert_query, batches = alerts.start(
        spark, settings, rules, once=True, max_offsets_per_trigger=args.max_offsets_per_trigger)
    try:
        alert_query.awaitTermination()
        if alert_query.exception():
            raise RuntimeError(f"alert job failed: {alert_query.exception()}")
    finally:
        alerts.close(batches)
    job_s = time.perf_counter() - t0
    spark.stop()

    with rethink.connection(settings) as conn:
        found = list(rethink.r.table(alert.RETHINKDB_TABLE).get_all(*[h for h, _, _ in house_days], index="house_id").run(conn))
    clean_house_days = window_days * (args.houses - len(spiked_houses))
    result = score(found, spikes, spiked_houses, clean_house_days, args.tolerance_s)
    kinds = {k: sum(1 for a in found if a["kind"] == k) for k in (alert.KIND_OVERSHOOT, alert.KIND_NO_DATA,
                                                                  alert.KIND_NEW_PEAK)}
    print(f"job: {readings:,} readings in {job_s:.0f} s ({readings / job_s:,.0f} readings/s); alerts by kind: {kinds}")
    print(f"rules: {rules}")
    print(f"thresholds: quantile {params.quantile}, off level {params.off_level_w} W, standby ratio "
          f"{params.standby_ratio}, over {args.history_days} spike-free days")
    for name in ("spikes", "spikes_found", "alerts_on_spiked_houses", "alerts_matching", "alerts_on_spike_free_houses",
                 "spike_free_house_days"):
        value = result[name]
        print(f"  {name:30s} {value:.2f}" if isinstance(value, float) else f"  {name:30s} {value}")
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

"""Measure alert quality against generated ground truth: precision, recall, false alerts per house-day.

    python -m tools.evaluate_alerts [--seeds 1-8] [--in-process] [--houses 12] [--history-days 7] [--days 3]

For each seed (`--seed N`, or a sweep with `--seeds 1-8,11`):

1. Generates derived houses (datasets.generator). The first `--history-days` days
   are generated without spikes and give each (house, meter) its thresholds with the
   nightly job's own maths (`smw.energy.meter_levels` per meter, then `fleet_prior` and
   `judged_levels` per appliance across the generated houses; the nightly defaults
   unless overridden).
2. The next `--days` days are replayed: half of the houses with injected spikes (the
   scenario), the other half spike-free (base readings are identical with or without
   spikes). Houses live in different time zones, so their days start and end at
   different instants; only the event time that every house covers is replayed, so
   no house falls silent while the others go on (which would raise no_data alerts
   that say nothing).
3. The alert rules run on the replay, in one of two ways:
   - the real job (default): thresholds are written to Cassandra `thresholds` as the
     nightly job writes them, the readings go through a fresh Kafka topic in event-time
     order, the alert job runs on it (available-now trigger) and its alerts are read
     back from RethinkDB. This is the reference.
   - `--in-process`: the same rules (`streaming.episodes.detect`) run in this process on
     the same readings, in micro-batches of the event time the job's batches hold
     (`--max-offsets-per-trigger` messages of `--window-s` per house), with the job's
     watermark. No service is needed and a seed takes about a minute: the fast way to
     try a model before running the job.
4. An overshoot alert matches a spike when it is on the same house, on the spike's
   circuit or the mains leg that carried it, and its [start, end] overlaps the
   spike's window (+/- `--tolerance-s`). Precision = matching alerts / alerts on
   spiked houses; recall = spikes with a matching alert on their circuit / spikes
   (spikes wholly inside the replayed time); false alerts per house-day = alerts on
   spike-free houses / their replayed days.

Prints one row per seed and, for a sweep, the worst of each column; exits non-zero
when a seed misses a goal. The job mode works in its own keyspace and RethinkDB
database (`--namespace`, default smw_eval) and a throw-away topic per seed, with a
run tag in the house ids.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from batch.nightly import Params
from datasets import generator
from smw import alert, config, energy, kafka_clients, messages
from smw.messages import Series
from streaming import alerts as alert_job
from streaming import episodes

log = logging.getLogger("tools.evaluate_alerts")

GOAL_PRECISION = 0.95
GOAL_RECALL = 0.95
GOAL_FALSE_PER_HOUSE_DAY = 0.1


@dataclass(frozen=True)
class Threshold:
    """A meter's row of the thresholds table, as the nightly job computes it."""

    threshold_w: float
    samples: int
    normal_peak_w: float
    fleet_meters: int
    min_run_s: float


def levels_from_history(gen: generator.Generator, plan: generator.HousePlan, days: range,
                        params: Params) -> dict[int, energy.MeterLevels]:
    """{meter: MeterLevels} of a house over spike-free days, with the nightly job's per-meter maths."""
    source = gen.sources[plan.source]
    house_days = [gen.house_day(plan, day) for day in days]
    ts_s = np.concatenate([hd.ts_s for hd in house_days])
    power_w = np.concatenate([hd.power_w for hd in house_days]).astype(np.float64)
    channel = np.concatenate([hd.channel for hd in house_days])
    return {int(source.meters[index]): energy.meter_levels(
        ts_s[channel == index], power_w[channel == index], plan.tz, params.quantile, params.off_level_w,
        params.standby_ratio, params.peak_readings, params.peak_days, run_multiplier=params.run_multiplier,
        run_gap_s=params.run_gap_s) for index in np.unique(channel)}


def thresholds_of_fleet(levels: dict[tuple[str, int], energy.MeterLevels], appliances: dict[tuple[str, int], str],
                        params: Params) -> dict[tuple[str, int], Threshold]:
    """{(house_id, meter): Threshold} of every meter with readings, the fleet being these houses:
    meters grouped by appliance as the nightly job groups them (`batch.nightly.judge_appliance`)."""
    result = {}
    for appliance in sorted(set(appliances.values())):
        keys = [k for k, level in levels.items() if appliances[k] == appliance and not np.isnan(level.threshold_w)]
        threshold_w = np.array([levels[k].threshold_w for k in keys])
        samples = np.array([levels[k].samples for k in keys])
        peak_w = np.array([levels[k].peak_w for k in keys])
        prior = energy.fleet_prior(threshold_w, samples, peak_w, params.fleet_min_meters)
        judged = energy.judged_levels(threshold_w, samples, peak_w, np.array([levels[k].top_w for k in keys]), prior)
        for n, key in enumerate(keys):
            result[key] = Threshold(float(judged[0][n]), int(samples[n]), float(judged[1][n]), int(judged[2][n]),
                                    levels[key].min_run_s)
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


@dataclass
class Scenario:
    """One seed's replay: readings of the common window, thresholds, ground truth."""

    seed: int
    house_days: list  # (house_id, SourceHouse, HouseDay), clipped to [first_s, last_s]
    limits: dict[str, dict[int, Threshold]]  # house_id -> meter -> thresholds over the history days
    spikes: list
    spiked_houses: set[str]
    first_s: float
    last_s: float

    @property
    def readings(self) -> int:
        return sum(len(hd.ts_s) for _, _, hd in self.house_days)

    @property
    def houses(self) -> int:
        return len(self.limits)

    @property
    def replayed_days(self) -> float:
        return (self.last_s - self.first_s) / 86400.0

    @property
    def clean_house_days(self) -> float:
        return self.replayed_days * (self.houses - len(self.spiked_houses))


def build_scenario(args: argparse.Namespace, params: Params, seed: int, tag: str) -> Scenario:
    """Generate a seed's houses, their thresholds over the history days and the replay."""
    total_days = args.history_days + args.days
    common = dict(houses=args.houses, days=total_days, seed=seed, source=args.source)
    clean_gen = generator.Generator(generator.GeneratorConfig(spikes_per_house_day=0.0, **common))
    spiked_gen = generator.Generator(
        generator.GeneratorConfig(spikes_per_house_day=args.spikes_per_house_day, **common), sources=clean_gen.sources)
    history = range(args.history_days)
    replay = range(args.history_days, total_days)
    levels, appliances, spiked_houses, house_days = {}, {}, set(), []
    for n, plan in enumerate(clean_gen.plans):
        house_id = f"e{tag}-{plan.house_id}"
        source = clean_gen.sources[plan.source]
        for meter, level in levels_from_history(clean_gen, plan, history, params).items():
            levels[(house_id, meter)] = level
            appliances[(house_id, meter)] = source.appliances[list(source.meters).index(meter)]
        with_spikes = n % 2 == 0
        if with_spikes:
            spiked_houses.add(house_id)
        gen = spiked_gen if with_spikes else clean_gen
        house_days += [(house_id, source, gen.house_day(plan, day)) for day in replay]
    limits = {house_id: {} for house_id, _ in levels}
    for (house_id, meter), limit in thresholds_of_fleet(levels, appliances, params).items():
        limits[house_id][meter] = limit
    first_s, last_s = common_window(house_days)
    house_days = [(house_id, source, clipped(hd, first_s, last_s)) for house_id, source, hd in house_days]
    spikes = [dataclasses.replace(s, house_id=house_id) for house_id, _, hd in house_days for s in hd.spikes
              if s.start_ts_s >= first_s and s.start_ts_s + s.duration_s <= last_s]
    return Scenario(seed, house_days, limits, spikes, spiked_houses, first_s, last_s)


def messages_in_time_order(house_days, window_s: float):
    """(key, value) messages: per `window_s` of event time, one message per house with a series per meter."""
    parts = list(house_days)
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
                                 *as_sent(ts_s[lo + a:lo + b], power_w[lo + a:lo + b])))
        yield messages.encode(house_id, series)


def as_sent(ts_s: np.ndarray, power_w: np.ndarray) -> tuple[list, list]:
    """Timestamps and powers as the replay sends them: milliseconds and centiwatts, REDD's own precision."""
    return np.round(ts_s, 3).tolist(), np.round(power_w, 2).tolist()


# -- the rules run in-process ---------------------------------------------------------


# The columns `episodes.detect` reads.
LIMIT_COLUMNS = ("threshold_w", "normal_peak_w", "min_run_s")
DETECTOR_COLUMNS = ["house_id", "meter", "appliance", "ts_s", "power_w", *LIMIT_COLUMNS]


def batch_event_s(args: argparse.Namespace) -> float:
    """Event time one micro-batch of the job holds: its messages are `--window-s` per house."""
    return args.max_offsets_per_trigger * args.window_s / args.houses


def detect_in_process(scenario: Scenario, rules: episodes.Rules, batch_s: float, watermark_delay_s: float,
                      progress=None) -> list[dict]:
    """The job's alerts, computed here: `episodes.detect` over the replay in micro-batches of
    `batch_s` of event time, each with the watermark the job would have (the newest event
    time of the earlier batches minus the delay). Returns the last row of each alert, as the
    sinks keep it."""
    columns = []
    for house_id, source, hd in scenario.house_days:
        meters = np.asarray(source.meters, dtype=np.int64)
        limits = scenario.limits[house_id]
        per_meter = {c: np.array([getattr(limits[int(m)], c) if int(m) in limits else np.nan for m in meters])
                     for c in LIMIT_COLUMNS}
        ts_s, power_w = (np.asarray(v) for v in as_sent(hd.ts_s, hd.power_w))
        columns.append((house_id, np.asarray(source.appliances, dtype=object)[hd.channel], meters[hd.channel],
                        ts_s, power_w, {c: v[hd.channel] for c, v in per_meter.items()}))
    states = episodes.MeterStates()
    latest: dict[str, dict] = {}
    watermark_s = newest_s = 0.0
    edges = np.arange(scenario.first_s, scenario.last_s + batch_s, batch_s)
    for lo_s, hi_s in zip(edges[:-1], edges[1:]):
        pieces = []
        for house_id, appliance, meter, ts_s, power_w, limit in columns:
            lo, hi = np.searchsorted(ts_s, [lo_s, hi_s])
            if hi > lo:
                pieces.append(pd.DataFrame({
                    "house_id": np.full(hi - lo, house_id, dtype=object), "meter": meter[lo:hi],
                    "appliance": appliance[lo:hi], "ts_s": ts_s[lo:hi], "power_w": power_w[lo:hi],
                    **{c: v[lo:hi] for c, v in limit.items()}}))
        batch = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=DETECTOR_COLUMNS)
        outcome = episodes.detect(states, batch[DETECTOR_COLUMNS], watermark_s, rules)
        for row in outcome.alerts:
            latest[row["id"]] = row
        if len(batch):
            newest_s = max(newest_s, float(batch["ts_s"].max()))
            watermark_s = max(watermark_s, newest_s - watermark_delay_s)
        if progress is not None:
            progress.update(len(batch))
    return list(latest.values())


# -- the real job ---------------------------------------------------------------------


def write_thresholds(settings: config.Settings, scenario: Scenario, params: Params) -> None:
    """The scenario's thresholds into Cassandra `thresholds` (the settings' keyspace), as the nightly
    job writes them; `params.window_days` is the history the scenario computed them over."""
    from smw import cql

    handle, session = cql.connect(settings)
    try:
        insert = session.prepare("INSERT INTO thresholds (house_id, meter, appliance, quantile, threshold_w, "
                                 "samples, normal_peak_w, peak_days, fleet_meters, min_run_s, window_days, "
                                 "computed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, toTimestamp(now()))")
        appliances = {(house_id, int(m)): a for house_id, source, _ in scenario.house_days
                      for m, a in zip(source.meters, source.appliances)}
        for house_id, meters in scenario.limits.items():
            for meter, limit in meters.items():
                session.execute(insert, (house_id, meter, appliances[(house_id, meter)], params.quantile,
                                         limit.threshold_w, limit.samples,
                                         None if np.isnan(limit.normal_peak_w) else limit.normal_peak_w,
                                         params.peak_days, limit.fleet_meters,
                                         None if np.isnan(limit.min_run_s) else limit.min_run_s,
                                         params.window_days))
    finally:
        handle.shutdown()



class JobRunner:
    """Runs scenarios through Kafka, the alert job and RethinkDB; one Spark session for all of them."""

    def __init__(self, args: argparse.Namespace, rules: episodes.Rules):
        from smw import init
        from smw import spark as spark_builder

        self.args, self.rules = args, rules
        self.settings = config.from_args(args).replace(cassandra_keyspace=args.namespace,
                                                        rethinkdb_db=args.namespace)
        # The job's chatter (Spark's WARN log and console progress, warnings of its Python
        # workers, which inherit this environment, the driver's schema notices) would cut
        # through the progress bars: the figures are this tool's output.
        os.environ.setdefault("SPARK_LOG_LEVEL", "ERROR")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        logging.getLogger("cassandra").setLevel(logging.ERROR)
        init.create_cassandra(self.settings)
        init.create_rethinkdb(self.settings)
        self.spark = spark_builder.session(
            "smw-eval-alerts", self.settings.replace(spark_master=args.spark_master or "local[2]"),
            conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"})
        # The figures are the output: Spark's and the Cassandra server's notices would cut through them.
        self.spark.sparkContext.setLogLevel("ERROR")
        logging.getLogger("cassandra").setLevel(logging.ERROR)

    def close(self) -> None:
        self.spark.stop()

    def run(self, scenario: Scenario, params: Params) -> tuple[list[dict], dict]:
        """(alerts read back from RethinkDB, timings) of the job on the scenario."""

        from ingest import producer as producing
        from smw import init, rethink

        topic = f"eval-{uuid.uuid4().hex[:6]}"
        settings = self.settings.replace(kafka_topic=topic, data_dir=tempfile.mkdtemp(prefix="smw-eval-"))
        init.create_topics(settings, {topic: 4})
        t0 = time.perf_counter()
        write_thresholds(self.settings, scenario, params)
        producing.send_all(settings, messages_in_time_order(scenario.house_days, self.args.window_s))
        produced_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        alert_query, batches = alert_job.start(
            self.spark, settings, self.rules, once=True, max_offsets_per_trigger=self.args.max_offsets_per_trigger,
            watermark_delay_s=self.args.watermark_delay_s)
        try:
            alert_query.awaitTermination()
            if alert_query.exception():
                raise RuntimeError(f"alert job failed: {alert_query.exception()}")
        finally:
            alert_job.close(batches)
        job_s = time.perf_counter() - t0
        with rethink.connection(settings) as conn:
            found = list(rethink.r.table(alert.RETHINKDB_TABLE).get_all(*scenario.limits, index="house_id").run(conn))
        admin = kafka_clients.admin(settings)
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()
        return found, {"produce_s": produced_s, "job_s": job_s}


# -- scoring ----------------------------------------------------------------------------


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
        "missed": [(s.spike_id, s.appliance, s.magnitude_w, s.duration_s) for s in spikes if s not in found],
        "unmatched": [(a["house_id"], a["meter"], a["appliance"], round(a["peak_w"]), a["threshold_w"] and
                       round(a["threshold_w"]), a["start_ts_s"]) for a in on_spiked if a not in matching],
        "false": [(a["house_id"], a["meter"], a["appliance"], round(a["peak_w"]), a["threshold_w"] and
                   round(a["threshold_w"]), a["start_ts_s"]) for a in on_clean],
    }


def meets_goals(result: dict) -> bool:
    return (result["precision"] >= GOAL_PRECISION and result["recall"] >= GOAL_RECALL
            and result["false_alerts_per_house_day"] <= GOAL_FALSE_PER_HOUSE_DAY)


def parse_seeds(text: str) -> list[int]:
    """'1-8,11,13' -> [1, ..., 8, 11, 13]."""
    seeds = []
    for part in text.split(","):
        bounds = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", part)
        if not bounds:
            raise argparse.ArgumentTypeError(f"seeds are numbers and ranges like 1-8,11, got {text!r}")
        low, high = int(bounds[1]), int(bounds[2] or bounds[1])
        if high < low:
            raise argparse.ArgumentTypeError(f"empty seed range {part!r}")
        seeds += [s for s in range(low, high + 1) if s not in seeds]
    return seeds


TABLE_HEADER = ("seed", "spikes", "found", "precision", "recall", "false/house-day", "false", "house-days")


def table_rows(rows: list[dict]) -> list[tuple]:
    """One line per seed and, for more than one, the worst of each column."""
    lines = [(r["seed"], r["spikes"], r["spikes_found"], f"{r['precision']:.3f}", f"{r['recall']:.3f}",
              f"{r['false_alerts_per_house_day']:.3f}", r["alerts_on_spike_free_houses"],
              f"{r['spike_free_house_days']:.1f}") for r in rows]
    if len(rows) > 1:
        lines.append(("worst", min(r["spikes"] for r in rows), min(r["spikes_found"] for r in rows),
                      f"{min(r['precision'] for r in rows):.3f}", f"{min(r['recall'] for r in rows):.3f}",
                      f"{max(r['false_alerts_per_house_day'] for r in rows):.3f}",
                      max(r["alerts_on_spike_free_houses"] for r in rows), "-"))
    return lines


def format_table(rows: list[dict]) -> str:
    """The sweep as a Markdown table (pastes into docs/streaming.md as it is)."""
    lines = [TABLE_HEADER, *table_rows(rows)]
    return "\n".join(["| " + " | ".join(str(c) for c in lines[0]) + " |",
                      "|" + " --- |" * len(TABLE_HEADER)] + ["| " + " | ".join(str(c) for c in line) + " |"
                                                             for line in lines[1:]])


def details(row: dict) -> list[str]:
    """What a seed got wrong, by appliance: missed spikes, unmatched and false alerts."""
    out = []
    for name, key, appliance_at in (("missed spikes", "missed", 1), ("unmatched alerts", "unmatched", 2),
                                    ("false alerts", "false", 2)):
        if row[key]:
            by_appliance = Counter(item[appliance_at] for item in row[key])
            out.append(f"  seed {row['seed']} {name}: {dict(by_appliance)}")
            out += [f"      {item}" for item in row[key]]
    return out


def params_and_rules(args: argparse.Namespace) -> tuple[Params, episodes.Rules]:
    """The nightly's threshold parameters and the alert rules of a run, from its arguments."""
    # Runs are timed in the history as the rules judge them: above threshold x --multiplier, cut by --run-gap-s.
    params = config.options_from_args(Params, args, window_days=args.history_days, run_multiplier=args.multiplier,
                                      run_gap_s=args.run_gap_s)
    return params, config.options_from_args(episodes.Rules, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate_alerts", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Goals: precision >= 0.95, recall >= 0.95, false alerts <= 0.1 per "
                                            "house-day on every seed.")
    parser.add_argument("--seed", type=int, default=1, help="the seed of one run (default 1)")
    parser.add_argument("--seeds", type=parse_seeds, metavar="LIST",
                        help="a sweep instead, one row per seed: numbers and ranges, e.g. 1-8 or 1-4,9,11")
    parser.add_argument("--in-process", action="store_true",
                        help="run the episode rules in this process instead of Kafka and the alert job (fast, "
                             "no services; the job remains the reference)")
    parser.add_argument("--details", action="store_true",
                        help="list each seed's missed spikes, unmatched and false alerts by appliance")
    parser.add_argument("--houses", type=int, default=12, help="houses; half get spikes (default 12)")
    parser.add_argument("--history-days", type=int, default=7, help="spike-free days for thresholds (default 7)")
    parser.add_argument("--days", type=int, default=3, help="days replayed through the rules (default 3)")
    parser.add_argument("--spikes-per-house-day", type=float, default=4.0,
                        help="mean injected spikes per house-day on spiked houses (default 4)")
    parser.add_argument("--source", default="synthetic:6:24",
                        help="generator source (default synthetic:6:24, enough clean days that replayed days "
                             "differ from the history days)")
    # The nightly job's threshold flags and the alert job's rule flags, so that a change can be
    # evaluated before it becomes a default.
    config.add_options(parser, Params, ("quantile", "off_level_w", "standby_ratio", "peak_days", "peak_readings",
                                        "fleet_min_meters"))
    config.add_options(parser, episodes.Rules)
    parser.add_argument("--tolerance-s", type=float, default=30.0, help="slack when matching windows (default 30)")
    parser.add_argument("--window-s", type=float, default=60.0, help="event time per Kafka message (default 60)")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=2000,
                        help="messages per micro-batch of the job; the in-process mode batches the same event "
                             "time (default 2000)")
    parser.add_argument("--watermark-delay-s", type=float, default=120.0,
                        help="the alert job's watermark delay, for the in-process mode (default 120, the job's)")
    parser.add_argument("--namespace", default="smw_eval", help="Cassandra keyspace and RethinkDB db (default smw_eval)")
    config.add_arguments(parser, "kafka_bootstrap", "spark_master")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Library warnings (pandas, pyspark) would cut through the progress bars; the figures are the output.
    warnings.simplefilter("ignore")
    params, rules = params_and_rules(args)
    seeds = args.seeds or [args.seed]
    mode = "in-process" if args.in_process else "alert job"
    rows = []
    runner = None
    with logging_redirect_tqdm():
        try:
            if not args.in_process:
                runner = JobRunner(args, rules)
            for seed in tqdm(seeds, desc=f"seeds ({mode})", unit="seed", leave=False):
                t0 = time.perf_counter()
                scenario = build_scenario(args, params, seed, uuid.uuid4().hex[:6])
                if runner is None:
                    with tqdm(total=scenario.readings, desc=f"seed {seed}", unit="reading", unit_scale=True,
                              leave=False) as bar:
                        found = detect_in_process(scenario, rules, batch_event_s(args), args.watermark_delay_s, bar)
                    timing = {}
                else:
                    found, timing = runner.run(scenario, params)
                result = score(found, scenario.spikes, scenario.spiked_houses, scenario.clean_house_days,
                               args.tolerance_s)
                result.update(seed=seed, readings=scenario.readings, elapsed_s=time.perf_counter() - t0,
                              kinds=dict(Counter(a["kind"] for a in found)), **timing)
                rows.append(result)
                # A seed's row as soon as it is known: a long sweep that stops early still tells something.
                tqdm.write(f"seed {seed}: {result['spikes_found']} of {result['spikes']} spikes found, precision "
                           f"{result['precision']:.3f}, recall {result['recall']:.3f}, "
                           f"{result['false_alerts_per_house_day']:.3f} false alerts per house-day")
        finally:
            if runner is not None:
                runner.close()
    print(f"{mode}: {args.houses} houses per seed (half with {args.spikes_per_house_day:g} spikes per house-day), "
          f"{args.history_days} history days, {args.days} replayed days (the event time all houses cover)")
    print(f"rules: {rules}")
    print(f"thresholds: quantile {params.quantile}, off level {params.off_level_w} W, standby ratio "
          f"{params.standby_ratio}, normal peak held {params.peak_readings} readings on {params.peak_days} days, "
          f"fleet priors from {params.fleet_min_meters}+ meters, runs timed above threshold x {params.run_multiplier:g} "
          f"(gaps over {params.run_gap_s:g} s break them)")
    print(format_table(rows))
    for row in rows:
        speed = (f", job {row['readings'] / row['job_s']:,.0f} readings/s" if "job_s" in row else "")
        print(f"  seed {row['seed']}: {row['readings']:,} readings in {row['elapsed_s']:.0f} s{speed}; "
              f"alerts by kind {row['kinds']}")
        if args.details or len(rows) == 1:
            print(*details(row), sep="\n")
    print(f"goals: precision >= {GOAL_PRECISION}, recall >= {GOAL_RECALL}, false alerts per house-day <= "
          f"{GOAL_FALSE_PER_HOUSE_DAY} on every seed: {'met' if all(map(meets_goals, rows)) else 'NOT met'}")
    return 0 if all(map(meets_goals, rows)) else 1


if __name__ == "__main__":
    sys.exit(main())

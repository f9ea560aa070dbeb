"""The alert job's path (a per-meter summary, then the readings of the meters that need them)
raises exactly the alerts of the rules run on every reading, on generated houses with spikes."""
import numpy as np
import pandas as pd
import pytest

from datasets import generator
from batch.nightly import Params
from smw import energy
from streaming import episodes

RULES = episodes.Rules(no_data_after_s=900.0, no_data_min_readings=20, new_peak_warmup_s=3600.0)
BATCH_S = 20.0  # event time per micro-batch


def short_run_window(readings: pd.DataFrame) -> tuple[float, float]:
    start_s = readings["ts_s"].min() + 10 * 3600
    return start_s, start_s + 300.0


@pytest.fixture(scope="module")
def house_readings():
    """Two generated house-days with spikes (one house loses a meter for an hour), and thresholds
    (the nightly job's statistics, default parameters) from two spike-free days before them."""
    gen = generator.Generator(generator.GeneratorConfig(houses=2, days=2, seed=7, source="synthetic:2:3", period_s=15.0,
                                                        spikes_per_house_day=12.0))
    clean = generator.Generator(generator.GeneratorConfig(houses=2, days=3, seed=7, source="synthetic:2:3", period_s=15.0,
                                                          spikes_per_house_day=0.0), sources=gen.sources)
    params = Params()
    frames = []
    for plan in gen.plans:
        source = gen.sources[plan.source]
        history = [clean.house_day(plan, day) for day in (0, 2)]
        replay = gen.house_day(plan, 1)
        assert replay.spikes, "the scenario needs spikes"
        for index, meter in enumerate(source.meters):
            ts_s = np.concatenate([day.ts_s[day.channel == index] for day in history])
            power_w = np.concatenate([day.power_w[day.channel == index] for day in history]).astype(float)
            levels = energy.meter_levels(ts_s, power_w, plan.tz, params.quantile, params.off_level_w,
                                         params.standby_ratio, params.peak_readings, params.peak_days,
                                         run_multiplier=params.run_multiplier, run_gap_s=params.run_gap_s)
            rows = replay.channel == index
            frames.append(pd.DataFrame({
                "house_id": plan.house_id, "meter": int(meter), "appliance": source.appliances[index],
                "ts_s": replay.ts_s[rows], "power_w": replay.power_w[rows].astype(float),
                "threshold_w": levels.threshold_w, "normal_peak_w": levels.peak_w, "min_run_s": levels.min_run_s}))
    readings = pd.concat(frames, ignore_index=True)
    # A fridge draws its defrost level for 5 minutes, much shorter than its defrosts: the short-run rule's case.
    fridge = readings[(readings["appliance"] == "refrigerator") & readings["min_run_s"].notna()
                      & (readings["normal_peak_w"] * 0.8 > readings["threshold_w"] * RULES.multiplier)].iloc[0]
    short = ((readings["house_id"] == fridge["house_id"]) & (readings["meter"] == fridge["meter"])
             & readings["ts_s"].between(*short_run_window(readings), inclusive="left"))
    readings.loc[short, "power_w"] = fridge["normal_peak_w"] * 0.8
    # A meter of the first house falls silent for an hour: no_data opens, then its return closes it.
    first = readings["house_id"] == gen.plans[0].house_id
    meter = readings.loc[first, "meter"].max()
    start = readings["ts_s"].min() + 4 * 3600
    gap = first & (readings["meter"] == meter) & readings["ts_s"].between(start, start + 3600)
    return readings[~gap].sort_values("ts_s", kind="stable").reset_index(drop=True)


def micro_batches(readings: pd.DataFrame):
    """Readings cut into micro-batches of BATCH_S of event time, each with the watermark it starts with."""
    window = np.floor((readings["ts_s"] - readings["ts_s"].min()) / BATCH_S).astype(int)
    newest = 0.0
    for _, batch in readings.groupby(window, sort=True):
        yield batch, (newest - 120.0 if newest else 0.0)
        newest = max(newest, batch["ts_s"].max())


def every_reading(readings: pd.DataFrame):
    """The reference: every reading of every meter through the state machine."""
    states, alerts = episodes.MeterStates(), []
    for batch, watermark_s in micro_batches(readings):
        outcome = episodes.Outcome()
        emit = episodes._Emitter(RULES, outcome)
        states.rows(batch["house_id"], batch["meter"], batch["appliance"])
        episodes.apply_readings(states, batch, RULES, emit, outcome)
        if watermark_s > 0:
            episodes.apply_silence(states, watermark_s, RULES, emit)
        alerts += outcome.alerts
    return states, alerts


def filtered(readings: pd.DataFrame):
    """The alert job's path: a summary of every meter, readings only of those `plan` picks."""
    states, alerts, read = episodes.MeterStates(), [], 0
    for batch, watermark_s in micro_batches(readings):
        outcome = episodes.Outcome()
        emit = episodes._Emitter(RULES, outcome)
        summary = episodes.summarise(batch)
        rows = states.rows(summary.house_id, summary.meter, summary.appliance)
        limits = batch.groupby(["house_id", "meter"], sort=False)[["threshold_w", "normal_peak_w", "min_run_s"]].first(
            ).reindex(pd.MultiIndex.from_arrays([summary.house_id, summary.meter]))
        raise_w = episodes.raise_levels(limits["threshold_w"].to_numpy(), limits["normal_peak_w"].to_numpy(),
                                        summary.appliance, RULES)
        run_w = episodes.run_levels(limits["threshold_w"].to_numpy(), limits["min_run_s"].to_numpy(), raise_w, RULES)
        needs = episodes.plan(states, rows, summary, raise_w, RULES, run_w)
        episodes.apply_summary(states, rows, summary, needs, outcome)
        wanted = pd.MultiIndex.from_arrays([summary.house_id[needs], summary.meter[needs]])
        chosen = batch[pd.MultiIndex.from_frame(batch[["house_id", "meter"]]).isin(wanted)]
        read += len(chosen)
        episodes.apply_readings(states, chosen, RULES, emit, outcome)
        if watermark_s > 0:
            episodes.apply_silence(states, watermark_s, RULES, emit)
        alerts += outcome.alerts
    return states, alerts, read


def test_the_filtered_path_raises_the_alerts_of_every_reading(house_readings):
    want_states, want = every_reading(house_readings)
    got_states, got, read = filtered(house_readings)
    kinds = {a["kind"] for a in want}
    assert {episodes.KIND_OVERSHOOT, episodes.KIND_NO_DATA} <= kinds
    # The fridge's short run at its defrost level is among them, opened when the run ended.
    start_s, end_s = short_run_window(house_readings)
    assert [a["state"] for a in want if a["appliance"] == "refrigerator" and start_s <= a["start_ts_s"] < end_s
            and a["peak_w"] < a["threshold_w"] * 3] == ["open", "closed"]
    assert got == want
    # ...having shipped only a small part of the readings to the rules.
    assert read < 0.2 * len(house_readings)
    for name in ("phase", "readings", "ep_n"):
        assert np.array_equal(got_states.ints[name], want_states.ints[name]), name
    for name in ("last_ts_s", "first_ts_s", "record_w", "ep_peak_w", "no_data_start_ts_s", "closed_ts_s"):
        assert np.array_equal(got_states.floats[name], want_states.floats[name], equal_nan=True), name


def test_a_meter_without_news_is_not_read_and_one_with_a_late_reading_is(house_readings):
    states = episodes.MeterStates()
    batch = house_readings[house_readings["ts_s"] < house_readings["ts_s"].min() + BATCH_S]
    summary = episodes.summarise(batch)
    rows = states.rows(summary.house_id, summary.meter, summary.appliance)
    calm = np.full(len(rows), np.inf)  # no reading is above an infinite raise level
    assert not episodes.plan(states, rows, summary, calm, RULES).any()
    episodes.apply_summary(states, rows, summary, np.zeros(len(rows), bool), episodes.Outcome())
    # The same readings again, and one new one of the first meter: only that meter is read.
    first = batch.iloc[[0]].assign(ts_s=batch["ts_s"].max() + 1.0)
    again = episodes.summarise(pd.concat([batch, first]))
    rows = states.rows(again.house_id, again.meter)
    needs = episodes.plan(states, rows, again, calm, RULES)
    assert needs.sum() == 1 and again.house_id[needs][0] == first["house_id"].iloc[0]
    outcome = episodes.Outcome()
    episodes.apply_summary(states, rows, again, needs, outcome)
    same_meter = (batch["house_id"] == first["house_id"].iloc[0]) & (batch["meter"] == first["meter"].iloc[0])
    assert outcome.out_of_order == len(batch) - same_meter.sum()

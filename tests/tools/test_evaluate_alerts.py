"""The evaluation's own pieces: thresholds as the nightly job computes them, the common replay window,
the in-process rules and the sweep table."""
import argparse

import numpy as np
import pytest

from batch.nightly import Params
from datasets import generator
from smw import energy
from streaming.episodes import Rules
from tools import evaluate_alerts as evaluate


@pytest.fixture(scope="module")
def gen():
    return generator.Generator(generator.GeneratorConfig(houses=2, days=2, seed=4, source="synthetic:2:3",
                                                         spikes_per_house_day=0))


def test_thresholds_are_the_power_in_use_not_the_standby_draw(gen):
    plan = gen.plans[0]
    source = gen.sources[plan.source]
    limits = evaluate.levels_from_history(gen, plan, range(2), Params())
    house_days = [gen.house_day(plan, day) for day in range(2)]
    checked = 0
    for index, meter in enumerate(source.meters):
        power_w = np.concatenate([hd.power_w[hd.channel == index] for hd in house_days]).astype(np.float64)
        if source.appliances[index] in ("oven", "microwave", "dishwasher", "washer_dryer") and power_w.max() > 100:
            # Off most of the day: the median is the standby draw, the threshold the power in use.
            assert limits[int(meter)].threshold_w > 20 * np.median(power_w), source.appliances[index]
            assert limits[int(meter)].samples < len(power_w) / 10
            checked += 1
    assert checked >= 2


def test_replay_window_is_the_event_time_every_house_covers(gen):
    house_days = [(f"x{plan.house_id}", None, gen.house_day(plan, day)) for plan in gen.plans for day in range(2)]
    first_s, last_s = evaluate.common_window(house_days)
    starts = {h: min(hd.ts_s.min() for h2, _, hd in house_days if h2 == h) for h, _, _ in house_days}
    ends = {h: max(hd.ts_s.max() for h2, _, hd in house_days if h2 == h) for h, _, _ in house_days}
    assert len(set(starts.values())) == 2  # different zones and shifts: the houses do not start together
    assert first_s == max(starts.values()) and last_s == min(ends.values())
    for _, _, hd in house_days:
        part = evaluate.clipped(hd, first_s, last_s)
        assert len(part.ts_s) and part.ts_s.min() >= first_s and part.ts_s.max() <= last_s
        assert len(part.ts_s) == len(part.power_w) == len(part.channel)


def test_seed_lists_take_numbers_and_ranges():
    assert evaluate.parse_seeds("1-3,5,2") == [1, 2, 3, 5]
    assert evaluate.parse_seeds("7") == [7]
    for bad in ("3-1", "a", "1-"):
        with pytest.raises(argparse.ArgumentTypeError):
            evaluate.parse_seeds(bad)


def test_sweep_table_has_a_row_per_seed_and_the_worst_of_each_column():
    rows = [dict(seed=1, spikes=50, spikes_found=50, precision=1.0, recall=1.0, false_alerts_per_house_day=0.06,
                 alerts_on_spike_free_houses=1, spike_free_house_days=17.0),
            dict(seed=2, spikes=60, spikes_found=57, precision=0.97, recall=0.95, false_alerts_per_house_day=0.0,
                 alerts_on_spike_free_houses=0, spike_free_house_days=16.5)]
    lines = evaluate.format_table(rows).splitlines()
    assert len(lines) == 2 + 2 + 1
    assert lines[2].startswith("| 1 | 50 | 50 | 1.000 | 1.000 | 0.060 | 1 | 17.0 |")
    assert lines[-1] == "| worst | 50 | 50 | 0.970 | 0.950 | 0.060 | 1 | - |"
    assert len(evaluate.format_table(rows[:1]).splitlines()) == 3  # one seed: no worst row


def test_fleet_medians_stand_in_for_a_meter_never_on():
    level = energy.MeterLevels
    levels = {("a", 20): level(1500.0, 300, 1400.0, 1450.0, 600.0), ("b", 20): level(1700.0, 200, 1600.0, 1650.0, 900.0),
              ("c", 20): level(10.0, 0, np.nan, np.nan, np.nan), ("c", 21): level(10.0, 0, np.nan, np.nan, np.nan)}
    appliances = {("a", 20): "outdoor_outlets", ("b", 20): "outdoor_outlets", ("c", 20): "outdoor_outlets",
                  ("c", 21): "smoke_alarms"}
    limits = evaluate.thresholds_of_fleet(levels, appliances, Params(fleet_min_meters=2))
    # A run length is the meter's own: the fleet fills none in.
    never_on = limits[("c", 20)]
    assert (never_on.threshold_w, never_on.samples, never_on.normal_peak_w, never_on.fleet_meters) == (1600.0, 0, 1500.0, 2)
    assert np.isnan(never_on.min_run_s)
    assert limits[("a", 20)] == evaluate.Threshold(1500.0, 300, 1450.0, 2, 600.0)  # its one-off is below the fleet's
    assert limits[("c", 21)].threshold_w == 10.0 and np.isnan(limits[("c", 21)].normal_peak_w)  # no smoke alarm on


def test_in_process_micro_batches_raise_the_alerts_of_a_single_pass():
    """Cutting the replay into the job's micro-batches (with its watermark) changes no overshoot."""
    args = evaluate.build_parser().parse_args(["--in-process", "--houses", "4", "--history-days", "2", "--days", "1",
                                               "--source", "synthetic:2:4"])
    scenario = evaluate.build_scenario(args, Params(window_days=2), 3, "t")
    assert scenario.spikes and any(t.fleet_meters for meters in scenario.limits.values() for t in meters.values())
    batched = evaluate.detect_in_process(scenario, Rules(), evaluate.batch_event_s(args), 120.0)
    whole = evaluate.detect_in_process(scenario, Rules(), 10 * 86400.0, 120.0)

    def overshoots(found):
        return {(a["id"], a["start_ts_s"]) for a in found if a["kind"] == "overshoot"}

    assert overshoots(batched) == overshoots(whole) and overshoots(batched)
    result = evaluate.score(batched, scenario.spikes, scenario.spiked_houses, scenario.clean_house_days, 30.0)
    assert result["spikes_found"] > len(scenario.spikes) / 2

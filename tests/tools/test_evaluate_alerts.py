"""The evaluation's own pieces: thresholds as the nightly job computes them, the common replay window."""
import numpy as np
import pytest

from batch.nightly import Params
from datasets import generator
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

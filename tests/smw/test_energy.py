"""Energy and threshold maths on tiny inline series: every edge case by hand."""
import datetime as dt

import numpy as np
import pytest

from smw import energy

NY = "America/New_York"
# 2011-04-18 00:00 in New York (EDT, UTC-4) is 04:00 UTC.
MIDNIGHT_NY = dt.datetime(2011, 4, 18, 4, 0, tzinfo=dt.timezone.utc).timestamp()


def hours(ts, power, cap=50.0, tz=NY):
    return energy.hourly_pieces(np.array(ts, dtype=float), np.array(power, dtype=float), cap, tz)


def by_day(frame):
    return {day: (group.energy_j.sum(), group.covered_s.sum(), group.samples.sum())
            for day, group in frame.groupby("day")}


def test_left_riemann_sum_in_one_hour():
    frame = hours([MIDNIGHT_NY + 10, MIDNIGHT_NY + 13, MIDNIGHT_NY + 19], [100.0, 200.0, 50.0])
    assert len(frame) == 1
    assert frame.energy_j.iat[0] == pytest.approx(100 * 3 + 200 * 6)
    assert frame.covered_s.iat[0] == pytest.approx(9)
    assert (frame.samples.iat[0], frame.min_w.iat[0], frame.max_w.iat[0]) == (3, 50.0, 200.0)


def test_interval_crossing_local_midnight_is_split_between_days():
    frame = hours([MIDNIGHT_NY - 20, MIDNIGHT_NY + 10], [360.0, 1.0])
    days = by_day(frame)
    assert days[dt.date(2011, 4, 17)] == pytest.approx((360 * 20, 20, 1))
    assert days[dt.date(2011, 4, 18)] == pytest.approx((360 * 10, 10, 1))


def test_gap_longer_than_the_cap_counts_the_cap_only():
    frame = hours([MIDNIGHT_NY + 100, MIDNIGHT_NY + 100 + 7200], [1000.0, 5.0], cap=50.0)
    assert frame.energy_j.sum() == pytest.approx(1000 * 50)
    assert frame.covered_s.sum() == pytest.approx(50)


def test_single_reading_has_no_energy():
    frame = hours([MIDNIGHT_NY + 5], [500.0])
    assert frame.energy_j.sum() == 0 and frame.samples.sum() == 1


def test_duplicates_merge_to_their_mean_and_order_does_not_matter():
    ts = [MIDNIGHT_NY + 6, MIDNIGHT_NY + 0, MIDNIGHT_NY + 3, MIDNIGHT_NY + 3]
    power = [7.0, 10.0, 20.0, 40.0]
    frame = hours(ts, power)
    assert frame.energy_j.sum() == pytest.approx(10 * 3 + 30 * 3)
    assert frame.samples.sum() == 3
    shuffled = hours(ts[::-1], power[::-1])
    assert shuffled.energy_j.sum() == frame.energy_j.sum()


def test_negative_power_exports_energy():
    frame = hours([MIDNIGHT_NY, MIDNIGHT_NY + 10], [-250.0, -250.0])
    assert frame.energy_j.sum() == pytest.approx(-2500)


def test_dst_spring_forward_day_has_23_hours_and_splits_at_real_boundaries():
    # 2011-03-13: New York jumps from 02:00 EST to 03:00 EDT. 01:00 EST = 06:00 UTC.
    day_start = dt.datetime(2011, 3, 13, 5, 0, tzinfo=dt.timezone.utc).timestamp()
    ts = np.arange(day_start, day_start + 23 * 3600 + 1, 30.0)  # the whole local day, 30 s apart
    frame = hours(ts, np.full(len(ts), 100.0), cap=50.0)
    day = frame[frame.day == dt.date(2011, 3, 13)]
    assert len(day) == 23
    assert day.covered_s.sum() == pytest.approx(23 * 3600)
    # Local hours 01:00 EST and 03:00 EDT are consecutive real hours.
    starts = sorted(day.hour_start_s)
    assert np.all(np.diff(starts) == 3600)


def test_dst_fall_back_day_has_25_distinct_hours():
    day_start = dt.datetime(2011, 11, 6, 4, 0, tzinfo=dt.timezone.utc).timestamp()  # 00:00 EDT
    ts = np.arange(day_start, day_start + 25 * 3600 + 1, 30.0)
    frame = hours(ts, np.full(len(ts), 100.0), cap=50.0)
    day = frame[frame.day == dt.date(2011, 11, 6)]
    assert len(day) == 25 and day.covered_s.sum() == pytest.approx(25 * 3600)


def test_interval_crossing_an_hour_is_split():
    frame = hours([MIDNIGHT_NY + 3600 - 10, MIDNIGHT_NY + 3600 + 30], [3600.0, 0.0])
    assert list(frame.covered_s) == pytest.approx([10, 30])
    assert list(frame.samples) == [1, 1]


def test_cap_above_an_hour_is_refused():
    with pytest.raises(ValueError, match="3600"):
        hours([0.0], [1.0], cap=7200)


def test_quantile_excludes_off_readings_and_matches_numpy():
    power = np.array([0.0, 2.0, 3.0] * 100 + list(np.linspace(100, 200, 101)))
    ts = MIDNIGHT_NY + np.arange(len(power)) * 3.0
    threshold, samples, profile = energy.quantile_thresholds(ts, power, NY, 0.97, 5.0, 30)
    assert samples == 101
    assert threshold == pytest.approx(np.quantile(np.linspace(100, 200, 101), 0.97))
    assert not np.isnan(profile[0]) and all(np.isnan(p) for p in profile[1:])


def test_a_meter_never_on_gets_the_off_level_and_one_without_readings_nan():
    threshold, samples, profile = energy.quantile_thresholds(np.array([1e9, 1e9 + 3]), np.array([1.0, 2.0]), NY,
                                                             0.97, 5, 1)
    assert samples == 0 and threshold == 5.0 and all(np.isnan(profile))
    threshold, samples, _ = energy.quantile_thresholds(np.array([]), np.array([]), NY, 0.97, 5, 1)
    assert samples == 0 and np.isnan(threshold)


def test_standby_above_the_fixed_floor_is_excluded_from_the_threshold():
    # A kitchen circuit: 35 W of clocks and chargers all day, a kettle at 1,200-1,400 W now and then.
    rng = np.random.default_rng(3)
    use_w = np.linspace(1200, 1400, 30)
    power = np.concatenate([35 + rng.uniform(-2, 2, 2000), use_w])
    ts = MIDNIGHT_NY + np.arange(len(power)) * 3.0
    with_floor_only, _, _ = energy.quantile_thresholds(ts, power, NY, 0.97, 10.0, 30, standby_ratio=0.0)
    assert with_floor_only < 40  # the old failure: the threshold is the standby draw
    threshold, samples, _ = energy.quantile_thresholds(ts, power, NY, 0.97, 10.0, 30, standby_ratio=2.0)
    assert samples == len(use_w)
    assert threshold == pytest.approx(np.quantile(use_w, 0.97))


def test_a_steady_load_keeps_the_fixed_floor():
    # Always on at ~60 W: nothing is above 2 x its median, so its readings above 10 W count.
    power = np.linspace(55.0, 65.0, 1000)
    ts = MIDNIGHT_NY + np.arange(len(power)) * 3.0
    assert energy.off_level(power, 10.0, 2.0) == 10.0
    threshold, samples, _ = energy.quantile_thresholds(ts, power, NY, 0.97, 10.0, 30, standby_ratio=2.0)
    assert samples == 1000 and threshold == pytest.approx(np.quantile(power, 0.97))


@pytest.mark.parametrize("tz", [NY, "America/Phoenix", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham",
                                "Europe/London", "UTC"])
def test_local_seconds_lookup_equals_per_reading_conversion(tz):
    rng = np.random.default_rng(5)
    # Two years of random instants: every DST change of those zones in between.
    ts = np.sort(rng.uniform(1293840000.0, 1356998400.0, 20000))
    ts = np.concatenate([ts, [1300000000.0, 1300000000.25]])
    assert np.array_equal(energy.local_seconds(ts, tz), ts + energy._utc_offsets_s(ts, tz))

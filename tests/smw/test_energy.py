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
    threshold, samples = energy.quantile_threshold(power, 0.97, 5.0)
    assert samples == 101
    assert threshold == pytest.approx(np.quantile(np.linspace(100, 200, 101), 0.97))


def test_a_meter_never_on_gets_the_off_level_and_one_without_readings_nan():
    threshold, samples = energy.quantile_threshold(np.array([1.0, 2.0]), 0.97, 5)
    assert samples == 0 and threshold == 5.0
    threshold, samples = energy.quantile_threshold(np.array([]), 0.97, 5)
    assert samples == 0 and np.isnan(threshold)


def test_standby_above_the_fixed_floor_is_excluded_from_the_threshold():
    # A kitchen circuit: 35 W of clocks and chargers all day, a kettle at 1,200-1,400 W now and then.
    rng = np.random.default_rng(3)
    use_w = np.linspace(1200, 1400, 30)
    power = np.concatenate([35 + rng.uniform(-2, 2, 2000), use_w])
    with_floor_only, _ = energy.quantile_threshold(power, 0.97, 10.0, standby_ratio=0.0)
    assert with_floor_only < 40  # the old failure: the threshold is the standby draw
    threshold, samples = energy.quantile_threshold(power, 0.97, 10.0, standby_ratio=2.0)
    assert samples == len(use_w)
    assert threshold == pytest.approx(np.quantile(use_w, 0.97))


def test_a_steady_load_keeps_the_fixed_floor():
    # Always on at ~60 W: nothing is above 2 x its median, so its readings above 10 W count.
    power = np.linspace(55.0, 65.0, 1000)
    assert energy.off_level(power, 10.0, 2.0) == 10.0
    threshold, samples = energy.quantile_threshold(power, 0.97, 10.0, standby_ratio=2.0)
    assert samples == 1000 and threshold == pytest.approx(np.quantile(power, 0.97))


def day_of(day, seconds, power):
    """(ts_s, power_w) of readings 3 s apart starting `seconds` into local day `day` (New York)."""
    return MIDNIGHT_NY + day * 86400 + seconds + 3.0 * np.arange(len(power)), np.array(power, dtype=float)


def joined(*parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_held_level_is_the_lowest_reading_of_the_best_run_per_local_day():
    ts, power = joined(
        day_of(0, 3600, [5, 400, 380, 390, 5, 900, 5]),   # 900 is held for one reading only: day 0 holds 380
        day_of(1, 7200, [5, 300, 310, 320, 330, 5]),      # best run of three: 310, 320, 330 -> 310
        day_of(2, 100, [5, 5]),                           # with day 1's last reading, a run at 5 W
    )
    assert list(energy.held_levels_by_day(ts, power, NY, 3)) == [380.0, 310.0, 5.0]
    assert list(energy.held_levels_by_day(ts, power, NY, 1)) == [900.0, 330.0, 5.0]
    assert list(energy.held_levels_by_day(ts[:2], power[:2], NY, 3)) == []


def test_held_levels_merge_duplicates_order_readings_and_split_at_local_midnight():
    # Readings from 23:59:51 to 00:00:03 New York time, shuffled, one timestamp twice (merged to
    # its mean, 200 W). A run belongs to the day of its last reading: the run 23:59:54-00:00:00
    # (300, 310, 260) is day 1's, the run ending 23:59:57 (5, 300, 310) day 0's.
    ts = MIDNIGHT_NY + 86400 + np.array([3.0, -6.0, 0.0, 3.0, -3.0, -9.0])
    power = np.array([150.0, 300.0, 260.0, 250.0, 310.0, 5.0])
    assert list(energy.held_levels_by_day(ts, power, NY, 3)) == [260.0, 5.0]
    with pytest.raises(ValueError):
        energy.held_levels_by_day(ts, power, NY, 0)


RUNS = dict(run_multiplier=2.0, run_gap_s=60.0)


def test_whole_runs_are_timed_from_first_to_last_reading_and_cut_ones_are_not():
    ts, power = joined(
        day_of(0, 3600, [5, 400, 400, 400, 400, 5]),      # a whole run: 4 readings, 9 s
        day_of(0, 7200, [5, 400, 400, 5, 5]),             # too short to count (2 readings)
        day_of(1, 3600, [400, 400, 400, 5]),              # begins where the data does (after day 0's last: 1 day)
        day_of(1, 7200, [5, 400, 400, 400, 400, 400, 400, 400]),  # still running 2 min before the next reading...
        day_of(1, 7200 + 3 * 7 + 120, [400, 5]),           # ...so its length is unknown
        day_of(2, 3600, [5, 300, 300, 300, 300, 300, 300, 5]),  # 15 s
    )
    durations_s, days = energy.run_durations_by_day(ts, power, NY, 200.0, 3, 60.0)
    assert list(durations_s) == [9.0, 15.0]
    assert list(days - days[0]) == [0, 2]
    # A level no reading reaches, or readings not enough for one run: nothing.
    assert len(energy.run_durations_by_day(ts, power, NY, 1000.0, 3, 60.0)[0]) == 0
    assert len(energy.run_durations_by_day(ts[:4], power[:4], NY, 200.0, 3, 60.0)[0]) == 0
    assert energy.shortest_run_s(ts, power, NY, 200.0, 3, 60.0, run_days=2) == 9.0
    assert np.isnan(energy.shortest_run_s(ts, power, NY, 200.0, 3, 60.0, run_days=3))
    with pytest.raises(ValueError):
        energy.run_durations_by_day(ts, power, NY, 200.0, 0, 60.0)


def test_min_run_is_the_shortest_defrost_over_twice_the_threshold():
    # A fridge: 100 W compressor, a 400 W defrost of 20 readings (57 s) on day 0 and of 25 on day 1.
    compressor = [4] * 10 + [100] * 20
    ts, power = joined(day_of(0, 0, compressor + [400] * 20 + compressor), day_of(1, 0, compressor + [400] * 25 + [4]))
    levels = energy.meter_levels(ts, power, NY, 0.5, 10.0, 0.0, 3, 2, **RUNS)
    assert levels.threshold_w == 100.0 and levels.min_run_s == 57.0
    # Timed above 5 x the threshold, the defrost is no run; defrosting on one day only, no usual length.
    assert np.isnan(energy.meter_levels(ts, power, NY, 0.5, 10.0, 0.0, 3, 2, run_multiplier=5.0, run_gap_s=60.0
                                        ).min_run_s)
    assert np.isnan(energy.meter_levels(ts, power, NY, 0.5, 10.0, 0.0, 3, 3, **RUNS).min_run_s)


def test_normal_peak_is_a_level_reached_on_several_days_and_top_the_best_single_day():
    # A fridge: 100 W compressor every day, a 400 W defrost on days 0 and 2, a 600 W one-off on day 1.
    compressor = [4] * 10 + [100] * 20
    ts, power = joined(day_of(0, 0, compressor + [400] * 5), day_of(1, 0, compressor + [600] * 5),
                       day_of(2, 0, compressor + [410] * 5), day_of(3, 0, compressor))
    levels = energy.meter_levels(ts, power, NY, 0.5, 10.0, 0.0, run_readings=3, peak_days=2, **RUNS)
    assert (levels.peak_w, levels.top_w) == (410.0, 600.0)
    assert energy.meter_levels(ts, power, NY, 0.5, 10.0, 0.0, 3, peak_days=3, **RUNS).peak_w == 400.0
    assert energy.meter_levels(ts, power, NY, 0.5, 10.0, 0.0, 3, peak_days=4, **RUNS).peak_w == 100.0
    assert np.isnan(energy.meter_levels(ts, power, NY, 0.5, 10.0, 0.0, 3, peak_days=5, **RUNS).peak_w)
    on = [p for p in power if p > 10]
    assert (levels.threshold_w, levels.samples) == (float(np.quantile(on, 0.5)), len(on))


def test_levels_at_the_off_level_are_no_peak():
    # Used on one day only, standby otherwise: no level above the off level on two days.
    ts, power = joined(day_of(0, 0, [3] * 5 + [1500] * 5), day_of(1, 0, [3] * 10))
    levels = energy.meter_levels(ts, power, NY, 0.9, 10.0, 2.0, 3, 2, **RUNS)
    assert np.isnan(levels.peak_w) and levels.top_w == 1500.0
    never_on = energy.meter_levels(ts, np.full(len(ts), 3.0), NY, 0.9, 10.0, 2.0, 3, 2, **RUNS)
    assert (never_on.threshold_w, never_on.samples) == (10.0, 0)
    assert np.isnan(never_on.peak_w) and np.isnan(never_on.top_w)
    nothing = energy.meter_levels(np.array([]), np.array([]), NY, 0.9, 10.0, 2.0, 3, 2, **RUNS)
    assert np.isnan(nothing.threshold_w) and np.isnan(nothing.peak_w) and np.isnan(nothing.min_run_s)
    assert np.isnan(never_on.min_run_s)


def test_fleet_prior_is_the_median_over_meters_that_were_on():
    threshold_w = np.array([100.0, 120.0, 200.0, 10.0])
    samples = np.array([50, 60, 70, 0])  # the last was never on: not part of the prior
    peak_w = np.array([400.0, np.nan, 500.0, np.nan])  # the second has no established peak
    prior = energy.fleet_prior(threshold_w, samples, peak_w, min_meters=3)
    assert prior == energy.FleetPrior(threshold_w=120.0, peak_w=450.0, meters=3)
    assert energy.fleet_prior(threshold_w, samples, peak_w, min_meters=4) is None
    assert np.isnan(energy.fleet_prior(threshold_w[1:2], samples[1:2], peak_w[1:2], 1).peak_w)


def test_judged_levels_fill_a_never_on_meter_and_a_one_off_from_the_fleet():
    prior = energy.FleetPrior(threshold_w=1200.0, peak_w=1500.0, meters=5)
    threshold_w = np.array([100.0, 100.0, 100.0, 100.0, 10.0])
    samples = np.array([900, 900, 900, 900, 0])
    peak_w = np.array([300.0, 300.0, np.nan, 300.0, np.nan])
    top_w = np.array([500.0, 2000.0, 800.0, 250.0, np.nan])
    judged = energy.judged_levels(threshold_w, samples, peak_w, top_w, prior)
    # one-off within the fleet's peak; one-off capped at it; no own peak; top below peak; never on
    assert np.array_equal(judged[0], [100.0, 100.0, 100.0, 100.0, 1200.0])
    assert np.array_equal(judged[1], [500.0, 1500.0, 800.0, 300.0, 1500.0])
    assert np.array_equal(judged[2], [5, 5, 5, 0, 5])
    alone = energy.judged_levels(threshold_w, samples, peak_w, top_w, None)
    assert np.array_equal(alone[1], peak_w, equal_nan=True) and not alone[2].any()
    no_fleet_peak = energy.judged_levels(threshold_w, samples, peak_w, top_w, energy.FleetPrior(1200.0, np.nan, 5))
    assert np.array_equal(no_fleet_peak[1], [300.0, 300.0, np.nan, 300.0, np.nan], equal_nan=True)


@pytest.mark.parametrize("tz", [NY, "America/Phoenix", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham",
                                "Europe/London", "UTC"])
def test_local_seconds_lookup_equals_per_reading_conversion(tz):
    rng = np.random.default_rng(5)
    # Two years of random instants: every DST change of those zones in between.
    ts = np.sort(rng.uniform(1293840000.0, 1356998400.0, 20000))
    ts = np.concatenate([ts, [1300000000.0, 1300000000.25]])
    assert np.array_equal(energy.local_seconds(ts, tz), ts + energy._utc_offsets_s(ts, tz))

"""The nightly job's Spark transforms one at a time, each on a few inline rows."""
import datetime as dt

import pytest
from pyspark.sql.types import StructType
from pyspark.testing import assertDataFrameEqual

from batch import nightly

pytestmark = pytest.mark.spark
UTC = dt.timezone.utc
DAY = dt.date(2024, 4, 2)
MIDNIGHT_NY = dt.datetime(2024, 4, 2, 4, 0, tzinfo=UTC)  # 00:00 EDT
SPRING_FORWARD = dt.date(2024, 3, 10)  # 23 hours long in America/New_York
HOUR = dt.timedelta(hours=1)
# Results are divisions of doubles: compare them to the hand-worked values within rounding.
TOLERANCE = dict(rtol=1e-9, atol=1e-12)

# The hour rows of the per-meter pass, typed as that pass outputs them.
HOUR_SCHEMA = StructType([field for field in nightly.stats_schema().fields if field.name in nightly.HOUR_COLUMNS])
METER_INFO_SCHEMA = "house_id string, meter int, label string, appliance string"
DAILY_SCHEMA = ("house_id string, day date, meter int, label string, appliance string, energy_kwh double, "
                "coverage double, samples bigint")
TOTALS_SCHEMA = ("house_id string, day date, mains_kwh double, circuits_kwh double, untracked_kwh double, "
                 "coverage double")


def test_hourly_rollup_gives_kwh_and_the_mean_over_covered_time(spark):
    """kWh = J / 3.6e6, mean_w = energy over covered seconds (null when none), names joined in."""
    t0 = MIDNIGHT_NY.timestamp()
    hourly = spark.createDataFrame([
        ("h1", 1, DAY, t0, 1.8e6, 3600.0, 360, 100.0, 900.0),
        ("h1", 5, DAY, t0 + 3600, 1.8e5, 1800.0, 60, 80.0, 120.0),  # readings for half the hour
        ("h1", 5, DAY, t0 + 7200, 0.0, 0.0, 1, 120.0, 120.0),  # a lone reading covers nothing
    ], HOUR_SCHEMA)
    meters = spark.createDataFrame([("h1", 1, "mains", "mains"), ("h1", 5, "fridge", "refrigerator")],
                                   METER_INFO_SCHEMA)
    expected = spark.createDataFrame([
        ("h1", DAY, MIDNIGHT_NY, 1, 0.5, 500.0, 100.0, 900.0, 360),  # 1.8e6 / 3.6e6 kWh; 1.8e6 J / 3600 s
        # 1.8e5 / 3.6e6 = 0.05 kWh; 1.8e5 J / 1800 s = 100 W (not the 50 W an hour's average would give)
        ("h1", DAY, MIDNIGHT_NY + HOUR, 5, 0.05, 100.0, 80.0, 120.0, 60),
        ("h1", DAY, MIDNIGHT_NY + 2 * HOUR, 5, 0.0, None, 120.0, 120.0, 1),
    ], "house_id string, day date, hour_start timestamp, meter int, energy_kwh double, mean_w double, "
       "min_w double, max_w double, samples int")
    assertDataFrameEqual(nightly.hourly_rollup(hourly, meters), expected, checkRowOrder=False, **TOLERANCE)


def test_daily_energy_coverage_is_over_the_local_day(spark):
    """Hours sum per meter-day; coverage is over 24 h on a normal day, 23 h on spring-forward."""
    normal = dt.date(2024, 3, 9)
    t9, t10 = (dt.datetime(2024, 3, d, 5, tzinfo=UTC).timestamp() for d in (9, 10))  # 00:00 EST
    hourly = spark.createDataFrame([
        ("h1", 1, normal, t9, 3.6e6, 3600.0, 360, 900.0, 1100.0),
        ("h1", 1, normal, t9 + 3600, 1.8e6, 1800.0, 180, 0.0, 1100.0),
        ("h1", 1, SPRING_FORWARD, t10, 9.0e5, 3600.0, 360, 250.0, 250.0),
        ("h1", 5, SPRING_FORWARD, t10, 3.6e5, 1800.0, 60, 200.0, 200.0),
    ], HOUR_SCHEMA)
    meters = spark.createDataFrame([("h1", 1, "mains", "mains"), ("h1", 5, "fridge", "refrigerator")],
                                   METER_INFO_SCHEMA)
    houses = spark.createDataFrame([("h1", "02139", "America/New_York")], nightly.HOUSES_SCHEMA)
    expected = spark.createDataFrame([
        # (3.6e6 + 1.8e6) / 3.6e6 = 1.5 kWh; (3600 + 1800) / 86400 = 0.0625; 360 + 180 samples
        ("h1", normal, 1, "mains", "mains", 1.5, 0.0625, 540),
        # 00:00 EST to 00:00 EDT is 82800 s: 9e5 / 3.6e6 = 0.25 kWh, 3600 / 82800 = 1/23
        ("h1", SPRING_FORWARD, 1, "mains", "mains", 0.25, 1 / 23, 360),
        ("h1", SPRING_FORWARD, 5, "fridge", "refrigerator", 0.1, 1800 / 82800, 60),  # 3.6e5 / 3.6e6 kWh
    ], DAILY_SCHEMA)
    # A UTC default would give 24 h days: only the house's own zone yields 23.
    result = nightly.daily_energy(hourly, meters, houses, default_tz="UTC")
    assertDataFrameEqual(result, expected, checkRowOrder=False, **TOLERANCE)


def test_daily_energy_puts_houses_without_a_zone_in_the_default_one(spark):
    """A house with a null tz or missing from houses_df is in default_tz; a house's own tz wins."""
    t0 = dt.datetime(2024, 3, 10, 5, tzinfo=UTC).timestamp()
    hourly = spark.createDataFrame(
        [(house, 1, SPRING_FORWARD, t0, 3.6e6, 3600.0, 360, 1000.0, 1000.0) for house in ("h1", "h2", "h3")],
        HOUR_SCHEMA)
    meters = spark.createDataFrame([(house, 1, "mains", "mains") for house in ("h1", "h2", "h3")], METER_INFO_SCHEMA)
    houses = spark.createDataFrame([("h1", "02139", "Europe/London"), ("h2", "02139", None)],  # h3 unknown
                                   nightly.HOUSES_SCHEMA)
    expected = spark.createDataFrame([
        ("h1", SPRING_FORWARD, 1, "mains", "mains", 1.0, 3600 / 86400, 360),  # London changes on 31 March
        ("h2", SPRING_FORWARD, 1, "mains", "mains", 1.0, 3600 / 82800, 360),  # New York's 23 h day
        ("h3", SPRING_FORWARD, 1, "mains", "mains", 1.0, 3600 / 82800, 360),
    ], DAILY_SCHEMA)
    result = nightly.daily_energy(hourly, meters, houses, default_tz="America/New_York")
    assertDataFrameEqual(result, expected, checkRowOrder=False, **TOLERANCE)


def test_house_totals_with_and_without_mains(spark):
    """mains = sum of the legs, untracked = mains - circuits, coverage = the legs' least; no mains -> nulls."""
    next_day = DAY + dt.timedelta(days=1)
    daily = spark.createDataFrame([
        ("h1", DAY, 1, "mains", "mains", 10.0, 1.0, 8640),
        ("h1", DAY, 2, "mains", "mains", 4.0, 0.95, 8208),
        ("h1", DAY, 5, "fridge", "refrigerator", 3.0, 0.9, 2592),
        ("h1", DAY, 6, "lights", "lighting", 1.5, 0.5, 1440),  # a circuit's coverage must not count
        ("h1", next_day, 1, "mains", "mains", 5.0, 1.0, 8640),
        ("h1", next_day, 2, "mains", "mains", 3.0, 1.0, 8640),
        ("h2", DAY, 3, "oven", "oven", 2.0, 0.2, 576),
    ], DAILY_SCHEMA)
    expected = spark.createDataFrame([
        ("h1", DAY, 14.0, 4.5, 9.5, 0.95),  # 10 + 4 mains, 3 + 1.5 circuits, 14 - 4.5; min(1.0, 0.95)
        ("h1", next_day, 8.0, 0.0, 8.0, 1.0),  # mains only: circuits 0, not null, so untracked = 5 + 3
        ("h2", DAY, None, 2.0, None, None),  # no mains: circuits kept, the rest unknown
    ], TOTALS_SCHEMA)
    assertDataFrameEqual(nightly.house_totals(daily), expected, checkRowOrder=False, **TOLERANCE)


def test_appliance_energy_sums_channels_and_shares_mains(spark):
    """Channels of one appliance add up; share_of_mains is null without mains or with 0 mains; no mains rows."""
    daily = spark.createDataFrame([
        ("h1", DAY, 1, "mains", "mains", 8.0, 1.0, 8640),
        ("h1", DAY, 2, "mains", "mains", 2.0, 1.0, 8640),
        ("h1", DAY, 5, "fridge", "refrigerator", 2.0, 1.0, 2880),
        ("h1", DAY, 6, "lights 1", "lighting", 0.5, 0.5, 1440),
        ("h1", DAY, 7, "lights 2", "lighting", 0.3, 0.5, 1440),
        ("h2", DAY, 3, "oven", "oven", 1.5, 0.2, 576),
        ("h3", DAY, 1, "mains", "mains", 0.0, 1.0, 8640),
        ("h3", DAY, 4, "oven", "oven", 0.2, 0.1, 288),
    ], DAILY_SCHEMA)
    totals = spark.createDataFrame([
        ("h1", DAY, 10.0, 2.8, 7.2, 1.0),
        ("h2", DAY, None, 1.5, None, None),
        ("h3", DAY, 0.0, 0.2, -0.2, 1.0),
    ], TOTALS_SCHEMA)
    expected = spark.createDataFrame([
        ("lighting", DAY, "h1", 0.8, 0.08),  # 0.5 + 0.3 kWh; 0.8 / 10
        ("refrigerator", DAY, "h1", 2.0, 0.2),  # 2 / 10
        ("oven", DAY, "h2", 1.5, None),  # mains unknown
        ("oven", DAY, "h3", 0.2, None),  # mains 0
    ], "appliance string, day date, house_id string, energy_kwh double, share_of_mains double")
    assertDataFrameEqual(nightly.appliance_energy(daily, totals), expected, checkRowOrder=False, **TOLERANCE)


def test_zip_energy_counts_only_houses_with_mains(spark):
    """Mains kWh summed per zip and day; a house-day without mains neither adds nor counts."""
    next_day = DAY + dt.timedelta(days=1)
    totals = spark.createDataFrame([
        ("h1", DAY, 10.0, 4.0, 6.0, 1.0),
        ("h2", DAY, 4.0, 1.0, 3.0, 1.0),
        ("h3", DAY, None, 2.0, None, None),
        ("h4", DAY, 6.0, 0.0, 6.0, 1.0),
        ("h1", next_day, 7.0, 3.0, 4.0, 1.0),
    ], TOTALS_SCHEMA)
    houses = spark.createDataFrame([("h1", "02139", "America/New_York"), ("h2", "02139", "America/New_York"),
                                    ("h3", "02139", "America/New_York"), ("h4", "10001", "America/New_York")],
                                   nightly.HOUSES_SCHEMA)
    expected = spark.createDataFrame([
        (DAY, "02139", 14.0, 2),  # h1 + h2 = 10 + 4; h3 has no mains
        (DAY, "10001", 6.0, 1),
        (next_day, "02139", 7.0, 1),
    ], "day date, zip string, energy_kwh double, houses int")
    assertDataFrameEqual(nightly.zip_energy(totals, houses), expected, checkRowOrder=False, **TOLERANCE)


def test_thresholds_keep_meter_rows_with_a_threshold_and_fill_gaps_from_the_fleet(spark):
    """Hour rows and NaN/null thresholds are dropped. Fridges across the fleet (three on, medians
    threshold 110 W, peak 450 W) give a fridge that defrosted on one day only a normal peak up to
    450 W; a never-used outdoor outlet with no other outdoor outlet on keeps its off level; a meter
    without an appliance gets no prior. quantile, peak_days and window_days come from Params."""
    nan = float("nan")
    meter_row = (None,) * 7  # day .. max_w of a threshold row
    # Each meter's own min_run_s passes through: the fleet fills no run length in.
    stats = spark.createDataFrame([
        # An hour row, given a threshold so that only its day can drop it.
        ("h1", 5, DAY, MIDNIGHT_NY.timestamp(), 3.6e5, 3600.0, 120, 100.0, 150.0, 140.0, 0, nan, nan, nan, None, None),
        ("h1", 3, *meter_row, 100.0, 800, 400.0, 410.0, 900.0, "fridge", "refrigerator"),
        ("h2", 3, *meter_row, 110.0, 900, 500.0, 520.0, 1200.0, "fridge", "refrigerator"),
        ("h3", 3, *meter_row, 120.0, 700, None, 700.0, None, "fridge", "refrigerator"),  # defrost seen once, 700 W
        ("h3", 4, *meter_row, 10.0, 0, None, None, None, "outdoor", "outdoor_outlets"),  # never on
        ("h3", 5, *meter_row, 60.0, 50, 70.0, 90.0, 30.0, "misc", None),
        ("h1", 6, *meter_row, nan, 0, None, None, None, "lights", "lighting"),  # no readings in the window
        ("h1", 7, *meter_row, None, 0, None, None, None, "oven", "oven"),  # the same NaN, nulled by Arrow
    ], nightly.stats_schema())
    computed_at = dt.datetime(2024, 4, 3, 2, 15)
    expected = spark.createDataFrame([
        ("h1", 3, "refrigerator", 0.9, 100.0, 800, 410.0, 3, 900.0, 2, 14, computed_at),
        ("h2", 3, "refrigerator", 0.9, 110.0, 900, 500.0, 0, 1200.0, 2, 14, computed_at),
        ("h3", 3, "refrigerator", 0.9, 120.0, 700, 450.0, 3, None, 2, 14, computed_at),
        ("h3", 4, "outdoor_outlets", 0.9, 10.0, 0, None, 0, None, 2, 14, computed_at),
        ("h3", 5, None, 0.9, 60.0, 50, 70.0, 0, 30.0, 2, 14, computed_at),
    ], "house_id string, meter int, appliance string, quantile double, threshold_w double, samples bigint, "
       "normal_peak_w double, fleet_meters int, min_run_s double, peak_days int, window_days int, computed_at timestamp")
    result = nightly.thresholds(stats, nightly.Params(quantile=0.9, window_days=14, fleet_min_meters=3),
                                computed_at)
    assertDataFrameEqual(result, expected, checkRowOrder=False, **TOLERANCE)

"""Energy and threshold maths for one meter's readings, in numpy.

These functions are the core of the nightly Spark job (run once per (house,
meter) in the Python workers, see `batch.nightly.partition_stats`; the fleet step
once per appliance, see `batch.nightly.judge_appliance`), kept free of Spark so
that they are easy to test and to reason about, and shared with the alert
evaluation (`tools.evaluate_alerts`).

Energy is the left Riemann sum E = Σ P_i · dt_i with dt_i = t_(i+1) − t_i capped at
the meter's maximum sample period: a gap longer than the cap counts the reading
before it for the cap only (no "phantom energy" after an outage). Each interval is
credited to the local hours it covers, split exactly at local hour boundaries, so an
interval crossing the house's midnight is shared between the two days, and a DST
change day has 23 or 25 hours. Duplicate timestamps are merged into one reading at
their mean power. The last reading of the loaded range has no successor and covers
nothing.

Thresholds describe what a meter normally does over its window: its usual power in
use (`quantile_threshold`), the highest level it holds on several days
(`meter_levels`), and, where its own window says too little, what meters of the same
appliance do across the fleet (`fleet_prior`, `judged_levels`). docs/batch.md gives
the reasoning and the alternatives measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

J_PER_KWH = 3.6e6
HOUR_S = 3600.0
MAX_CAP_S = HOUR_S  # an interval then crosses at most one hour boundary


def merge_duplicates(ts_s: np.ndarray, power_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by time and merge readings sharing a timestamp into their mean power."""
    order = np.argsort(ts_s, kind="stable")
    ts_sorted, power_sorted = ts_s[order], power_w[order]
    unique_ts, first, counts = np.unique(ts_sorted, return_index=True, return_counts=True)
    if len(unique_ts) == len(ts_sorted):
        return ts_sorted, power_sorted
    return unique_ts, np.add.reduceat(power_sorted, first) / counts


OFFSET_SLOT_S = 900  # time zone offsets change only at whole quarter hours UTC
MAX_SLOTS = 4_000_000  # about a century of quarter hours


def _utc_offsets_s(instants_s: np.ndarray, tz: str) -> np.ndarray:
    instants = pd.to_datetime(instants_s, unit="s", utc=True)
    return (instants.tz_convert(tz).tz_localize(None).asi8 - instants.tz_localize(None).asi8) / 1e9


def local_seconds(ts_s: np.ndarray, tz: str) -> np.ndarray:
    """Local wall-clock time of UTC epoch seconds, as seconds since 1970-01-01 local.

    Zone offsets are looked up per quarter hour of the covered range (every zone
    changes offset on a quarter-hour boundary), not converted per reading: 30 days
    of readings need 2,880 conversions instead of millions.
    """
    ts_s = np.asarray(ts_s, dtype=np.float64)
    if len(ts_s) == 0:
        return ts_s.copy()
    slot = np.floor(ts_s / OFFSET_SLOT_S).astype(np.int64)
    first, last = int(slot.min()), int(slot.max())
    if last - first > MAX_SLOTS:
        return ts_s + _utc_offsets_s(ts_s, tz)
    offsets_s = _utc_offsets_s(np.arange(first, last + 1, dtype=np.int64) * OFFSET_SLOT_S, tz)
    return ts_s + offsets_s[slot - first]


def hourly_pieces(ts_s: np.ndarray, power_w: np.ndarray, cap_s: float, tz: str) -> pd.DataFrame:
    """Hourly energy of one meter: one row per local hour touched by its intervals.

    Columns: hour_start_s (UTC epoch of the local hour's start), day (local date),
    energy_j, covered_s (seconds of that hour with data), samples (readings taken in
    that hour), min_w, max_w (over those readings; NaN where there are none).
    """
    if not 0 < cap_s <= MAX_CAP_S:
        raise ValueError(f"maximum sample period must be in (0, {MAX_CAP_S:.0f}] s, got {cap_s}")
    ts, power = merge_duplicates(np.asarray(ts_s, dtype=np.float64), np.asarray(power_w, dtype=np.float64))
    if len(ts) == 0:
        return _empty_pieces()
    dt = np.minimum(np.diff(ts, append=ts[-1]), cap_s)
    local = local_seconds(ts, tz)
    into_hour = np.mod(local, HOUR_S)
    first = np.minimum(dt, HOUR_S - into_hour)  # seconds before the next local hour boundary
    second = dt - first
    crossing = second > 0
    # The second piece starts at a local hour boundary; convert its instant again, since a
    # DST change can make that boundary's local hour differ from "previous hour + 1".
    next_start = ts[crossing] + first[crossing]
    next_local = local_seconds(next_start, tz)

    # Hour starts are whole seconds (zone offsets are); rounding makes the two pieces
    # of one hour share a key exactly.
    hour_start = np.round(np.concatenate([ts - into_hour, next_start - np.mod(next_local, HOUR_S)]))
    day_number = np.floor(np.concatenate([local, next_local]) / 86400.0).astype(np.int64)
    energy_j = np.concatenate([power * first, power[crossing] * second[crossing]])
    covered_s = np.concatenate([first, second[crossing]])
    # Sample statistics belong to the hour in which the reading was taken.
    n_second = int(crossing.sum())
    samples = np.concatenate([np.ones(len(ts), dtype=np.int64), np.zeros(n_second, dtype=np.int64)])
    sample_w = np.concatenate([power, np.full(n_second, np.nan)])

    order = np.argsort(hour_start, kind="stable")
    keys = hour_start[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    hours = pd.DataFrame({
        "hour_start_s": keys[starts],
        "energy_j": np.add.reduceat(energy_j[order], starts),
        "covered_s": np.add.reduceat(covered_s[order], starts),
        "samples": np.add.reduceat(samples[order], starts),
        "min_w": np.fmin.reduceat(sample_w[order], starts),  # fmin/fmax skip the NaN of second pieces
        "max_w": np.fmax.reduceat(sample_w[order], starts),
    })
    hours["day"] = pd.to_datetime(day_number[order][starts], unit="D").date
    return hours


def _empty_pieces() -> pd.DataFrame:
    return pd.DataFrame({
        "hour_start_s": pd.Series(dtype="float64"), "energy_j": pd.Series(dtype="float64"),
        "covered_s": pd.Series(dtype="float64"), "samples": pd.Series(dtype="int64"),
        "min_w": pd.Series(dtype="float64"), "max_w": pd.Series(dtype="float64"), "day": pd.Series(dtype="object"),
    })


def off_level(power_w: np.ndarray, off_level_w: float, standby_ratio: float) -> float:
    """The power at or below which a meter counts as off: its standby draw is excluded.

    `off_level_w` is a fixed floor. With `standby_ratio` > 0 the level rises to
    standby_ratio x the meter's median power when some readings exceed that: the median
    of a mostly idle appliance is its standby draw, which can be tens of watts (a kitchen
    circuit with clocks and chargers on it). A meter that never rises that far above its
    median (a steady load) keeps the fixed floor.
    """
    power = np.asarray(power_w, dtype=np.float64)
    if standby_ratio <= 0 or not len(power):
        return float(off_level_w)
    standby_w = standby_ratio * float(np.median(power))
    return standby_w if standby_w > off_level_w and float(power.max()) > standby_w else float(off_level_w)


def quantile_threshold(power_w: np.ndarray, quantile: float, off_level_w: float,
                       standby_ratio: float = 0.0) -> tuple[float, int]:
    """(threshold_w, samples): the meter's usual power in use, and the readings it rests on.

    Readings at or below the off level (`off_level()`) are excluded, or the threshold
    of a mostly idle appliance would collapse to its standby draw. The quantile is
    exact (linear interpolation between order statistics, as numpy, DuckDB's
    quantile_cont and Spark's percentile). A meter with readings but none above the
    off level (never switched on in the window) gets `off_level_w` itself with 0
    samples. Without readings the threshold is NaN.
    """
    power = np.asarray(power_w, dtype=np.float64)
    if len(power) == 0:
        return float("nan"), 0
    values = power[power > off_level(power, off_level_w, standby_ratio)]
    if len(values) == 0:
        return float(off_level_w), 0
    return float(np.quantile(values, quantile)), int(len(values))


def held_levels_by_day(ts_s: np.ndarray, power_w: np.ndarray, tz: str, run_readings: int) -> np.ndarray:
    """Per local day, the highest power the meter held for `run_readings` consecutive readings, highest first.

    The level of a run is its lowest reading: every reading of the run is at or above it,
    which is what the alert rules ask of the readings that open an episode. A run belongs
    to the local day of its last reading (when the rules would count it). Duplicate
    timestamps are merged into their mean first; days without a whole run are absent.
    """
    if run_readings < 1:
        raise ValueError(f"a run is at least one reading, got {run_readings}")
    ts, power = merge_duplicates(np.asarray(ts_s, dtype=np.float64), np.asarray(power_w, dtype=np.float64))
    if len(power) < run_readings:
        return np.empty(0)
    held_w = np.lib.stride_tricks.sliding_window_view(power, run_readings).min(axis=1)
    day_number = np.floor(local_seconds(ts[run_readings - 1:], tz) / 86400.0).astype(np.int64)
    days, day_index = np.unique(day_number, return_inverse=True)
    daily_w = np.full(len(days), -np.inf)
    np.maximum.at(daily_w, day_index, held_w)
    return np.sort(daily_w)[::-1]


def run_durations_by_day(ts_s: np.ndarray, power_w: np.ndarray, tz: str, level_w: float, run_readings: int,
                         gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(durations_s, local_day) of the meter's whole runs above `level_w`, in time order.

    A run is a maximal sequence of at least `run_readings` consecutive readings above the
    level, each within `gap_s` of the one before; it is whole when a reading at or below the
    level comes within `gap_s` before it and after it, so its duration (first to last reading
    above the level) is what the meter did, not where the data starts, stops or has a hole.
    Its day is the local day of its last reading. Duplicate timestamps are merged first.
    """
    if run_readings < 1:
        raise ValueError(f"a run is at least one reading, got {run_readings}")
    ts, power = merge_duplicates(np.asarray(ts_s, dtype=np.float64), np.asarray(power_w, dtype=np.float64))
    if not len(ts) or not np.isfinite(level_w):
        return np.empty(0), np.empty(0, dtype=np.int64)
    above = power > level_w
    # joined[k]: reading k follows reading k-1 closely enough to continue what it does (none
    # before the first reading or after the last).
    joined = np.r_[False, np.diff(ts) <= gap_s, False]
    # Runs of `above` cut wherever a reading is below the level or a gap opens.
    starts = np.flatnonzero(above & ~(np.r_[False, above[:-1]] & joined[:-1]))
    ends = np.flatnonzero(above & ~(np.r_[above[1:], False] & joined[1:]))
    # Whole: long enough, and the readings either side (below the level, then) are close.
    whole = (ends - starts + 1 >= run_readings) & joined[starts] & joined[ends + 1]
    starts, ends = starts[whole], ends[whole]
    day = np.floor(local_seconds(ts[ends], tz) / 86400.0).astype(np.int64)
    return ts[ends] - ts[starts], day


def shortest_run_s(ts_s: np.ndarray, power_w: np.ndarray, tz: str, level_w: float, run_readings: int, gap_s: float,
                   run_days: int) -> float:
    """The shortest whole run above `level_w` (`run_durations_by_day`), where the meter made such
    runs on at least `run_days` local days; NaN otherwise (too little to say how long they last)."""
    durations_s, day = run_durations_by_day(ts_s, power_w, tz, level_w, run_readings, gap_s)
    if len(np.unique(day)) < max(run_days, 1):
        return float("nan")
    return float(durations_s.min())


@dataclass(frozen=True)
class MeterLevels:
    """What one meter did over its threshold window (see `meter_levels`)."""

    threshold_w: float  # quantile of its readings above the off level
    samples: int  # readings above the off level
    peak_w: float  # highest level held on at least `peak_days` local days; NaN if not above the off level
    top_w: float  # highest level held on any one day; NaN if not above the off level
    min_run_s: float  # shortest whole run above threshold_w x run_multiplier; NaN unless on peak_days days


def meter_levels(ts_s: np.ndarray, power_w: np.ndarray, tz: str, quantile: float, off_level_w: float,
                 standby_ratio: float, run_readings: int, peak_days: int, *, run_multiplier: float,
                 run_gap_s: float) -> MeterLevels:
    """A meter's usual power in use (`quantile_threshold`) and the levels of its repertoire.

    The repertoire comes from `held_levels_by_day`: `peak_w` is the `peak_days`-th highest
    daily level, the highest level the meter reached on at least that many different days
    (a fridge's defrost, a dryer's heating phase, two kitchen loads at once on several
    days); `top_w` is the highest level of any day (a level seen once). Either is NaN when
    it is not above the meter's off level: a meter that was not switched on on enough days
    has no peak of its own. `min_run_s` says how long the meter stays above its threshold x
    `run_multiplier` when it goes there (`shortest_run_s`, on at least `peak_days` days): a
    defrost heater runs its fixed quarter hour, a load that only looks like it does not.
    """
    power = np.asarray(power_w, dtype=np.float64)
    threshold_w, samples = quantile_threshold(power, quantile, off_level_w, standby_ratio)
    if not len(power):
        return MeterLevels(threshold_w, samples, float("nan"), float("nan"), float("nan"))
    off_w = off_level(power, off_level_w, standby_ratio)
    daily_w = held_levels_by_day(ts_s, power, tz, run_readings)

    def above_off(rank: int) -> float:
        return float(daily_w[rank]) if len(daily_w) > rank and daily_w[rank] > off_w else float("nan")

    min_run_s = (shortest_run_s(ts_s, power, tz, threshold_w * run_multiplier, run_readings, run_gap_s, peak_days)
                 if samples else float("nan"))
    return MeterLevels(threshold_w, samples, above_off(peak_days - 1), above_off(0), min_run_s)


@dataclass(frozen=True)
class FleetPrior:
    """What the meters of one appliance do across the fleet (see `fleet_prior`)."""

    threshold_w: float
    peak_w: float
    meters: int


def fleet_prior(threshold_w: np.ndarray, samples: np.ndarray, peak_w: np.ndarray,
                min_meters: int) -> FleetPrior | None:
    """The medians of `threshold_w` and of the established `peak_w` (NaN: none) over the meters of
    one appliance that were on in their window (samples > 0); None with fewer than `min_meters`
    such meters (too few to say what the appliance does)."""
    on = np.asarray(samples) > 0
    if int(on.sum()) < max(min_meters, 1):
        return None
    peaks = np.asarray(peak_w, dtype=np.float64)[on]
    peaks = peaks[~np.isnan(peaks)]
    return FleetPrior(float(np.median(np.asarray(threshold_w, dtype=np.float64)[on])),
                      float(np.median(peaks)) if len(peaks) else float("nan"), int(on.sum()))


def judged_levels(threshold_w: np.ndarray, samples: np.ndarray, peak_w: np.ndarray, top_w: np.ndarray,
                  prior: FleetPrior | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(threshold_w, normal_peak_w, fleet_meters) the alert rules judge meters of one appliance by.

    Normal is what a meter does on several days of its window (`peak_w`). Two gaps are filled
    from what the same appliance does across the fleet (`prior`), and `fleet_meters` (else 0)
    says where:
    - a meter never on in its window (samples 0: an outdoor outlet unused for a month) takes
      the fleet's threshold and peak instead of its off level, so its first use is judged as
      a use of that appliance;
    - a level seen on a single day of the window (`top_w` above `peak_w`) counts as normal up
      to the fleet's peak: a fridge that defrosted once in a week defrosts, while a one-off
      far above what the appliance normally reaches stays abnormal.
    """
    threshold_w = np.asarray(threshold_w, dtype=np.float64)
    peak_w = np.asarray(peak_w, dtype=np.float64)
    none = np.zeros(len(threshold_w), dtype=np.int64)
    if prior is None:
        return threshold_w, peak_w, none
    # np.minimum keeps NaN (no fleet peak, or no top level), and fmax then keeps the meter's own peak.
    normal_peak_w = np.fmax(peak_w, np.minimum(np.asarray(top_w, dtype=np.float64), prior.peak_w))
    never_on = np.asarray(samples) == 0
    from_fleet = never_on | (normal_peak_w > np.nan_to_num(peak_w, nan=-np.inf))
    return (np.where(never_on, prior.threshold_w, threshold_w), np.where(never_on, prior.peak_w, normal_peak_w),
            np.where(from_fleet, prior.meters, none))

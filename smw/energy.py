"""Energy and threshold maths for one meter's readings, in numpy.

These functions are the core of the nightly Spark job (run once per (house,
meter) in the Python workers, see `batch.nightly.partition_stats`), kept free of
Spark so that they are easy to test and to reason about.

Energy is the left Riemann sum E = Σ P_i · dt_i with dt_i = t_(i+1) − t_i capped at
the meter's maximum sample period: a gap longer than the cap counts the reading
before it for the cap only (no "phantom energy" after an outage). Each interval is
credited to the local hours it covers, split exactly at local hour boundaries, so an
interval crossing the house's midnight is shared between the two days, and a DST
change day has 23 or 25 hours. Duplicate timestamps are merged into one reading at
their mean power. The last reading of the loaded range has no successor and covers
nothing.
"""
from __future__ import annotations

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


def quantile_thresholds(ts_s: np.ndarray, power_w: np.ndarray, tz: str, quantile: float, off_level_w: float,
                        min_hour_samples: int, standby_ratio: float = 0.0) -> tuple[float, int, list[float]]:
    """(threshold_w, samples, hourly profile) of one meter.

    Readings at or below the off level (`off_level()`) are excluded, or the threshold
    of a mostly idle appliance would collapse to its standby draw. The quantile is
    exact (linear interpolation between order statistics, as numpy, DuckDB's
    quantile_cont and Spark's percentile). The profile holds the same quantile per
    local hour of day (0..23), NaN for hours with fewer than `min_hour_samples`
    readings above the off level. A meter with readings but none above the off level
    (never switched on in the window) gets `off_level_w` itself with 0 samples: any
    use of it is unusual. Without readings the threshold is NaN.
    """
    power = np.asarray(power_w, dtype=np.float64)
    if len(power) == 0:
        return float("nan"), 0, [float("nan")] * 24
    on = power > off_level(power, off_level_w, standby_ratio)
    values = power[on]
    if len(values) == 0:
        return float(off_level_w), 0, [float("nan")] * 24
    threshold = float(np.quantile(values, quantile))
    hour_of_day = (np.floor(local_seconds(np.asarray(ts_s, dtype=np.float64)[on], tz) / HOUR_S) % 24).astype(int)
    profile = []
    for hour in range(24):
        in_hour = values[hour_of_day == hour]
        profile.append(float(np.quantile(in_hour, quantile)) if len(in_hour) >= min_hour_samples else float("nan"))
    return threshold, int(len(values)), profile

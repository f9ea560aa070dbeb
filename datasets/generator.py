"""Derive many houses from a few source houses (REDD or synthetic), with ground-truth spikes.

The method of the original pipeline this product replaces (docs/datasets.md), with its bugs fixed:

- only clean source days are used (every channel present, no gap over 1000 s);
- each derived house maps to one source house and gets a scale factor (1 +/- 0.2) that
  IS applied, a jitter per channel (1 +/- 0.05), a time shift (so houses sharing a source
  never share timestamps), a US location (zip, lat/lon, geohash) and its time zone;
- every channel is kept;
- spikes are injected into circuit channels (and the mains leg feeding them, so mains
  stay the sum of their circuits) and written down as ground truth.

Work is chunked per house-day (~0.2-0.8 M readings), so memory does not grow with the
number of houses or days. Everything is deterministic from the seed.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datasets import redd, synthetic
from smw.schema import READING_ARROW

log = logging.getLogger(__name__)

DAY_S = 86_400
CLEAN_MAX_GAP_S = 1_000.0
SCALE_RANGE = (0.8, 1.2)
JITTER_RANGE = (0.95, 1.05)
# Random part of the per-house time shift; fractional, so no two houses share a timestamp.
TIME_SHIFT_RANGE_S = (-1_800.0, 1_800.0)
SPIKE_DURATION_S = (30, 600)
SPIKE_MIN_W = 200.0
SPIKE_FACTOR = (2.0, 4.0)
# "On" level of a channel, which spikes are sized from: the 97th percentile of its readings
# above its off level, max(ON_FLOOR_W, STANDBY_RATIO x median). The median is the standby
# draw of an appliance that is off most of the time (in REDD every circuit has a
# standby floor, some tens of watts), so use stands clear of it.
ON_QUANTILE = 0.97
ON_FLOOR_W = 10.0
STANDBY_RATIO = 2.0
DEFAULT_START_DATE = "2024-04-01"


def _not_null_schema(nullable: tuple[str, ...] = (), **columns: pa.DataType) -> pa.Schema:
    """An Arrow schema of `columns` in the order given, all NOT NULL but those named in `nullable`."""
    return pa.schema([pa.field(name, dtype, nullable=name in nullable) for name, dtype in columns.items()])


SPIKE_ARROW = _not_null_schema(
    spike_id=pa.string(), house_id=pa.string(), meter=pa.int32(), label=pa.string(), appliance=pa.string(),
    start_ts_s=pa.float64(), duration_s=pa.float64(), magnitude_w=pa.float64(), mains_meter=pa.int32(),
    n_readings=pa.int64(), nullable=("mains_meter",))

HOUSE_ARROW = _not_null_schema(
    house_id=pa.string(), source_house=pa.string(), city=pa.string(), zip=pa.string(), lat=pa.float64(),
    lon=pa.float64(), geohash=pa.string(), tz=pa.string(), utc_offset_s=pa.int32(), scale=pa.float64(),
    time_shift_s=pa.float64(), first_source_day=pa.int32(), n_channels=pa.int32(),
    channel_jitter=pa.list_(pa.float64()))

# City centres with a zip code in them and their IANA zone; houses are scattered ~20 km
# around them. Covers every US zone the platform must handle.
CITIES = (
    ("New York", "10001", 40.7506, -73.9972, "America/New_York"),
    ("Boston", "02108", 42.3588, -71.0637, "America/New_York"),
    ("Atlanta", "30303", 33.7525, -84.3915, "America/New_York"),
    ("Miami", "33130", 25.7677, -80.2044, "America/New_York"),
    ("Chicago", "60601", 41.8858, -87.6181, "America/Chicago"),
    ("Houston", "77002", 29.7573, -95.3616, "America/Chicago"),
    ("Minneapolis", "55401", 44.9847, -93.2690, "America/Chicago"),
    ("Denver", "80202", 39.7530, -104.9990, "America/Denver"),
    ("Salt Lake City", "84101", 40.7560, -111.9010, "America/Denver"),
    ("Phoenix", "85004", 33.4510, -112.0690, "America/Phoenix"),
    ("Los Angeles", "90012", 34.0614, -118.2385, "America/Los_Angeles"),
    ("San Francisco", "94103", 37.7725, -122.4147, "America/Los_Angeles"),
    ("Seattle", "98101", 47.6114, -122.3305, "America/Los_Angeles"),
    ("Anchorage", "99501", 61.2167, -149.8760, "America/Anchorage"),
    ("Honolulu", "96813", 21.3049, -157.8577, "Pacific/Honolulu"),
)

_GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"


def geohash(lat: float, lon: float, precision: int = 7) -> str:
    """Standard base-32 geohash of a point (interleaved lon/lat bisection)."""
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    chars, bits, value, even = [], 0, 0, True
    while len(chars) < precision:
        if even:
            mid = (lon_lo + lon_hi) / 2
            value = value * 2 + (lon >= mid)
            lon_lo, lon_hi = (mid, lon_hi) if lon >= mid else (lon_lo, mid)
        else:
            mid = (lat_lo + lat_hi) / 2
            value = value * 2 + (lat >= mid)
            lat_lo, lat_hi = (mid, lat_hi) if lat >= mid else (lat_lo, mid)
        even, bits = not even, bits + 1
        if bits == 5:
            chars.append(_GEOHASH_ALPHABET[value])
            bits, value = 0, 0
    return "".join(chars)


# Source houses ----------------------------------------------------------------------


@dataclass
class SourceDay:
    """One clean day of a source house, all channels merged and sorted by time.

    Time is kept relative to the day start as float32 (exact for REDD's whole seconds)
    and power as float32, to hold many source days in little memory.
    """

    day_start_ts_s: float
    ts_rel_s: np.ndarray
    power_w: np.ndarray
    channel: np.ndarray


@dataclass
class SourceHouse:
    """A source house reduced to its clean days; channels indexed 0..n-1 in meter order."""

    source_id: str
    meters: np.ndarray
    labels: list[str]
    appliances: list[str]
    days: list[SourceDay]
    on_level_w: np.ndarray = field(default_factory=lambda: np.empty(0))  # per channel, over the clean days

    @property
    def mains_channels(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.appliances) == "mains")

    @property
    def circuit_channels(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.appliances) != "mains")


def clean_days(house: redd.House, utc_offset_s: int = synthetic.SOURCE_UTC_OFFSET_S,
               max_gap_s: float = CLEAN_MAX_GAP_S) -> list[int]:
    """Local day numbers (days since epoch) on which every channel has no gap over `max_gap_s`."""
    per_channel = []
    for channel in house.channels.values():
        if not len(channel.ts_s):
            return []
        local = channel.ts_s + utc_offset_s
        day = np.floor(local / DAY_S).astype(np.int64)
        first_day = day[0]
        n = int(day[-1] - first_day + 1)
        rel = local - day * DAY_S
        idx = day - first_day
        worst = np.full(n, np.inf)
        starts = np.r_[True, idx[1:] != idx[:-1]]
        ends = np.r_[idx[1:] != idx[:-1], True]
        worst[idx[starts]] = rel[starts]  # gap from midnight to the first sample
        end_gap = np.zeros(n)
        end_gap[idx[ends]] = DAY_S - rel[ends]  # gap from the last sample to midnight
        worst = np.where(np.isinf(worst), np.inf, np.maximum(worst, end_gap))
        within = ~starts[1:]
        np.maximum.at(worst, idx[1:][within], np.diff(channel.ts_s)[within])
        per_channel.append(set((np.flatnonzero(worst <= max_gap_s) + first_day).tolist()))
    return sorted(set.intersection(*per_channel)) if per_channel else []


def on_level_w(power_w: np.ndarray) -> float:
    """Typical power of a channel in use: the 97th percentile of its readings above its off level.

    The off level is max(ON_FLOOR_W, STANDBY_RATIO x median power), so an appliance that is
    off most of the time is measured when it runs, not at its standby draw. A channel that
    never rises above that (a steady load) is measured over its readings above ON_FLOOR_W;
    one that never exceeds ON_FLOOR_W has an on level of 0.
    """
    from smw.energy import off_level

    power_w = np.asarray(power_w, dtype=np.float64)
    on = power_w[power_w > off_level(power_w, ON_FLOOR_W, STANDBY_RATIO)]
    return float(np.quantile(on, ON_QUANTILE)) if len(on) else 0.0


def source_from_house(house: redd.House, utc_offset_s: int = synthetic.SOURCE_UTC_OFFSET_S) -> SourceHouse:
    """Reduce a read house to its clean days in generator form."""
    meters = np.asarray(sorted(house.channels), np.int32)
    channels = [house.channels[m] for m in meters]
    days = clean_days(house, utc_offset_s)
    source = SourceHouse(house.house_id, meters, [c.label for c in channels], [c.appliance for c in channels], [])
    clean_power: list[list[np.ndarray]] = [[] for _ in channels]
    for day in days:
        start = day * DAY_S - utc_offset_s
        parts_ts, parts_power, parts_channel = [], [], []
        for index, channel in enumerate(channels):
            lo, hi = np.searchsorted(channel.ts_s, [start, start + DAY_S])
            parts_ts.append(channel.ts_s[lo:hi] - start)
            parts_power.append(channel.power_w[lo:hi])
            parts_channel.append(np.full(hi - lo, index, np.int16))
            clean_power[index].append(channel.power_w[lo:hi])
        ts_rel = np.concatenate(parts_ts)
        channel_index = np.concatenate(parts_channel)
        order = np.lexsort((channel_index, ts_rel))
        source.days.append(SourceDay(
            float(start), ts_rel[order].astype(np.float32), np.concatenate(parts_power)[order].astype(np.float32),
            channel_index[order],
        ))
    # Over all clean days: an appliance unused on one day still has its on level.
    source.on_level_w = np.asarray([on_level_w(np.concatenate(parts)) if parts else 0.0 for parts in clean_power])
    log.info("source %s: %d channels, %d clean days", house.house_id, len(meters), len(source.days))
    return source


def load_sources(spec: str, seed: int) -> list[SourceHouse]:
    """Source houses from `redd:PATH` or `synthetic[:K[:DAYS]]` (K seed houses of DAYS days)."""
    kind, _, rest = spec.partition(":")
    if kind == "redd":
        if not rest:
            raise ValueError("--source redd:PATH needs the path of a REDD tree")
        houses = (redd.read_house(d, f"redd_{d.name}") for d in redd.house_dirs(rest))
    elif kind == "synthetic":
        parts = [int(p) for p in rest.split(":") if p] if rest else []
        k, n_days = (parts + [6, 6][len(parts):])[:2]
        houses = (synthetic.synth_house(h, seed) for h in synthetic.make_houses(k, seed, n_days))
    else:
        raise ValueError(f"unknown source {spec!r}: use redd:PATH or synthetic[:K[:DAYS]]")
    sources = []
    for house in houses:
        source = source_from_house(house)
        if source.days:
            sources.append(source)
        else:
            log.warning("source %s has no clean day and is not used", source.source_id)
    if not sources:
        raise ValueError(f"source {spec!r} has no house with a clean day (no gap over {CLEAN_MAX_GAP_S:.0f} s)")
    return sources


# Derived houses ----------------------------------------------------------------------


@dataclass(frozen=True)
class HousePlan:
    """Everything that makes a derived house differ from its source."""

    house_id: str
    index: int
    source: int
    source_house: str
    city: str
    zip: str
    lat: float
    lon: float
    geohash: str
    tz: str
    utc_offset_s: int
    scale: float
    time_shift_s: float
    first_source_day: int
    channel_jitter: tuple[float, ...]


def _standard_offset_s(tz: str, year: int) -> int:
    """UTC offset of the zone's standard (winter) time, in seconds."""
    return int(ZoneInfo(tz).utcoffset(datetime(year, 1, 15)).total_seconds())


def plan_house(index: int, sources: list[SourceHouse], seed: int, year: int) -> HousePlan:
    """Draw derived house `index` (1-based) from its own random stream: independent of N."""
    rng = np.random.default_rng([seed, index, 0x40E5])
    source = int(rng.integers(len(sources)))
    city, zip_code, lat0, lon0, tz = CITIES[int(rng.integers(len(CITIES)))]
    lat = round(lat0 + rng.uniform(-0.2, 0.2), 5)
    lon = round(lon0 + rng.uniform(-0.2, 0.2), 5)
    return HousePlan(
        house_id=f"h{index:06d}", index=index, source=source, source_house=sources[source].source_id,
        city=city, zip=zip_code, lat=lat, lon=lon, geohash=geohash(lat, lon), tz=tz,
        utc_offset_s=_standard_offset_s(tz, year),
        scale=float(rng.uniform(*SCALE_RANGE)),
        time_shift_s=float(rng.uniform(*TIME_SHIFT_RANGE_S)),
        first_source_day=int(rng.integers(len(sources[source].days))),
        channel_jitter=tuple(rng.uniform(*JITTER_RANGE, len(sources[source].meters)).tolist()),
    )


@dataclass(frozen=True)
class Spike:
    """Ground truth of one injected spike: `magnitude_w` added to `meter` in [start, start+duration)."""

    spike_id: str
    house_id: str
    meter: int
    label: str
    appliance: str
    start_ts_s: float
    duration_s: float
    magnitude_w: float
    mains_meter: int | None
    n_readings: int


@dataclass
class HouseDay:
    """One house-day of readings: columns as numpy arrays, rows sorted by time."""

    plan: HousePlan
    day: int
    ts_s: np.ndarray
    power_w: np.ndarray
    channel: np.ndarray
    spikes: list[Spike]


@dataclass
class GeneratorConfig:
    """What to generate; everything else follows from the seed."""

    houses: int
    days: int
    seed: int = 0
    spikes_per_house_day: float = 0.5
    start_date: str = DEFAULT_START_DATE
    source: str = "synthetic"
    period_s: float | None = None  # None: the source's own sample periods; else one mean per period


def resample(ts_s: np.ndarray, power_w: np.ndarray, channel: np.ndarray, origin_s: float, period_s: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One reading per (channel, period) that has readings: the mean power, stamped at the period's start.

    Periods are aligned on `origin_s`; a period without readings stays empty, so gaps stay
    gaps. Output rows are sorted by time, then channel, as house-days are.
    """
    if period_s <= 0:
        raise ValueError("period_s must be positive")
    if len(ts_s) == 0:
        return ts_s, power_w, channel
    slot = np.floor((ts_s - origin_s) / period_s).astype(np.int64)
    first_slot = int(slot.min())
    n_channels = int(channel.max()) + 1
    key = (slot - first_slot) * n_channels + channel
    bins = (int(slot.max()) - first_slot + 1) * n_channels
    if bins <= max(4 * len(key), 1 << 20):
        # Dense keys (the usual case: a day of periods x channels): counting, no sort.
        counts = np.bincount(key, minlength=bins)
        unique = np.flatnonzero(counts)
        mean_w = np.bincount(key, weights=power_w, minlength=bins)[unique] / counts[unique]
    else:
        unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        mean_w = np.bincount(inverse, weights=power_w) / counts
    out_channel = (unique % n_channels).astype(channel.dtype)
    out_ts = origin_s + (unique // n_channels + first_slot) * period_s
    return out_ts.astype(np.float64), mean_w, out_channel


class Generator:
    """Derived houses from source houses; iterate house-days or write them out."""

    def __init__(self, config: GeneratorConfig, sources: list[SourceHouse] | None = None):
        self.config = config
        self.sources = sources if sources is not None else load_sources(config.source, config.seed)
        start = date.fromisoformat(config.start_date)
        self.start_midnight_utc_s = int(datetime(start.year, start.month, start.day, tzinfo=timezone.utc).timestamp())
        self.plans = [plan_house(i, self.sources, config.seed, start.year) for i in range(1, config.houses + 1)]
        self._period_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # Per source: channel -> index into its de-duplicated label / appliance dictionaries.
        self._dictionaries = []
        for source in self.sources:
            labels = sorted(set(source.labels))
            appliances = sorted(set(source.appliances))
            self._dictionaries.append((
                pa.array(labels, pa.string()), np.asarray([labels.index(x) for x in source.labels], np.int32),
                pa.array(appliances, pa.string()), np.asarray([appliances.index(x) for x in source.appliances], np.int32),
            ))

    @property
    def n_house_days(self) -> int:
        return self.config.houses * self.config.days

    def day_start_ts_s(self, plan: HousePlan, day: int) -> float:
        """UTC start of a derived house's day: its zone's standard-time midnight plus its shift."""
        return self.start_midnight_utc_s - plan.utc_offset_s + day * DAY_S + plan.time_shift_s

    def house_day(self, plan: HousePlan, day: int) -> HouseDay:
        """Readings of one derived house-day: relocated, scaled, jittered, with spikes added."""
        source = self.sources[plan.source]
        source_index = self.source_day_index(plan, day)
        factors = plan.scale * np.asarray(plan.channel_jitter)
        day_start_s = self.day_start_ts_s(plan, day)
        rng, count = self._spike_draw(plan, day, source)
        if self.config.period_s and count == 0:
            # Scaling is per channel, so the period means of a derived day are the source
            # day's period means, scaled: computed once per source day, not per house-day.
            rel_ts_s, mean_w, channel = self._period_means(plan.source, source_index)
            return HouseDay(plan, day, rel_ts_s + day_start_s, mean_w * factors[channel], channel, [])
        source_day = source.days[source_index]
        ts_s = source_day.ts_rel_s.astype(np.float64) + day_start_s
        power_w = source_day.power_w * factors[source_day.channel]
        spikes = self._inject_spikes(rng, count, plan, day, source, source_day, ts_s, power_w)
        channel = source_day.channel
        if self.config.period_s:
            ts_s, power_w, channel = resample(ts_s, power_w, channel, day_start_s, self.config.period_s)
        return HouseDay(plan, day, ts_s, power_w, channel, spikes)

    def source_day_index(self, plan: HousePlan, day: int) -> int:
        """Which day of its source house a derived house's `day` replays."""
        return (plan.first_source_day + day) % len(self.sources[plan.source].days)

    def source_readings(self, plan: HousePlan) -> int:
        """Readings of a derived house over the configured days at the source's own rates
        (spikes change powers, never the number of readings)."""
        days = self.sources[plan.source].days
        return sum(len(days[self.source_day_index(plan, day)].ts_rel_s) for day in range(self.config.days))

    def _period_means(self, source: int, day_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(period start relative to the day's start, mean power, channel) of a source day."""
        key = (source, day_index)
        if key not in self._period_cache:
            source_day = self.sources[source].days[day_index]
            self._period_cache[key] = resample(source_day.ts_rel_s.astype(np.float64), source_day.power_w,
                                               source_day.channel, 0.0, self.config.period_s)
        return self._period_cache[key]

    def _spike_draw(self, plan: HousePlan, day: int, source: SourceHouse) -> tuple[np.random.Generator, int]:
        """The house-day's own random stream and its number of spikes. Its own stream: the
        base readings are identical with or without spikes."""
        rng = np.random.default_rng([self.config.seed, plan.index, day, 0x5B1CE])
        count = int(rng.poisson(self.config.spikes_per_house_day)) if len(source.circuit_channels) else 0
        return rng, count

    def _inject_spikes(self, rng: np.random.Generator, count: int, plan: HousePlan, day: int,
                       source: SourceHouse, source_day: SourceDay, ts_s: np.ndarray, power_w: np.ndarray
                       ) -> list[Spike]:
        """Add `count` spikes to `power_w` in place and return their ground truth."""
        circuits = source.circuit_channels
        mains = source.mains_channels
        spikes = []
        for number in range(count):
            channel = int(rng.choice(circuits))
            rows = np.flatnonzero(source_day.channel == channel)
            if not len(rows):
                continue
            # Start on a real sample so the spike is visible in the data, not lost in a gap.
            start_ts_s = float(ts_s[rows[int(rng.integers(len(rows)))]])
            duration_s = float(rng.integers(*SPIKE_DURATION_S))
            # Relative to the channel's on level in this house (scale and jitter applied): well
            # above anything the appliance does in normal use, whether it is on or off then.
            on_level_w = source.on_level_w[channel] * plan.scale * plan.channel_jitter[channel]
            magnitude_w = round(float(max(SPIKE_MIN_W, rng.uniform(*SPIKE_FACTOR) * on_level_w)), 1)
            mains_channel = int(rng.choice(mains)) if len(mains) else None
            lo, hi = np.searchsorted(ts_s, [start_ts_s, start_ts_s + duration_s])
            window = source_day.channel[lo:hi]
            hit = np.flatnonzero(window == channel) + lo
            power_w[hit] += magnitude_w
            if mains_channel is not None:
                power_w[np.flatnonzero(window == mains_channel) + lo] += magnitude_w
            spikes.append(Spike(
                f"{plan.house_id}-{day:04d}-{number}", plan.house_id, int(source.meters[channel]),
                source.labels[channel], source.appliances[channel], start_ts_s, duration_s, magnitude_w,
                int(source.meters[mains_channel]) if mains_channel is not None else None, len(hit),
            ))
        return spikes

    def iter_house_days(self) -> Iterator[HouseDay]:
        """House-days in (house, day) order."""
        for plan in self.plans:
            for day in range(self.config.days):
                yield self.house_day(plan, day)

    def to_table(self, house_day: HouseDay, dictionary: bool = False) -> pa.Table:
        """A house-day as a reading table (READING_ARROW; dictionary-encoded strings if asked)."""
        plan = house_day.plan
        labels, label_index, appliances, appliance_index = self._dictionaries[plan.source]
        channel = house_day.channel
        n = len(channel)
        columns = [
            pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([plan.house_id])),
            pa.array(self.sources[plan.source].meters[channel], pa.int32()),
            pa.DictionaryArray.from_arrays(label_index[channel], labels),
            pa.DictionaryArray.from_arrays(appliance_index[channel], appliances),
            pa.array(house_day.ts_s, pa.float64()),
            pa.array(house_day.power_w, pa.float64()),
        ]
        if dictionary:
            schema = pa.schema([pa.field(f.name, c.type, nullable=False) for f, c in zip(READING_ARROW, columns)])
            return pa.Table.from_arrays(columns, schema=schema)
        columns = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in columns]
        return pa.Table.from_arrays(columns, schema=READING_ARROW)

    def iter_batches(self, max_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        """Reading batches in READING_ARROW, one house at a time, each house-day in time order."""
        for house_day in self.iter_house_days():
            yield from self.to_table(house_day).to_batches(max_chunksize=max_rows)

    def houses_table(self) -> pa.Table:
        """Metadata of every derived house (HOUSE_ARROW)."""
        rows = []
        for plan in self.plans:
            row = asdict(plan)
            row["channel_jitter"] = list(plan.channel_jitter)
            row["n_channels"] = len(plan.channel_jitter)
            rows.append({f.name: row[f.name] for f in HOUSE_ARROW})
        return pa.Table.from_pylist(rows, schema=HOUSE_ARROW)


def spikes_table(spikes: list[Spike]) -> pa.Table:
    """Ground-truth spikes as a table (SPIKE_ARROW)."""
    return pa.Table.from_pylist([asdict(s) for s in spikes], schema=SPIKE_ARROW)


def iter_batches(houses: int, days: int, seed: int = 0, max_rows: int = 100_000, **options) -> Iterator[pa.RecordBatch]:
    """Reading batches of a generated dataset, for producers (see Generator.iter_batches)."""
    return Generator(GeneratorConfig(houses, days, seed, **options)).iter_batches(max_rows)


# Writers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What a generation run produced (built once it has finished)."""

    houses: int
    house_days: int
    readings: int
    bytes: int
    spikes: int
    files: int
    out: str
    format: str
    extra: dict


def _date_of(day_number: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day_number)).isoformat()


class _ParquetSink:
    """Raw-zone writer: `readings/date=YYYY-MM-DD/<house_id>.parquet`, one row group per write.

    A derived house-day spans two UTC dates, and the next house-day continues the second;
    so a writer per (house, date) stays open until the house moves past that date. Strings
    go in as dictionaries (no per-row hashing) and the Arrow schema is not stored, so
    readers see plain strings, i.e. exactly READING_ARROW.
    """

    def __init__(self, root: Path):
        self.root = root / "readings"
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.paths: list[Path] = []

    def write(self, house_id: str, table: pa.Table) -> None:
        day_numbers = np.floor(table["ts_s"].to_numpy() / DAY_S).astype(np.int64)
        bounds = np.flatnonzero(np.diff(day_numbers)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(day_numbers)]):
            day_str = _date_of(int(day_numbers[lo]))
            for stale in [d for d in self.writers if d < day_str]:
                self.writers.pop(stale).close()
            writer = self.writers.get(day_str)
            if writer is None:
                path = self.root / f"date={day_str}" / f"{house_id}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(path, table.schema, compression="snappy", store_schema=False)
                self.writers[day_str] = writer
                self.paths.append(path)
            writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)

    def end_house(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


class _ReddSink:
    """REDD tree writer: `low_freq/<house_id>/labels.dat` and `channel_M.dat`, appended per day."""

    def __init__(self, root: Path, generator: Generator):
        self.root = root / "low_freq"
        self.generator = generator
        self.paths: list[Path] = []

    def write(self, house_day: HouseDay) -> None:
        plan = house_day.plan
        source = self.generator.sources[plan.source]
        house_dir = self.root / plan.house_id
        if house_day.day == 0:
            redd.write_labels(house_dir, dict(zip(source.meters.tolist(), source.labels)))
            self.paths.append(house_dir / "labels.dat")
        order = np.argsort(house_day.channel, kind="stable")  # keeps time order within a channel
        channel = house_day.channel[order]
        bounds = np.searchsorted(channel, np.arange(len(source.meters) + 1))
        for index, meter in enumerate(source.meters.tolist()):
            rows = order[bounds[index]:bounds[index + 1]]
            path = house_dir / f"channel_{meter}.dat"
            # Millisecond timestamps, centiwatt powers: REDD's own precision is coarser.
            redd.write_channel(path, np.round(house_day.ts_s[rows], 3), np.round(house_day.power_w[rows], 2),
                               append=house_day.day > 0)
            if house_day.day == 0:
                self.paths.append(path)

    def end_house(self) -> None:
        pass


def generate(config: GeneratorConfig, out: str | Path, output_format: str = "parquet",
             progress: bool = False, sources: list[SourceHouse] | None = None) -> Summary:
    """Generate a dataset into `out` (parquet or redd) plus houses.parquet, spikes.parquet, manifest.json."""
    if output_format not in ("parquet", "redd"):
        raise ValueError(f"unknown format {output_format!r}: use parquet or redd")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generator = Generator(config, sources)
    readings = house_days = 0
    all_spikes: list[Spike] = []
    sink = _ParquetSink(out) if output_format == "parquet" else _ReddSink(out, generator)

    # Two cores: the main thread generates while one writer thread encodes and writes.
    # A queue of 2 house-days bounds memory; a single writer keeps the output order,
    # and so the bytes, deterministic.
    pending: queue.Queue = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def drain() -> None:
        try:
            while (item := pending.get()) is not None:
                if isinstance(item, str):
                    sink.end_house()
                elif output_format == "parquet":
                    sink.write(item.plan.house_id, generator.to_table(item, dictionary=True))
                else:
                    sink.write(item)
            sink.end_house()
        except BaseException as exc:  # re-raised in the main thread
            failure.append(exc)
            while pending.get() is not None:
                pass

    writer_thread = threading.Thread(target=drain, name="dataset-writer", daemon=True)
    writer_thread.start()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=generator.n_house_days, unit="house-day", desc="generating")
    try:
        for plan in generator.plans:
            for day in range(config.days):
                house_day = generator.house_day(plan, day)
                readings += len(house_day.ts_s)
                house_days += 1
                all_spikes.extend(house_day.spikes)
                pending.put(house_day)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(readings=f"{readings:,}", refresh=False)
                if failure:
                    raise failure[0]
            pending.put(plan.house_id)  # house finished: close its files
    finally:
        pending.put(None)
        writer_thread.join()
        if bar is not None:
            bar.close()
    if failure:
        raise failure[0]

    pq.write_table(generator.houses_table(), out / "houses.parquet")
    pq.write_table(spikes_table(all_spikes), out / "spikes.parquet")
    summary = Summary(houses=config.houses, house_days=house_days, readings=readings,
                      bytes=sum(p.stat().st_size for p in sink.paths), spikes=len(all_spikes),
                      files=len(sink.paths), out=str(out), format=output_format,
                      extra={"sources": [s.source_id for s in generator.sources],
                             "source_clean_days": [len(s.days) for s in generator.sources]})
    # No paths or clocks in the manifest: the same seed gives the same bytes anywhere.
    manifest = {"config": asdict(config), "summary": {k: v for k, v in asdict(summary).items() if k != "out"}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("generated %d houses, %d readings, %d bytes, %d spikes into %s",
             summary.houses, summary.readings, summary.bytes, summary.spikes, out)
    return summary

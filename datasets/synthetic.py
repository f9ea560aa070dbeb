"""Synthetic REDD-like houses: appliance models, 1 s ground signal, REDD sampling and gaps.

REDD cannot be redistributed, so this module writes houses in exactly its low-frequency
layout (docs/datasets.md, "REDD reader"). Every house is a list of circuits (channels 3..k), each an
appliance model evaluated on a 1 s grid for one day at a time; the two mains legs
(channels 1 and 2) are the sum of the circuits on each leg plus an untracked load.
Mains are sampled every second (a few seconds missing), circuits every 3-4 s, and every
channel loses data in gaps of minutes; some days have a gap of hours, which the
generator's clean-day selection must reject.

Each model's expected energy follows from its parameters alone (duty cycles, runs per
day, phase powers and durations); every random draw is centred so that the expectation
holds. The tests recompute it independently from the parameters.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets import redd

log = logging.getLogger(__name__)

DAY_S = 86_400
HOUR_S = 3_600
# Days of a REDD house are days of US/Eastern; the synthetic source aligns them on
# Eastern *standard* time midnight so every day is exactly 86 400 s long.
SOURCE_UTC_OFFSET_S = -5 * HOUR_S
# 2011-04-18 00:00 EST, the first day of REDD's recordings.
DEFAULT_START_TS_S = 1_303_102_800
CIRCUIT_PERIODS_S = (3, 4)


def _hours(*pairs: tuple[int, float], base: float = 0.0) -> tuple[float, ...]:
    """24 hourly values: `base` everywhere except the (hour, value) pairs given."""
    values = [base] * 24
    for hour, value in pairs:
        values[hour] = value
    return tuple(values)


# Appliance models: parameters, and one day of power from them ---------------------
#
# `signal(rng)` is one day of a model's power on a 1 s grid (86 400 values, watts).


def _intervals_to_mask(starts: np.ndarray, ends: np.ndarray, n: int = DAY_S) -> np.ndarray:
    """Float 0/1 (or overlap count) array of length n that is 1 inside [start, end)."""
    starts = np.clip(np.asarray(starts, np.int64), 0, n)
    ends = np.clip(np.asarray(ends, np.int64), 0, n)
    edges = np.zeros(n + 1)
    np.add.at(edges, starts, 1.0)
    np.add.at(edges, ends, -1.0)
    return np.cumsum(edges[:-1])


def _run_count(rng: np.random.Generator, rate: float) -> int:
    """floor(rate) or floor(rate)+1 runs, so the mean is exactly `rate`."""
    whole = int(np.floor(rate))
    return whole + int(rng.random() < rate - whole)


@dataclass(frozen=True)
class Steady:
    """Always-on load: `mean_w` plus uniform noise of +/- `noise_w` per sample."""

    mean_w: float
    noise_w: float = 0.0

    def signal(self, rng: np.random.Generator) -> np.ndarray:
        return self.mean_w + rng.uniform(-self.noise_w, self.noise_w, DAY_S)


@dataclass(frozen=True)
class Cycling:
    """Compressor: `on_w` for ~on_s, off for ~off_s (each +/-10 %), plus defrost heater runs."""

    on_w: float
    on_s: float
    off_s: float
    standby_w: float
    defrost_w: float = 0.0
    defrost_s: int = 0
    defrosts_per_day: float = 0.0

    def signal(self, rng: np.random.Generator) -> np.ndarray:
        n_cycles = int(DAY_S / (self.on_s + self.off_s) * 1.5) + 4
        on = self.on_s * rng.uniform(0.9, 1.1, n_cycles)
        off = self.off_s * rng.uniform(0.9, 1.1, n_cycles)
        # Start mid-cycle at a uniform phase so the day sees the stationary duty cycle.
        t0 = -rng.uniform(0, self.on_s + self.off_s)
        starts = t0 + np.concatenate(([0.0], np.cumsum(on + off)[:-1]))
        power = self.standby_w + self.on_w * _intervals_to_mask(np.round(starts), np.round(starts + on))
        power *= rng.uniform(0.97, 1.03, DAY_S)  # motor load ripple, mean 1
        n_defrost = _run_count(rng, self.defrosts_per_day)
        if n_defrost:
            d_starts = rng.integers(0, DAY_S - self.defrost_s, n_defrost)
            power += self.defrost_w * _intervals_to_mask(d_starts, d_starts + self.defrost_s)
        return power


@dataclass(frozen=True)
class Thermostatic:
    """Heater or cooler: in each `period_s` window it is on for duty(hour) * (0.8..1.2) of it."""

    on_w: float
    period_s: int
    duty_by_hour: tuple[float, ...]
    standby_w: float

    def signal(self, rng: np.random.Generator) -> np.ndarray:
        n_periods = DAY_S // self.period_s
        starts = np.arange(n_periods) * self.period_s
        duty = np.asarray(self.duty_by_hour)[starts // HOUR_S] * rng.uniform(0.8, 1.2, n_periods)
        on_s = np.round(duty * self.period_s)
        return self.standby_w + self.on_w * _intervals_to_mask(starts, starts + on_s)


@dataclass(frozen=True)
class Phase:
    """One step of a programme: `power_w` for `duration_s`, on for `duty` of every `cycle_s`."""

    power_w: float
    duration_s: int
    duty: float = 1.0
    cycle_s: int = 60

    def profile(self) -> np.ndarray:
        """Power of this step, second by second."""
        t = np.arange(self.duration_s)
        return np.where((t % self.cycle_s) < self.duty * self.cycle_s, self.power_w, 0.0)


@dataclass(frozen=True)
class Programme:
    """Runs of a fixed phase sequence, `runs_per_day` on average, started by hour weights."""

    phases: tuple[Phase, ...]
    runs_per_day: float
    start_weights: tuple[float, ...]
    standby_w: float

    def signal(self, rng: np.random.Generator) -> np.ndarray:
        power = np.full(DAY_S, self.standby_w)
        profile = np.concatenate([phase.profile() for phase in self.phases])  # one run
        weights = np.asarray(self.start_weights, float)
        for _ in range(_run_count(rng, self.runs_per_day)):
            hour = rng.choice(24, p=weights / weights.sum())
            # Runs stay inside the day, so a day's energy is exactly its runs' energy.
            start = min(hour * HOUR_S + int(rng.integers(0, HOUR_S)), DAY_S - len(profile))
            power[start:start + len(profile)] += profile * rng.uniform(0.9, 1.1)
        return power


@dataclass(frozen=True)
class Lighting:
    """`level_w` x hourly profile x per-minute factor (0.5..1.5), over a standby floor."""

    level_w: float
    profile: tuple[float, ...]
    standby_w: float

    def signal(self, rng: np.random.Generator) -> np.ndarray:
        per_minute = np.repeat(np.asarray(self.profile), 60) * rng.uniform(0.5, 1.5, 24 * 60)
        return self.standby_w + self.level_w * np.repeat(per_minute, 60)


Model = Steady | Cycling | Thermostatic | Programme | Lighting


# Houses ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Circuit:
    """One circuit channel: a model's power times `share` (two-leg 240 V appliances use 0.5)."""

    meter: int
    label: str
    model: Model
    leg: int
    share: float = 1.0
    # Channels of one 240 V appliance share one realisation: same group, same signal.
    group: int = 0


@dataclass(frozen=True)
class SyntheticHouse:
    """Parameters of one synthetic house; its data follow from these and the seed alone."""

    house_id: str
    index: int
    circuits: tuple[Circuit, ...]
    untracked: tuple[Model, Model]
    start_ts_s: int
    n_days: int

    @property
    def labels(self) -> dict[int, str]:
        """Channel -> raw REDD label, mains legs included."""
        return {1: "mains", 2: "mains", **{c.meter: c.label for c in self.circuits}}


# Appliance catalogue --------------------------------------------------------------

EVENING = _hours((6, 0.5), (7, 1), (8, 0.5), (17, 0.6), (18, 1.0), (19, 1.0), (20, 0.8), (21, 0.5))
MEALS = _hours((7, 1), (8, 1), (12, 1), (13, 0.5), (18, 2), (19, 1.5), base=0.05)
DAYTIME = _hours(*((h, 1.0) for h in range(9, 22)), base=0.1)
LIGHT_PROFILE = _hours((6, 0.3), (7, 0.6), (8, 0.3), (17, 0.4), (18, 0.8), (19, 1.0), (20, 1.0),
                       (21, 0.9), (22, 0.6), (23, 0.2), base=0.03)
# Spring heating, like REDD's April-May: most at night and in the morning.
HEAT_DUTY = tuple(0.3 if h < 6 else 0.25 if h < 9 else 0.08 if h < 17 else 0.2 for h in range(24))
COOL_DUTY = tuple(0.05 if h < 10 else 0.5 if h < 19 else 0.2 for h in range(24))


def _draw_model(label: str, rng: np.random.Generator) -> Model:
    """Parameters of one appliance of the given REDD label, drawn around public measurements."""
    u = rng.uniform
    if label == "refrigerator":
        return Cycling(on_w=u(90, 130), on_s=u(12, 18) * 60, off_s=u(30, 40) * 60, standby_w=u(3, 6),
                       defrost_w=u(300, 500), defrost_s=int(u(15, 25)) * 60, defrosts_per_day=u(0.5, 1.5))
    if label == "microwave":
        return Programme((Phase(u(1200, 1600), int(u(1, 5)) * 60),), u(1, 4), MEALS, u(2, 5))
    if label == "dishwaser":
        pump_w = u(150, 200)
        return Programme((Phase(pump_w, 600), Phase(u(1300, 1700), 1200, 0.9), Phase(pump_w, 1800),
                          Phase(u(1300, 1700), 900, 0.9), Phase(pump_w, 300)), u(0.4, 1.0), EVENING, u(1, 3))
    if label == "washer_dryer":
        return Programme((Phase(u(50, 150), 1200), Phase(u(300, 450), 600, 0.5), Phase(u(80, 150), 600),
                          Phase(u(4500, 5500), 2400, 0.7), Phase(u(400, 600), 900)), u(0.3, 0.8), DAYTIME, u(2, 4))
    if label in ("oven", "stove"):
        on_w = u(2000, 3200) if label == "oven" else u(1200, 2200)
        return Programme((Phase(on_w, 600), Phase(on_w, 1800, 0.4, 120)), u(0.3, 1.0), MEALS, u(1, 4))
    if label == "kitchen_outlets":
        return Programme((Phase(u(600, 1400), int(u(2, 6)) * 60),), u(2, 6), MEALS, u(5, 40))
    if label == "disposal":
        return Programme((Phase(u(400, 700), 30),), u(0.5, 2), MEALS, 0.0)
    if label == "bathroom_gfi":
        return Programme((Phase(u(1200, 1800), int(u(3, 8)) * 60),), u(0.5, 1.5), EVENING, u(1, 3))
    if label == "lighting":
        return Lighting(level_w=u(60, 370), profile=LIGHT_PROFILE, standby_w=u(5, 15))
    if label == "electric_heat":
        return Thermostatic(on_w=u(2000, 4000), period_s=900, duty_by_hour=HEAT_DUTY, standby_w=u(2, 5))
    if label == "furance":
        return Thermostatic(on_w=u(400, 700), period_s=1200, duty_by_hour=HEAT_DUTY, standby_w=u(5, 10))
    if label == "air_conditioning":
        return Thermostatic(on_w=u(2000, 3500), period_s=1200, duty_by_hour=COOL_DUTY, standby_w=u(5, 10))
    if label in ("electronics", "outlets_unknown", "miscellaeneous", "subpanel"):
        return Steady(mean_w=u(20, 150), noise_w=u(2, 10))
    if label == "outdoor_outlets":
        return Programme((Phase(u(800, 1500), int(u(10, 40)) * 60),), u(0.1, 0.5), DAYTIME, u(1, 3))
    if label == "smoke_alarms":
        return Steady(mean_w=u(1, 4), noise_w=0.5)
    raise ValueError(f"no appliance model for label {label!r}")


_FILLERS = ("lighting", "kitchen_outlets", "electronics", "bathroom_gfi", "outlets_unknown",
            "miscellaeneous", "smoke_alarms", "disposal", "stove", "subpanel", "outdoor_outlets", "microwave")
# Appliances fed at 240 V appear on two channels, one per leg (REDD house 1: oven 3+4).
_TWO_LEG = ("oven", "washer_dryer", "electric_heat")


def make_house(index: int, seed: int, n_days: int = 8, start_ts_s: int = DEFAULT_START_TS_S) -> SyntheticHouse:
    """Draw the circuits and appliance parameters of synthetic house `index` (1-based)."""
    rng = np.random.default_rng([seed, index, 0xC1C])
    n_channels = int(rng.integers(11, 27))
    heating = str(rng.choice(["electric_heat", "furance", "air_conditioning"]))
    appliances = ["refrigerator", "oven", "microwave", "dishwaser", "washer_dryer", heating,
                  "lighting", "lighting", "kitchen_outlets"]
    circuits: list[Circuit] = []
    meter = 3
    for group, label in enumerate(appliances):
        if meter > n_channels:
            break
        model = _draw_model(label, rng)
        if label in _TWO_LEG and meter + 1 <= n_channels:
            circuits += [Circuit(meter, label, model, 1, 0.5, group), Circuit(meter + 1, label, model, 2, 0.5, group)]
            meter += 2
        else:
            circuits.append(Circuit(meter, label, model, int(rng.integers(1, 3)), 1.0, group))
            meter += 1
    group = len(appliances)
    while meter <= n_channels:
        label = str(rng.choice(_FILLERS))
        circuits.append(Circuit(meter, label, _draw_model(label, rng), int(rng.integers(1, 3)), 1.0, group))
        meter += 1
        group += 1
    untracked = (Steady(rng.uniform(30, 120), 5.0), Steady(rng.uniform(30, 120), 5.0))
    return SyntheticHouse(f"house_{index}", index, tuple(circuits), untracked, start_ts_s, n_days)


def make_houses(k: int, seed: int, n_days: int = 8, start_ts_s: int = DEFAULT_START_TS_S) -> list[SyntheticHouse]:
    """K synthetic seed houses, numbered 1..k like REDD's."""
    return [make_house(i, seed, n_days, start_ts_s) for i in range(1, k + 1)]


# Sampling and gaps ----------------------------------------------------------------


@dataclass(frozen=True)
class GapModel:
    """Data loss: house-wide gaps of minutes, per-channel dropouts, some days an hours-long gap."""

    house_gaps_per_day: float = 2.0
    house_gap_s: tuple[int, int] = (60, 600)
    channel_gaps_per_day: float = 1.0
    channel_gap_s: tuple[int, int] = (20, 300)
    long_gap_probability: float = 0.25
    long_gap_s: tuple[int, int] = (1_800, 10_800)
    mains_missing_fraction: float = 0.01


def _gap_mask(rng: np.random.Generator, count: int, length_s: tuple[int, int]) -> np.ndarray:
    """True on seconds lost to `count` gaps of the given length range."""
    starts = rng.integers(0, DAY_S, count)
    lengths = rng.integers(length_s[0], length_s[1] + 1, count)
    return _intervals_to_mask(starts, starts + lengths) > 0


def synth_day(house: SyntheticHouse, day: int, seed: int, gaps: GapModel = GapModel()) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Channel -> (ts_s, power_w) samples of one day of one house, as REDD would record them."""
    rng = np.random.default_rng([seed, house.index, day, 0xDA1])
    day_start = house.start_ts_s + day * DAY_S
    signals: dict[int, np.ndarray] = {}  # by appliance group
    channel_power: dict[int, np.ndarray] = {}
    legs = [np.zeros(DAY_S), np.zeros(DAY_S)]
    for circuit in house.circuits:
        if circuit.group not in signals:
            signals[circuit.group] = circuit.model.signal(rng)
        power = signals[circuit.group] * circuit.share
        legs[circuit.leg - 1] += power
        channel_power[circuit.meter] = power
    for leg, model in zip(legs, house.untracked):
        leg += model.signal(rng)

    house_lost = _gap_mask(rng, rng.poisson(gaps.house_gaps_per_day), gaps.house_gap_s)
    if rng.random() < gaps.long_gap_probability:
        house_lost |= _gap_mask(rng, 1, gaps.long_gap_s)
    samples: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for meter in (1, 2):
        keep = ~house_lost & (rng.random(DAY_S) >= gaps.mains_missing_fraction)
        seconds = np.flatnonzero(keep)
        samples[meter] = (seconds, legs[meter - 1][seconds])
    for circuit in house.circuits:
        steps = rng.choice(CIRCUIT_PERIODS_S, size=DAY_S // 3 + 1, p=(0.7, 0.3))
        seconds = np.cumsum(steps) - steps[0] + int(rng.integers(0, 3))
        seconds = seconds[seconds < DAY_S]
        lost = house_lost | _gap_mask(rng, rng.poisson(gaps.channel_gaps_per_day), gaps.channel_gap_s)
        seconds = seconds[~lost[seconds]]
        samples[circuit.meter] = (seconds, channel_power[circuit.meter][seconds])
    # REDD stores whole seconds and watts to two decimals; doing the same here means the
    # in-memory house and its written-out text are the same data.
    return {
        meter: ((seconds + day_start).astype(np.float64), np.round(np.maximum(power, 0.0), 2))
        for meter, (seconds, power) in samples.items()
    }


def synth_house(house: SyntheticHouse, seed: int, gaps: GapModel = GapModel()) -> redd.House:
    """All days of a synthetic house as a `redd.House` (what reading its written tree gives)."""
    days = [synth_day(house, d, seed, gaps) for d in range(house.n_days)]
    result = redd.House(house_id=house.house_id, path=Path(house.house_id))
    for meter, label in house.labels.items():
        result.channels[meter] = redd.Channel(
            meter, label, redd.normalise_label(label),
            np.concatenate([day[meter][0] for day in days]),
            np.concatenate([day[meter][1] for day in days]),
        )
    return result


def write_tree(root: str | Path, k: int, n_days: int, seed: int, gaps: GapModel = GapModel()) -> list[SyntheticHouse]:
    """Write K synthetic houses as `root/low_freq/house_N/` in REDD's layout; returns their parameters."""
    houses = make_houses(k, seed, n_days)
    for house in houses:
        house_dir = Path(root) / "low_freq" / house.house_id
        redd.write_labels(house_dir, house.labels)
        for meter in house.labels:
            (house_dir / f"channel_{meter}.dat").unlink(missing_ok=True)
        for day in range(house.n_days):
            for meter, (ts_s, power_w) in synth_day(house, day, seed, gaps).items():
                redd.write_channel(house_dir / f"channel_{meter}.dat", ts_s, power_w, append=True)
        log.info("wrote synthetic %s (%d channels, %d days) to %s", house.house_id, len(house.labels), n_days, house_dir)
    return houses

"""Alert episode detection over readings of many meters: pure numpy/pandas, no Spark.

The streaming job keeps one `MeterStates` per bucket of houses in Spark's state
store and calls `detect()` once per bucket and micro-batch. Keeping many meters
per state key, with a vectorised path for the common case (no reading above the
raise level), is what lets one Python call per bucket handle tens of thousands of
meters per second; one Python call per meter would not keep up on two cores.

Rules (all in `Rules`, defaults documented in docs/streaming.md):

* overshoot: an episode opens when power > the meter's raise level (`raise_levels`:
  threshold_w x multiplier, or normal_peak_w x peak_margin where higher) for at least
  `min_readings` consecutive readings or for at least `min_duration_s`; it closes
  after `clear_readings` consecutive readings below threshold_w x clear_multiplier
  (hysteresis); mains meters only if `overshoot_on_mains`. A new episode that would open within `cooldown_s` of the previous
  one's end re-opens that episode (same id) instead of raising another alert.
* no_data: a meter that has reported at least `no_data_min_readings` readings and
  then stays silent for more than `no_data_after_s` of event time (measured against
  the watermark) opens a no_data alert; its next reading closes it.
* new_peak: a mains meter exceeds its highest power on record by `new_peak_margin`
  after `new_peak_warmup_s` of history; at most one per meter per `new_peak_cooldown_s`.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from smw.alert import KIND_NEW_PEAK, KIND_NO_DATA, KIND_OVERSHOOT, alert_id
from smw.config import option as _rule

MAINS = "mains"

IDLE, CANDIDATE, OPEN = 0, 1, 2


@dataclass(frozen=True)
class Rules:
    """Parameters of the three alert kinds (each field's help is its command-line help)."""

    multiplier: float = _rule(2.0, "an episode opens above threshold_w x this ...")
    peak_margin: float = _rule(
        1.2, "... and above normal_peak_w x this (the highest level the meter holds on several days; 0: ignore it)")
    clear_multiplier: float = _rule(1.0, "it closes below threshold_w x this (hysteresis)")
    min_readings: int = _rule(3, "consecutive readings above the raise level that open an episode")
    min_duration_s: float = _rule(10.0, "...or seconds above the raise level that open it")
    clear_readings: int = _rule(2, "consecutive readings below the clear level that close it")
    cooldown_s: float = _rule(300.0, "a run starting this soon after a close re-opens the same episode")
    stale_close_s: float = _rule(
        300.0, "an open episode of a meter silent this long (event time) closes at its last reading")
    critical_ratio: float = _rule(3.0, "severity critical when peak_w >= threshold_w x this, else warning")
    overshoot_on_mains: bool = _rule(False, "raise overshoot alerts on mains meters too")
    no_data_after_s: float = _rule(1800.0, "silence (event time, against the watermark) that opens a no_data alert")
    no_data_min_readings: int = _rule(100, "readings a meter must have sent before its silence counts")
    new_peak_margin: float = _rule(1.1, "a mains reading above record x this is a new peak")
    new_peak_warmup_s: float = _rule(86400.0, "history a mains meter needs before new peaks are reported")
    new_peak_cooldown_s: float = _rule(86400.0, "at most one new_peak alert per mains meter per this many seconds")


# Per-meter state columns and their empty values.
_FLOAT_COLUMNS = ("first_ts_s", "last_ts_s", "record_w", "peak_alert_ts_s", "cand_start_ts_s", "cand_sum_w",
                  "cand_peak_w", "ep_start_ts_s", "ep_sum_w", "ep_peak_w", "ep_threshold_w", "below_start_ts_s",
                  "closed_ts_s", "no_data_start_ts_s")
_INT_COLUMNS = ("readings", "phase", "cand_n", "ep_n", "below_n")


@dataclass
class MeterStates:
    """Columnar state of the meters of one bucket (one row per (house_id, meter))."""

    house_id: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    meter: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    appliance: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    floats: dict = field(default_factory=lambda: {c: np.empty(0) for c in _FLOAT_COLUMNS})
    ints: dict = field(default_factory=lambda: {c: np.empty(0, dtype=np.int64) for c in _INT_COLUMNS})

    def __len__(self) -> int:
        return len(self.meter)

    def index(self) -> dict:
        return {(h, int(m)): i for i, (h, m) in enumerate(zip(self.house_id, self.meter))}

    def append(self, house_ids, meters, appliances) -> None:
        """Add meters seen for the first time, with empty state."""
        n = len(meters)
        self.house_id = np.concatenate([self.house_id, np.asarray(house_ids, dtype=object)])
        self.meter = np.concatenate([self.meter, np.asarray(meters, dtype=np.int64)])
        self.appliance = np.concatenate([self.appliance, np.asarray(appliances, dtype=object)])
        for c in _FLOAT_COLUMNS:
            self.floats[c] = np.concatenate([self.floats[c], np.full(n, np.nan)])
        for c in _INT_COLUMNS:
            self.ints[c] = np.concatenate([self.ints[c], np.zeros(n, dtype=np.int64)])

    def to_bytes(self) -> bytes:
        """Arrow IPC bytes, for Spark's state store."""
        columns = {"house_id": pa.array(self.house_id.tolist(), pa.string()),
                   "meter": pa.array(self.meter, pa.int64()),
                   "appliance": pa.array(self.appliance.tolist(), pa.string())}
        columns.update({c: pa.array(v, pa.float64()) for c, v in self.floats.items()})
        columns.update({c: pa.array(v, pa.int64()) for c, v in self.ints.items()})
        table = pa.Table.from_pydict(columns)
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "MeterStates":
        table = pa.ipc.open_stream(blob).read_all()
        states = cls()
        states.house_id = np.asarray(table["house_id"].to_pylist(), dtype=object)
        states.meter = table["meter"].to_numpy()
        states.appliance = np.asarray(table["appliance"].to_pylist(), dtype=object)
        # Copies: Arrow-backed arrays are read-only and the detector updates in place.
        states.floats = {c: table[c].to_numpy().copy() for c in _FLOAT_COLUMNS}
        states.ints = {c: table[c].to_numpy().copy() for c in _INT_COLUMNS}
        return states


@dataclass
class Outcome:
    """What one call of `detect` produced."""

    alerts: list = field(default_factory=list)
    out_of_order: int = 0
    next_deadline_s: float = math.inf


def _nan_to_none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


class _Emitter:
    """Builds alert rows with a sequence number, so the sink keeps the last row per id."""

    def __init__(self, rules: Rules, outcome: Outcome):
        self.rules = rules
        self.outcome = outcome

    def overshoot(self, s: MeterStates, i: int, end_ts_s) -> None:
        f = s.floats
        threshold_w = f["ep_threshold_w"][i]
        peak_w = f["ep_peak_w"][i]
        severity = "critical" if peak_w >= threshold_w * self.rules.critical_ratio else "warning"
        self._add(KIND_OVERSHOOT, s, i, f["ep_start_ts_s"][i], end_ts_s, threshold_w, self.rules.multiplier,
                  peak_w, f["ep_sum_w"][i] / max(s.ints["ep_n"][i], 1), severity)

    def no_data(self, s: MeterStates, i: int, end_ts_s) -> None:
        self._add(KIND_NO_DATA, s, i, s.floats["no_data_start_ts_s"][i], end_ts_s, None, None, None, None, "warning")

    def new_peak(self, s: MeterStates, i: int, ts_s: float, power_w: float, record_w: float) -> None:
        self._add(KIND_NEW_PEAK, s, i, ts_s, ts_s, record_w, self.rules.new_peak_margin, power_w, power_w, "info")

    def _add(self, kind, s, i, start_ts_s, end_ts_s, threshold_w, multiplier, peak_w, mean_w, severity):
        house_id, meter = s.house_id[i], int(s.meter[i])
        self.outcome.alerts.append({
            "id": alert_id(kind, house_id, meter, float(start_ts_s)),
            "kind": kind, "house_id": house_id, "meter": meter, "appliance": s.appliance[i],
            "threshold_w": _nan_to_none(None if threshold_w is None else float(threshold_w)),
            "multiplier": multiplier,
            "peak_w": None if peak_w is None else float(peak_w),
            "mean_w": None if mean_w is None else float(mean_w),
            "start_ts_s": float(start_ts_s),
            "end_ts_s": None if end_ts_s is None else float(end_ts_s),
            "state": "open" if end_ts_s is None else "closed",
            "severity": severity,
            "seq": len(self.outcome.alerts),
        })


def raise_levels(threshold_w: np.ndarray, normal_peak_w: np.ndarray, rules: Rules) -> np.ndarray:
    """Power above which readings count towards opening an episode: twice (`multiplier`) the
    meter's usual power in use, or above its normal peak by `peak_margin` where that is higher
    (a fridge that defrosts daily, a dryer's heating phase). NaN where there is no threshold;
    a NaN peak (none established) leaves threshold_w x multiplier."""
    return np.where(np.isnan(threshold_w), np.nan,
                    np.fmax(threshold_w * rules.multiplier, normal_peak_w * rules.peak_margin))


def detect(states: MeterStates, batch: pd.DataFrame, watermark_s: float, rules: Rules) -> Outcome:
    """Advance `states` in place with a batch of readings; returns the alert rows to write.

    `batch` has columns house_id, meter, appliance, ts_s, power_w, threshold_w (NaN
    when the meter has no threshold) and normal_peak_w (NaN when none is known).
    `watermark_s` is the event-time watermark the batch started with (0 before any).
    """
    outcome = Outcome()
    emit = _Emitter(rules, outcome)
    if len(batch):
        _apply_readings(states, batch, rules, emit, outcome)
    if watermark_s > 0:
        _apply_silence(states, watermark_s, rules, emit)
    eligible = (np.isnan(states.floats["no_data_start_ts_s"])
                & (states.ints["readings"] >= rules.no_data_min_readings))
    if eligible.any():
        outcome.next_deadline_s = float(np.min(states.floats["last_ts_s"][eligible])) + rules.no_data_after_s
    return outcome


def _apply_readings(states: MeterStates, batch: pd.DataFrame, rules: Rules, emit: _Emitter, outcome: Outcome):
    batch = batch.sort_values(["house_id", "meter", "ts_s"], kind="stable")
    house = batch["house_id"].to_numpy(dtype=object)
    meter = batch["meter"].to_numpy(dtype=np.int64)
    ts_s = batch["ts_s"].to_numpy(dtype=np.float64)
    power_w = batch["power_w"].to_numpy(dtype=np.float64)
    threshold_w = batch["threshold_w"].to_numpy(dtype=np.float64)
    if not rules.overshoot_on_mains:
        # Mains carry every circuit's episodes (and new_peak covers the house as a whole).
        threshold_w = np.where(batch["appliance"].to_numpy(dtype=object) == MAINS, np.nan, threshold_w)
    n = len(ts_s)
    starts = np.flatnonzero(np.r_[True, (house[1:] != house[:-1]) | (meter[1:] != meter[:-1])])
    ends = np.r_[starts[1:], n]

    # Map each group to its state row, creating rows for new meters.
    index = states.index()
    new = [k for k in starts if (house[k], int(meter[k])) not in index]
    if new:
        states.append(house[new], meter[new], batch["appliance"].to_numpy(dtype=object)[new])
        index = states.index()
    rows = np.fromiter((index[(house[k], int(meter[k]))] for k in starts), dtype=np.int64, count=len(starts))
    f, g = states.floats, states.ints

    # Readings at or before the meter's last one (replays, duplicates) carry no news.
    last_ts_s = np.repeat(np.nan_to_num(f["last_ts_s"][rows], nan=-np.inf), ends - starts)
    fresh = ts_s > last_ts_s
    outcome.out_of_order += int(n - fresh.sum())

    raise_w = raise_levels(threshold_w, batch["normal_peak_w"].to_numpy(dtype=np.float64), rules)
    above = fresh & (power_w > raise_w)  # NaN thresholds compare False
    group_above = np.add.reduceat(above.astype(np.int64), starts) > 0
    group_max_w = np.maximum.reduceat(np.where(fresh, power_w, -np.inf), starts)
    group_last_ts_s = np.maximum.reduceat(np.where(fresh, ts_s, -np.inf), starts)
    peak_watch = ((states.appliance[rows] == MAINS)
                  & (group_last_ts_s - np.nan_to_num(f["first_ts_s"][rows], nan=np.inf) >= rules.new_peak_warmup_s)
                  & (group_max_w > np.nan_to_num(f["record_w"][rows], nan=np.inf) * rules.new_peak_margin))
    slow = (group_above | (g["phase"][rows] != IDLE) | ~np.isnan(f["no_data_start_ts_s"][rows]) | peak_watch)

    # Fast path: idle meters with nothing above the raise level only move their counters.
    fast = ~slow & np.isfinite(group_last_ts_s)
    fr = rows[fast]
    counts = np.add.reduceat(fresh.astype(np.int64), starts)[fast]
    f["first_ts_s"][fr] = np.where(np.isnan(f["first_ts_s"][fr]),
                                   np.minimum.reduceat(np.where(fresh, ts_s, np.inf), starts)[fast], f["first_ts_s"][fr])
    f["last_ts_s"][fr] = group_last_ts_s[fast]
    f["record_w"][fr] = np.fmax(f["record_w"][fr], group_max_w[fast])
    g["readings"][fr] += counts

    for k in np.flatnonzero(slow):
        i = rows[k]
        for j in range(starts[k], ends[k]):
            if fresh[j]:
                _step(states, i, ts_s[j], power_w[j], threshold_w[j], raise_w[j], rules, emit)


def _step(s: MeterStates, i: int, ts_s: float, power_w: float, threshold_w: float, raise_w: float, rules: Rules,
          emit: _Emitter):
    """One reading of one meter through the state machine."""
    f, g = s.floats, s.ints
    if not math.isnan(f["no_data_start_ts_s"][i]):
        emit.no_data(s, i, ts_s)  # the meter speaks again: the outage ends here
        f["no_data_start_ts_s"][i] = math.nan
    if math.isnan(f["first_ts_s"][i]):
        f["first_ts_s"][i] = ts_s
    f["last_ts_s"][i] = ts_s
    g["readings"][i] += 1

    record_w = f["record_w"][i]
    if (s.appliance[i] == MAINS and not math.isnan(record_w) and power_w > record_w * rules.new_peak_margin
            and ts_s - f["first_ts_s"][i] >= rules.new_peak_warmup_s
            and not ts_s - f["peak_alert_ts_s"][i] < rules.new_peak_cooldown_s):
        emit.new_peak(s, i, ts_s, power_w, record_w)
        f["peak_alert_ts_s"][i] = ts_s
    f["record_w"][i] = power_w if math.isnan(record_w) else max(record_w, power_w)

    if math.isnan(threshold_w):
        if g["phase"][i] == CANDIDATE:
            g["phase"][i] = IDLE
        return
    phase = g["phase"][i]
    if phase == OPEN:
        if power_w >= threshold_w * rules.clear_multiplier:
            g["ep_n"][i] += 1
            f["ep_sum_w"][i] += power_w
            f["ep_peak_w"][i] = max(f["ep_peak_w"][i], power_w)
            g["below_n"][i] = 0
            return
        g["below_n"][i] += 1
        if g["below_n"][i] == 1:
            f["below_start_ts_s"][i] = ts_s
        if g["below_n"][i] >= rules.clear_readings:
            end_ts_s = f["below_start_ts_s"][i]
            g["phase"][i] = IDLE
            f["closed_ts_s"][i] = end_ts_s
            emit.overshoot(s, i, end_ts_s)
        return
    if power_w > raise_w:
        if phase == IDLE:
            g["phase"][i] = CANDIDATE
            f["cand_start_ts_s"][i] = ts_s
            g["cand_n"][i] = 0
            f["cand_sum_w"][i] = 0.0
            f["cand_peak_w"][i] = power_w
        g["cand_n"][i] += 1
        f["cand_sum_w"][i] += power_w
        f["cand_peak_w"][i] = max(f["cand_peak_w"][i], power_w)
        if g["cand_n"][i] >= rules.min_readings or ts_s - f["cand_start_ts_s"][i] >= rules.min_duration_s:
            closed_ts_s = f["closed_ts_s"][i]
            if not math.isnan(closed_ts_s) and f["cand_start_ts_s"][i] - closed_ts_s <= rules.cooldown_s:
                # Within the cooldown: the previous episode goes on (same id), no new alert.
                g["ep_n"][i] += g["cand_n"][i]
                f["ep_sum_w"][i] += f["cand_sum_w"][i]
                f["ep_peak_w"][i] = max(f["ep_peak_w"][i], f["cand_peak_w"][i])
            else:
                f["ep_start_ts_s"][i] = f["cand_start_ts_s"][i]
                g["ep_n"][i] = g["cand_n"][i]
                f["ep_sum_w"][i] = f["cand_sum_w"][i]
                f["ep_peak_w"][i] = f["cand_peak_w"][i]
                f["ep_threshold_w"][i] = threshold_w
            g["phase"][i] = OPEN
            g["below_n"][i] = 0
            emit.overshoot(s, i, None)
    elif phase == CANDIDATE:
        g["phase"][i] = IDLE  # the run above the raise level broke before it counted


def _apply_silence(s: MeterStates, watermark_s: float, rules: Rules, emit: _Emitter) -> None:
    """Close episodes of meters gone quiet and open no_data alerts, against the watermark."""
    f, g = s.floats, s.ints
    last_ts_s = f["last_ts_s"]
    stale = np.nan_to_num(last_ts_s, nan=np.inf) < watermark_s - rules.stale_close_s
    for i in np.flatnonzero(stale & (g["phase"] == OPEN)):
        # Nothing was heard since the last reading above the clear level: the episode ends there.
        g["phase"][i] = IDLE
        f["closed_ts_s"][i] = last_ts_s[i]
        emit.overshoot(s, i, last_ts_s[i])
    g["phase"][stale & (g["phase"] == CANDIDATE)] = IDLE
    silent = ((np.nan_to_num(last_ts_s, nan=np.inf) < watermark_s - rules.no_data_after_s)
              & np.isnan(f["no_data_start_ts_s"]) & (g["readings"] >= rules.no_data_min_readings))
    for i in np.flatnonzero(silent):
        f["no_data_start_ts_s"][i] = last_ts_s[i]
        emit.no_data(s, i, None)

"""Alert episode detection over readings of many meters: pure numpy/pandas, no Spark.

The alert job (`streaming.alerts`) keeps one `MeterStates` for the whole fleet in its
driver: columns of numpy arrays, a row per (house, meter). Per micro-batch it runs the
steps of `detect()` on a summary of each meter's readings (`plan`, `apply_summary`),
the readings of the few meters that need them (`apply_readings`) and the silence of
every meter (`apply_silence`), so a batch costs what its readings and its active meters
cost. `detect()` is the same on readings in memory: the reference the tests and the
in-process evaluation use.

Rules (all in `Rules`, defaults documented in docs/streaming.md):

* overshoot: an episode opens when power > the meter's raise level (`raise_levels`:
  threshold_w x multiplier, or normal_peak_w x peak_margin where higher) for at least
  `min_readings` consecutive readings or for at least `min_duration_s`; it closes
  after `clear_readings` consecutive readings below threshold_w x clear_multiplier
  (hysteresis); mains meters only if `overshoot_on_mains`. A new episode that would open within `cooldown_s` of the previous
  one's end re-opens that episode (same id) instead of raising another alert.
* overshoot, short run: a whole run above threshold_w x multiplier (at least `min_readings`
  readings, the readings either side below it and within `run_gap_s`) that ends after less
  than `short_run_ratio` x the meter's shortest such run in its window (`min_run_s`,
  learnt nightly) opens an episode at the run's start when it ends: a load at the level of
  the fridge's defrost is not the defrost when it stops after a few minutes. It clears as
  any episode does.
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
    short_run_ratio: float = _rule(
        0.6, "a whole run above threshold_w x multiplier shorter than the meter's shortest usual run (min_run_s) "
             "x this is an overshoot too (0: off)")
    run_gap_s: float = _rule(
        60.0, "readings further apart than this break a run: such a run is not timed (the nightly's --run-gap-s)")
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
                  "closed_ts_s", "no_data_start_ts_s", "run_start_ts_s", "run_sum_w", "run_peak_w")
_INT_COLUMNS = ("readings", "phase", "cand_n", "ep_n", "below_n", "run_n", "run_whole")


@dataclass
class MeterStates:
    """Columnar state of many meters (one row per (house_id, meter)); rows never move."""

    house_id: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    meter: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    appliance: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    floats: dict = field(default_factory=lambda: {c: np.empty(0) for c in _FLOAT_COLUMNS})
    ints: dict = field(default_factory=lambda: {c: np.empty(0, dtype=np.int64) for c in _INT_COLUMNS})
    # Lookups (house_id, meter) -> row, rebuilt lazily after appends: a house's code is its
    # position in `_houses`, a meter's key is code << 16 | meter (meters are 0..65535).
    _houses: dict = field(default_factory=dict, repr=False, compare=False)
    _keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False, compare=False)
    _lookups: tuple | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.meter)

    def _lookup(self) -> tuple[pd.Index, pd.Index]:
        if self._lookups is None:
            self._lookups = (pd.Index(list(self._houses), dtype=object), pd.Index(self._keys))
        return self._lookups

    def _codes(self, house_ids: np.ndarray) -> np.ndarray:
        codes = self._lookup()[0].get_indexer(house_ids)
        if (codes < 0).any():
            for house_id in pd.unique(house_ids[codes < 0]):
                self._houses[house_id] = len(self._houses)
            self._lookups = None
            codes = self._lookup()[0].get_indexer(house_ids)
        return codes.astype(np.int64)

    def rows(self, house_ids, meters, appliances=None) -> np.ndarray:
        """The rows of these meters; meters seen for the first time get one when their
        `appliances` are given (else they are a KeyError)."""
        house_ids = np.asarray(house_ids, dtype=object)
        meters = np.asarray(meters, dtype=np.int64)
        if not len(meters):
            return np.empty(0, dtype=np.int64)
        keys = (self._codes(house_ids) << 16) | meters
        rows = self._lookup()[1].get_indexer(keys)
        missing = rows < 0
        if missing.any():
            if appliances is None:
                raise KeyError(f"{missing.sum()} meters without state, first {house_ids[missing][0]!r}")
            _, first = np.unique(keys[missing], return_index=True)
            picked = np.flatnonzero(missing)[np.sort(first)]
            self.append(house_ids[picked], meters[picked], np.asarray(appliances, dtype=object)[picked])
            rows = self._lookup()[1].get_indexer(keys)
        return rows.astype(np.int64)

    def append(self, house_ids, meters, appliances) -> None:
        """Add meters seen for the first time, with empty state."""
        house_ids = np.asarray(house_ids, dtype=object)
        meters = np.asarray(meters, dtype=np.int64)
        n = len(meters)
        keys = (self._codes(house_ids) << 16) | meters
        self.house_id = np.concatenate([self.house_id, house_ids])
        self.meter = np.concatenate([self.meter, meters])
        self.appliance = np.concatenate([self.appliance, np.asarray(appliances, dtype=object)])
        self._keys = np.concatenate([self._keys, keys])
        self._lookups = None
        for c in _FLOAT_COLUMNS:
            self.floats[c] = np.concatenate([self.floats[c], np.full(n, np.nan)])
        for c in _INT_COLUMNS:
            self.ints[c] = np.concatenate([self.ints[c], np.zeros(n, dtype=np.int64)])

    def to_table(self, rows: np.ndarray | None = None, named_from: int = 0) -> pa.Table:
        """The state of `rows` (default: all, in order) as an Arrow table, with each row's number.

        House and appliance names are written for rows from `named_from` on (rows added since
        the last write) and left null before it: a known row is found by its number.
        """
        rows = np.arange(len(self.meter)) if rows is None else np.asarray(rows, dtype=np.int64)
        unnamed = int(np.searchsorted(rows, named_from)) if named_from else 0
        named = rows[unnamed:]

        def names(values: np.ndarray) -> pa.Array:
            return pa.concat_arrays([pa.nulls(unnamed, pa.string()), pa.array(values[named].tolist(), pa.string())])

        columns = {"row": pa.array(rows, pa.int64()), "house_id": names(self.house_id),
                   "meter": pa.array(self.meter[rows], pa.int64()), "appliance": names(self.appliance)}
        columns.update({c: pa.array(v[rows], pa.float64()) for c, v in self.floats.items()})
        columns.update({c: pa.array(v[rows], pa.int64()) for c, v in self.ints.items()})
        return pa.Table.from_pydict(columns)

    def update(self, table: pa.Table) -> None:
        """Apply rows of `to_table` (a later state of known rows, or new rows in order)."""
        rows = table["row"].to_numpy()
        new = rows >= len(self.meter)
        if new.any():
            order = np.argsort(rows[new], kind="stable")
            if not np.array_equal(rows[new][order], np.arange(len(self.meter), len(self.meter) + new.sum())):
                raise ValueError("state rows out of sequence: the state log is damaged")
            picked = np.flatnonzero(new)[order]
            self.append(np.asarray(table["house_id"].to_pylist(), dtype=object)[picked],
                        table["meter"].to_numpy()[picked],
                        np.asarray(table["appliance"].to_pylist(), dtype=object)[picked])
        # A state written before a column existed leaves that column empty (NaN, 0).
        for c in _FLOAT_COLUMNS:
            if c in table.column_names:
                self.floats[c][rows] = table[c].to_numpy()
        for c in _INT_COLUMNS:
            if c in table.column_names:
                self.ints[c][rows] = table[c].to_numpy()

    def to_bytes(self) -> bytes:
        """Arrow IPC bytes of the whole state."""
        sink = io.BytesIO()
        table = self.to_table()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "MeterStates":
        states = cls()
        states.update(pa.ipc.open_stream(blob).read_all())
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


@dataclass
class Summary:
    """One row per meter of a micro-batch: what the readings tell without shipping them.

    The alert job computes it in the JVM (`streaming.alerts.summaries`); `summarise()`
    computes the same from readings in memory.
    """

    house_id: np.ndarray
    meter: np.ndarray
    appliance: np.ndarray
    readings: np.ndarray
    min_ts_s: np.ndarray
    max_ts_s: np.ndarray
    max_w: np.ndarray

    def __len__(self) -> int:
        return len(self.meter)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Summary":
        """From a frame with these columns; rows of one meter (several messages) are merged."""
        house_id = frame["house_id"].to_numpy(dtype=object)
        meter = frame["meter"].to_numpy(dtype=np.int64)
        columns = [frame[c].to_numpy(dtype=t) for c, t in (("readings", np.int64), ("min_ts_s", np.float64),
                                                          ("max_ts_s", np.float64), ("max_w", np.float64))]
        codes, _ = pd.factorize(house_id)
        keys, first, inverse = np.unique((codes.astype(np.int64) << 16) | meter, return_index=True,
                                         return_inverse=True)
        appliance = frame["appliance"].to_numpy(dtype=object)[first]
        if len(keys) == len(meter):
            order = first
            readings, min_ts_s, max_ts_s, max_w = (c[order] for c in columns)
        else:
            readings = np.zeros(len(keys), dtype=np.int64)
            np.add.at(readings, inverse, columns[0])
            min_ts_s, max_ts_s, max_w = np.full(len(keys), np.inf), np.full(len(keys), -np.inf), np.full(len(keys), -np.inf)
            np.minimum.at(min_ts_s, inverse, columns[1])
            np.maximum.at(max_ts_s, inverse, columns[2])
            np.fmax.at(max_w, inverse, columns[3])
        return cls(house_id[first], meter[first], appliance, readings, min_ts_s, max_ts_s, max_w)


def summarise(batch: pd.DataFrame) -> Summary:
    """The Summary of a frame of readings (house_id, meter, appliance, ts_s, power_w)."""
    return Summary.from_frame(pd.DataFrame({
        "house_id": batch["house_id"], "meter": batch["meter"], "appliance": batch["appliance"], "readings": 1,
        "min_ts_s": batch["ts_s"], "max_ts_s": batch["ts_s"], "max_w": batch["power_w"]}))


def raise_levels(threshold_w: np.ndarray, normal_peak_w: np.ndarray, appliance: np.ndarray, rules: Rules
                 ) -> np.ndarray:
    """The power above which a reading counts towards an overshoot, per meter (NaN: never).

    Twice (`multiplier`) the meter's usual power in use, or above its normal peak by
    `peak_margin` where that is higher (a fridge that defrosts daily, a dryer's heating
    phase). NaN where there is no threshold; a NaN peak (none established) leaves
    threshold_w x multiplier. Mains meters get NaN unless `overshoot_on_mains`.
    """
    threshold_w = np.asarray(threshold_w, dtype=np.float64)
    raise_w = np.where(np.isnan(threshold_w), np.nan,
                       np.fmax(threshold_w * rules.multiplier,
                               np.asarray(normal_peak_w, dtype=np.float64) * rules.peak_margin))
    if not rules.overshoot_on_mains:
        # Mains carry every circuit's episodes (and new_peak covers the house as a whole).
        raise_w = np.where(np.asarray(appliance, dtype=object) == MAINS, np.nan, raise_w)
    return raise_w


def run_levels(threshold_w: np.ndarray, min_run_s: np.ndarray, raise_w: np.ndarray, rules: Rules) -> np.ndarray:
    """Per meter, the power above which its runs are timed (threshold_w x multiplier), NaN where
    they are not (`short_runs`)."""
    short_s = short_runs(threshold_w, min_run_s, raise_w, rules)
    return np.where(np.isnan(short_s), np.nan, np.asarray(threshold_w, dtype=np.float64) * rules.multiplier)


def short_runs(threshold_w: np.ndarray, min_run_s: np.ndarray, raise_w: np.ndarray, rules: Rules) -> np.ndarray:
    """Per meter, the duration below which a whole run above threshold_w x multiplier is an
    overshoot (`short_run_ratio` x min_run_s); NaN where runs are not timed: no usual run
    length known, the rule off, or the meter not judged (no raise level)."""
    short_s = np.asarray(min_run_s, dtype=np.float64) * rules.short_run_ratio
    return np.where(np.isnan(raise_w) | np.isnan(np.asarray(threshold_w, dtype=np.float64)) | (short_s <= 0),
                    np.nan, short_s)


def plan(states: MeterStates, rows: np.ndarray, summary: Summary, raise_w: np.ndarray, rules: Rules,
         run_w: np.ndarray | None = None) -> np.ndarray:
    """Which meters of the batch need their readings, one by one: True where a meter's readings
    can change more than its counters.

    That is a meter with a reading above its raise level or, where its runs are timed, above
    `run_w` (threshold_w x multiplier; NaN: not timed), a run or an episode in progress,
    a no_data alert open (its next reading closes it), a possible new peak, or readings both
    older and newer than its last one (only those after it count). Every other meter only
    moves its counters (`apply_summary`): an idle meter ignores readings below the raise level.
    """
    f, g = states.floats, states.ints
    last_ts_s = np.nan_to_num(f["last_ts_s"][rows], nan=-np.inf)
    any_fresh = summary.max_ts_s > last_ts_s
    all_fresh = summary.min_ts_s > last_ts_s
    peak_watch = ((states.appliance[rows] == MAINS)
                  & (summary.max_ts_s - np.nan_to_num(f["first_ts_s"][rows], nan=np.inf) >= rules.new_peak_warmup_s)
                  & (summary.max_w > np.nan_to_num(f["record_w"][rows], nan=np.inf) * rules.new_peak_margin))
    busy = ((summary.max_w > raise_w) | (g["phase"][rows] != IDLE) | ~np.isnan(f["no_data_start_ts_s"][rows])
            | ~np.isnan(f["run_start_ts_s"][rows]) | peak_watch | ~all_fresh)
    if run_w is not None:
        busy |= summary.max_w > run_w
    return any_fresh & busy


def apply_summary(states: MeterStates, rows: np.ndarray, summary: Summary, needs_readings: np.ndarray,
                  outcome: Outcome) -> None:
    """Counters of the meters that do not need their readings: first and last reading, record, count.
    A meter whose readings are all at or before its last one counts them as out of order."""
    f, g = states.floats, states.ints
    last_ts_s = np.nan_to_num(f["last_ts_s"][rows], nan=-np.inf)
    stale = summary.max_ts_s <= last_ts_s
    outcome.out_of_order += int(summary.readings[stale].sum())
    fast = ~needs_readings & ~stale
    fr = rows[fast]
    f["first_ts_s"][fr] = np.where(np.isnan(f["first_ts_s"][fr]), summary.min_ts_s[fast], f["first_ts_s"][fr])
    f["last_ts_s"][fr] = summary.max_ts_s[fast]
    f["record_w"][fr] = np.fmax(f["record_w"][fr], summary.max_w[fast])
    g["readings"][fr] += summary.readings[fast]


def apply_readings(states: MeterStates, batch: pd.DataFrame, rules: Rules, emit: "_Emitter", outcome: Outcome
                   ) -> None:
    """Readings of the meters that need them, one by one through the state machine.

    `batch` holds every reading of those meters in the micro-batch (house_id, meter,
    ts_s, power_w, threshold_w, normal_peak_w, min_run_s); readings at or before a meter's
    last one carry no news.
    """
    if not len(batch):
        return
    batch = batch.sort_values(["house_id", "meter", "ts_s"], kind="stable")
    house = batch["house_id"].to_numpy(dtype=object)
    meter = batch["meter"].to_numpy(dtype=np.int64)
    ts_s = batch["ts_s"].to_numpy(dtype=np.float64)
    power_w = batch["power_w"].to_numpy(dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, (house[1:] != house[:-1]) | (meter[1:] != meter[:-1])])
    ends = np.r_[starts[1:], len(ts_s)]
    rows = states.rows(house[starts], meter[starts])
    threshold_w = batch["threshold_w"].to_numpy(dtype=np.float64)
    raise_w = raise_levels(threshold_w, batch["normal_peak_w"].to_numpy(dtype=np.float64),
                           np.repeat(states.appliance[rows], ends - starts), rules)
    short_s = short_runs(threshold_w, batch["min_run_s"].to_numpy(dtype=np.float64), raise_w, rules)
    # Without a raise level (no threshold, or mains not judged) nothing opens or clears.
    threshold_w = np.where(np.isnan(raise_w), np.nan, threshold_w)
    last_ts_s = np.repeat(np.nan_to_num(states.floats["last_ts_s"][rows], nan=-np.inf), ends - starts)
    fresh = ts_s > last_ts_s
    outcome.out_of_order += int(len(ts_s) - fresh.sum())
    for k, i in enumerate(rows):
        for j in range(starts[k], ends[k]):
            if fresh[j]:
                _step(states, i, ts_s[j], power_w[j], threshold_w[j], raise_w[j], short_s[j], rules, emit)


def detect(states: MeterStates, batch: pd.DataFrame, watermark_s: float, rules: Rules) -> Outcome:
    """Advance `states` in place with a batch of readings; returns the alert rows to write.

    `batch` has columns house_id, meter, appliance, ts_s, power_w, threshold_w (NaN
    when the meter has no threshold), normal_peak_w and min_run_s (NaN when none is known).
    `watermark_s` is the event-time watermark the batch started with (0 before any). This is the rules over every reading in memory:
    the alert job runs the same steps, `plan`, `apply_summary` and `apply_readings`, on a
    summary computed in the JVM and on the readings of the meters that need them only.
    """
    outcome = Outcome()
    emit = _Emitter(rules, outcome)
    if len(batch):
        summary = summarise(batch)
        rows = states.rows(summary.house_id, summary.meter, summary.appliance)
        limits = (batch.groupby(["house_id", "meter"], sort=False)[["threshold_w", "normal_peak_w", "min_run_s"]]
                  .max().reindex(pd.MultiIndex.from_arrays([summary.house_id, summary.meter])))
        threshold_w = limits["threshold_w"].to_numpy(dtype=np.float64)
        raise_w = raise_levels(threshold_w, limits["normal_peak_w"].to_numpy(dtype=np.float64),
                               states.appliance[rows], rules)
        needs = plan(states, rows, summary, raise_w, rules,
                     run_levels(threshold_w, limits["min_run_s"].to_numpy(dtype=np.float64), raise_w, rules))
        apply_summary(states, rows, summary, needs, outcome)
        wanted = set(zip(summary.house_id[needs], summary.meter[needs].tolist()))
        keep = [(h, m) in wanted for h, m in zip(batch["house_id"], batch["meter"].tolist())]
        apply_readings(states, batch[np.asarray(keep, dtype=bool)], rules, emit, outcome)
    if watermark_s > 0:
        apply_silence(states, watermark_s, rules, emit)
    outcome.next_deadline_s = next_no_data_deadline(states, rules)
    return outcome


def next_no_data_deadline(states: MeterStates, rules: Rules) -> float:
    """The earliest watermark at which a meter of `states` would open a no_data alert (inf: none)."""
    eligible = (np.isnan(states.floats["no_data_start_ts_s"])
                & (states.ints["readings"] >= rules.no_data_min_readings))
    if not eligible.any():
        return math.inf
    return float(np.min(states.floats["last_ts_s"][eligible])) + rules.no_data_after_s


def _open(s: MeterStates, i: int, start_ts_s: float, n: int, sum_w: float, peak_w: float, threshold_w: float,
          rules: Rules, emit: _Emitter) -> None:
    """Open an overshoot episode of readings from `start_ts_s` on (n of them, their sum and peak).
    Within the cooldown of the previous episode's end, that episode goes on (same id)."""
    f, g = s.floats, s.ints
    closed_ts_s = f["closed_ts_s"][i]
    if not math.isnan(closed_ts_s) and start_ts_s - closed_ts_s <= rules.cooldown_s:
        g["ep_n"][i] += n
        f["ep_sum_w"][i] += sum_w
        f["ep_peak_w"][i] = max(f["ep_peak_w"][i], peak_w)
    else:
        f["ep_start_ts_s"][i] = start_ts_s
        g["ep_n"][i] = n
        f["ep_sum_w"][i] = sum_w
        f["ep_peak_w"][i] = peak_w
        f["ep_threshold_w"][i] = threshold_w
    g["phase"][i] = OPEN
    g["below_n"][i] = 0
    emit.overshoot(s, i, None)


def _time_run(s: MeterStates, i: int, ts_s: float, power_w: float, previous_ts_s: float, threshold_w: float,
              short_s: float, rules: Rules, emit: _Emitter) -> None:
    """Follow the meter's run above threshold_w x multiplier; when a whole run ends shorter than
    `short_s` (NaN: runs not timed) with no episode open, open one from the run's start."""
    f, g = s.floats, s.ints
    joined = ts_s - previous_ts_s <= rules.run_gap_s  # False after a gap, and for the first reading (NaN)
    if power_w > threshold_w * rules.multiplier:
        if math.isnan(f["run_start_ts_s"][i]):
            f["run_start_ts_s"][i] = ts_s
            g["run_n"][i] = 0
            f["run_sum_w"][i] = 0.0
            f["run_peak_w"][i] = power_w
            g["run_whole"][i] = int(joined)  # the reading before was below the level, and close
        elif not joined:
            g["run_whole"][i] = 0  # a hole inside the run: its length is unknown
        g["run_n"][i] += 1
        f["run_sum_w"][i] += power_w
        f["run_peak_w"][i] = max(f["run_peak_w"][i], power_w)
        return
    start_ts_s = f["run_start_ts_s"][i]
    if math.isnan(start_ts_s):
        return
    f["run_start_ts_s"][i] = math.nan
    if (g["run_whole"][i] and joined and g["run_n"][i] >= rules.min_readings and g["phase"][i] != OPEN
            and previous_ts_s - start_ts_s < short_s):
        _open(s, i, start_ts_s, int(g["run_n"][i]), f["run_sum_w"][i], f["run_peak_w"][i], threshold_w, rules, emit)


def _step(s: MeterStates, i: int, ts_s: float, power_w: float, threshold_w: float, raise_w: float, short_s: float,
          rules: Rules, emit: _Emitter):
    """One reading of one meter through the state machine."""
    f, g = s.floats, s.ints
    if not math.isnan(f["no_data_start_ts_s"][i]):
        emit.no_data(s, i, ts_s)  # the meter speaks again: the outage ends here
        f["no_data_start_ts_s"][i] = math.nan
    if math.isnan(f["first_ts_s"][i]):
        f["first_ts_s"][i] = ts_s
    previous_ts_s = f["last_ts_s"][i]
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
        f["run_start_ts_s"][i] = math.nan
        return
    if math.isnan(short_s):
        f["run_start_ts_s"][i] = math.nan
    else:
        _time_run(s, i, ts_s, power_w, previous_ts_s, threshold_w, short_s, rules, emit)
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
            _open(s, i, f["cand_start_ts_s"][i], int(g["cand_n"][i]), f["cand_sum_w"][i], f["cand_peak_w"][i],
                  threshold_w, rules, emit)
    elif phase == CANDIDATE:
        g["phase"][i] = IDLE  # the run above the raise level broke before it counted


def apply_silence(s: MeterStates, watermark_s: float, rules: Rules, emit: "_Emitter") -> np.ndarray:
    """Close episodes of meters gone quiet and open no_data alerts, against the watermark;
    returns the rows it changed."""
    f, g = s.floats, s.ints
    last_ts_s = f["last_ts_s"]
    stale = np.nan_to_num(last_ts_s, nan=np.inf) < watermark_s - rules.stale_close_s
    closing = np.flatnonzero(stale & (g["phase"] == OPEN))
    for i in closing:
        # Nothing was heard since the last reading above the clear level: the episode ends there.
        g["phase"][i] = IDLE
        f["closed_ts_s"][i] = last_ts_s[i]
        emit.overshoot(s, i, last_ts_s[i])
    dropped = np.flatnonzero(stale & (g["phase"] == CANDIDATE))
    g["phase"][dropped] = IDLE
    # A run the meter went silent in has no end to time.
    unfinished = np.flatnonzero(stale & ~np.isnan(f["run_start_ts_s"]))
    f["run_start_ts_s"][unfinished] = np.nan
    silent = np.flatnonzero((np.nan_to_num(last_ts_s, nan=np.inf) < watermark_s - rules.no_data_after_s)
                            & np.isnan(f["no_data_start_ts_s"]) & (g["readings"] >= rules.no_data_min_readings))
    for i in silent:
        f["no_data_start_ts_s"][i] = last_ts_s[i]
        emit.no_data(s, i, None)
    return np.concatenate([closing, dropped, unfinished, silent])

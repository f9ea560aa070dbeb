"""Reader for the low-frequency part of REDD: `low_freq/house_N/labels.dat` + `channel_M.dat`.

Tolerances (all counted in `ReadStats` and logged, never fatal):

- blank lines, CRLF or lone-CR line endings, tabs and repeated spaces between fields;
- numbers in exponent notation (`1.02964e2`);
- malformed lines (wrong number of fields, non-numeric or non-finite values): skipped;
- lines out of time order: sorted;
- duplicate timestamps within a channel: the LAST line in file order wins, on the view
  that a later line is a correction of an earlier one (REDD's logger re-sent samples);
- channel files missing from `labels.dat` (label `unknown`) and labelled channels
  without a file.

A missing or unreadable `labels.dat` raises `ReddFormatError` naming the path: without
it no reading can be attributed to an appliance.
"""
from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from smw.schema import READING_ARROW

log = logging.getLogger(__name__)

# The raw REDD label set, typos included (docs/datasets.md).
REDD_LABELS = (
    "mains", "air_conditioning", "bathroom_gfi", "dishwaser", "disposal", "electric_heat",
    "electronics", "furance", "kitchen_outlets", "lighting", "microwave", "miscellaeneous",
    "outdoor_outlets", "outlets_unknown", "oven", "refrigerator", "smoke_alarms", "stove",
    "subpanel", "washer_dryer",
)
_LABEL_FIXES = {"dishwaser": "dishwasher", "furance": "furnace", "miscellaeneous": "miscellaneous"}
UNKNOWN_LABEL = "unknown"

_CHANNEL_FILE = re.compile(r"^channel_(\d+)\.dat$")
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
# Cheap test for whitespace that needs normalising before the CSV parser sees the bytes.
_ODD_SPACE = re.compile(rb"\t|  | \n|\n |^ | $")


class ReddFormatError(Exception):
    """A REDD house directory cannot be read (e.g. no usable labels.dat)."""


def normalise_label(label: str) -> str:
    """Normalised appliance name for a raw REDD label (typos fixed, lower case)."""
    clean = label.strip().lower()
    return _LABEL_FIXES.get(clean, clean)


@dataclass
class ReadStats:
    """What the reader met and tolerated; `merge` adds another file's or house's counts."""

    files: int = 0
    lines: int = 0
    readings: int = 0
    blank_lines: int = 0
    malformed_lines: int = 0
    duplicate_timestamps: int = 0
    out_of_order_lines: int = 0
    unreadable_files: int = 0
    unlabelled_channels: int = 0
    missing_channels: int = 0

    def merge(self, other: "ReadStats") -> "ReadStats":
        """Add `other`'s counts to this one (in place) and return self."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def summary(self) -> str:
        """One line with every non-zero count."""
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name))


@dataclass
class Channel:
    """One meter of a house: time-sorted, duplicate-free samples."""

    meter: int
    label: str
    appliance: str
    ts_s: np.ndarray
    power_w: np.ndarray


@dataclass
class House:
    """One REDD house: channels keyed by channel number (labels repeat inside a house)."""

    house_id: str
    path: Path
    channels: dict[int, Channel] = field(default_factory=dict)
    stats: ReadStats = field(default_factory=ReadStats)

    @property
    def n_readings(self) -> int:
        return sum(len(c.ts_s) for c in self.channels.values())


def read_labels(house_dir: str | Path) -> dict[int, str]:
    """Channel number -> raw label from `labels.dat`; ReddFormatError if it cannot be read."""
    path = Path(house_dir) / "labels.dat"
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise ReddFormatError(f"cannot read REDD labels file {path}: {exc.strerror or exc}") from exc
    labels: dict[int, str] = {}
    bad = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            bad += 1
            continue
        labels[int(parts[0])] = parts[1]
    if bad:
        log.warning("%s: %d malformed label lines skipped", path, bad)
    if not labels:
        raise ReddFormatError(f"REDD labels file {path} names no channel")
    return labels


def _normalise_whitespace(raw: bytes) -> bytes:
    """Bytes with LF line endings and single spaces between fields."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if _ODD_SPACE.search(raw):
        raw = re.sub(rb"[ \t]+", b" ", raw)
        raw = re.sub(rb" ?\n ?", b"\n", raw)
        raw = raw.strip(b" ")
    return raw


def parse_channel_bytes(raw: bytes, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray, ReadStats]:
    """Parse `<unix seconds> <watts>` lines into time-sorted, duplicate-free arrays."""
    stats = ReadStats(files=1)
    raw = _normalise_whitespace(raw)
    n_lines = raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0)
    invalid_rows: list[str] = []

    def on_invalid(row) -> str:
        # Called only for rows with the wrong number of fields, so rare: Python is fine here.
        if len(invalid_rows) < 3:
            invalid_rows.append(row.text)
        stats.malformed_lines += 1
        return "skip"

    def read(column_type: pa.DataType) -> pa.Table:
        stats.malformed_lines = 0
        invalid_rows.clear()
        return pa_csv.read_csv(
            io.BytesIO(raw),
            read_options=pa_csv.ReadOptions(column_names=["ts_s", "power_w"], use_threads=False),
            parse_options=pa_csv.ParseOptions(delimiter=" ", quote_char=False, invalid_row_handler=on_invalid),
            convert_options=pa_csv.ConvertOptions(column_types={"ts_s": column_type, "power_w": column_type}),
        )

    if not raw.strip():
        table = pa.table({"ts_s": pa.array([], pa.float64()), "power_w": pa.array([], pa.float64())})
    else:
        try:
            table = read(pa.float64())  # fast path: every line numeric
        except pa.ArrowInvalid:
            # Some field is not a number: read as text, keep lines whose fields both look numeric.
            text = read(pa.string())
            ok = pc.and_(
                pc.match_substring_regex(text["ts_s"], _NUMBER),
                pc.match_substring_regex(text["power_w"], _NUMBER),
            )
            bad_text = text.filter(pc.invert(ok))
            for i in range(min(3 - len(invalid_rows), bad_text.num_rows)):
                invalid_rows.append(f"{bad_text['ts_s'][i]} {bad_text['power_w'][i]}")
            stats.malformed_lines += bad_text.num_rows
            text = text.filter(ok)
            table = pa.table({name: pc.cast(text[name], pa.float64()) for name in ("ts_s", "power_w")})
    ts_s = table["ts_s"].to_numpy()
    power_w = table["power_w"].to_numpy()
    finite = np.isfinite(ts_s) & np.isfinite(power_w)
    if not finite.all():
        stats.malformed_lines += int((~finite).sum())
        ts_s, power_w = ts_s[finite], power_w[finite]
    stats.lines = len(ts_s) + stats.malformed_lines
    stats.blank_lines = max(n_lines - stats.lines, 0)
    stats.out_of_order_lines = int(np.count_nonzero(np.diff(ts_s) < 0))
    # Stable sort keeps file order among equal timestamps, so "last of each run" = last line.
    order = np.argsort(ts_s, kind="stable")
    ts_s, power_w = ts_s[order], power_w[order]
    keep = np.ones(len(ts_s), dtype=bool)
    keep[:-1] = ts_s[1:] != ts_s[:-1]
    stats.duplicate_timestamps = int(len(ts_s) - np.count_nonzero(keep))
    ts_s, power_w = ts_s[keep], power_w[keep]
    stats.readings = len(ts_s)
    if stats.malformed_lines:
        log.warning("%s: %d malformed lines skipped, e.g. %r", source, stats.malformed_lines, invalid_rows[:3])
    if stats.duplicate_timestamps:
        log.info("%s: %d duplicate timestamps, last line kept", source, stats.duplicate_timestamps)
    return ts_s, power_w, stats


def read_channel(path: str | Path) -> tuple[np.ndarray, np.ndarray, ReadStats]:
    """Read one `channel_M.dat`: (ts_s, power_w, stats), sorted by time, last duplicate kept."""
    path = Path(path)
    return parse_channel_bytes(path.read_bytes(), str(path))


def read_house(house_dir: str | Path, house_id: str | None = None) -> House:
    """Read every channel of one REDD house directory."""
    house_dir = Path(house_dir)
    labels = read_labels(house_dir)
    house = House(house_id=house_id or house_dir.name, path=house_dir)
    files = {}
    for entry in house_dir.iterdir():
        match = _CHANNEL_FILE.match(entry.name)
        if match:
            files[int(match.group(1))] = entry
    for meter in sorted(set(labels) - set(files)):
        log.warning("%s: channel %d (%s) is labelled but has no file", house_dir, meter, labels[meter])
        house.stats.missing_channels += 1
    for meter in sorted(files):
        if meter not in labels:
            log.warning("%s: %s has no line in labels.dat; label %r used", house_dir, files[meter].name, UNKNOWN_LABEL)
            house.stats.unlabelled_channels += 1
        label = labels.get(meter, UNKNOWN_LABEL)
        try:
            ts_s, power_w, stats = read_channel(files[meter])
        except OSError as exc:
            log.error("%s: cannot read (%s); channel skipped", files[meter], exc)
            house.stats.unreadable_files += 1
            continue
        house.stats.merge(stats)
        house.channels[meter] = Channel(meter, label, normalise_label(label), ts_s, power_w)
    if house.stats.malformed_lines or house.stats.duplicate_timestamps:
        log.info("%s: %s", house_dir, house.stats.summary())
    return house


def house_table(house: House) -> pa.Table:
    """All readings of a house in the reading schema, sorted by (ts_s, meter)."""
    meters = sorted(house.channels)
    channels = [house.channels[m] for m in meters]
    ts_s = np.concatenate([c.ts_s for c in channels] + [np.empty(0)])
    power_w = np.concatenate([c.power_w for c in channels] + [np.empty(0)])
    index = np.repeat(np.arange(len(channels), dtype=np.int32), [len(c.ts_s) for c in channels])
    # lexsort: last key is primary; channel index breaks ties so the order is total.
    order = np.lexsort((index, ts_s))
    index = index[order]
    labels = pa.array([c.label for c in channels], pa.string())
    appliances = pa.array([c.appliance for c in channels], pa.string())
    return pa.table(
        [
            pa.DictionaryArray.from_arrays(np.zeros(len(index), np.int32), pa.array([house.house_id])).cast(pa.string()),
            pa.array(np.asarray(meters, np.int32)[index], pa.int32()),
            labels.take(index),
            appliances.take(index),
            pa.array(ts_s[order], pa.float64()),
            pa.array(power_w[order], pa.float64()),
        ],
        schema=READING_ARROW,
    )


def house_dirs(root: str | Path) -> list[Path]:
    """`house_N` directories under a REDD root (`.../low_freq` or its parent), by house number."""
    root = Path(root)
    if (root / "low_freq").is_dir():
        root = root / "low_freq"
    dirs = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"house_\d+", p.name)]
    if not dirs:
        raise ReddFormatError(f"no house_N directories under {root}")
    return sorted(dirs, key=lambda p: int(p.name.split("_")[1]))


def iter_readings(root: str | Path, batch_rows: int = 1_000_000, stats: ReadStats | None = None) -> Iterator[pa.RecordBatch]:
    """Reading batches of every house under a REDD root; each house's readings in time order."""
    for house_dir in house_dirs(root):
        house = read_house(house_dir)
        if stats is not None:
            stats.merge(house.stats)
        yield from house_table(house).to_batches(max_chunksize=batch_rows)


_WRITE_OPTIONS = pa_csv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")


def write_labels(house_dir: str | Path, labels: dict[int, str]) -> None:
    """Write `labels.dat` (`<channel> <label>` per line, by channel number)."""
    house_dir = Path(house_dir)
    house_dir.mkdir(parents=True, exist_ok=True)
    (house_dir / "labels.dat").write_text("".join(f"{m} {labels[m]}\n" for m in sorted(labels)), encoding="ascii")


def write_channel(path: str | Path, ts_s: np.ndarray, power_w: np.ndarray, append: bool = False) -> int:
    """Write (or append) `<unix seconds> <watts>` lines in REDD's format; returns bytes written."""
    buffer = io.BytesIO()
    pa_csv.write_csv(pa.table({"ts_s": pa.array(ts_s, pa.float64()), "power_w": pa.array(power_w, pa.float64())}),
                     buffer, _WRITE_OPTIONS)
    payload = buffer.getvalue()
    with open(path, "ab" if append else "wb") as out:
        out.write(payload)
    return len(payload)

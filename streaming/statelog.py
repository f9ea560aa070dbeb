"""The alert job's meter state on disk, beside the query's checkpoint: exactly the state
after the last batch Spark committed.

Spark's checkpoint says which Kafka offsets each micro-batch covered and which batches
were committed; a batch that did not commit is run again, with the same offsets, on the
next start. The meter state (`episodes.MeterStates`, kept in the driver) must then be
the state after the batch before it. So every batch writes the rows it changed as a
delta file named by its batch id, and every `snapshot_every` batches the whole state
is written once and the files before the previous snapshot are removed; loading for batch B reads the newest
snapshot before B and the deltas after it, and deletes what belongs to B or later
(written by an attempt that never committed). Files are written under a temporary
name and renamed, so a crash never leaves a torn file under a final name.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from streaming.episodes import MeterStates

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(snapshot|delta)-(\d{12})\.arrow$")
_META = b"smw.meta"


class StateLog:
    """Snapshots and per-batch deltas of the meter state in one folder."""

    def __init__(self, folder: Path, snapshot_every: int = 500):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.snapshot_every = snapshot_every
        self._last_snapshot = -1
        self._named = 0  # rows whose names are already on disk

    def _files(self) -> list[tuple[int, str, Path]]:
        found = []
        for path in self.folder.iterdir():
            match = _FILE.match(path.name)
            if match:
                found.append((int(match.group(2)), match.group(1), path))
            elif path.name.endswith(".partial"):
                path.unlink(missing_ok=True)  # an interrupted write
        return sorted(found)

    def load(self, batch_id: int) -> tuple[MeterStates, dict]:
        """The state (and its metadata) after batch `batch_id - 1`."""
        files = self._files()
        for number, _, path in files:
            if number >= batch_id:
                path.unlink()  # written by an attempt of a batch Spark never committed
        files = [f for f in files if f[0] < batch_id]
        snapshots = [f for f in files if f[1] == "snapshot"]
        first = snapshots[-1][0] if snapshots else -1
        states, meta = MeterStates(), {}
        for number, kind, path in files:
            if number < first or (kind == "delta" and number == first):
                continue
            table = _read(path)
            states.update(table)
            meta = json.loads((table.schema.metadata or {}).get(_META, b"{}"))
        self._last_snapshot = first
        self._named = len(states)
        if files:
            log.info("meter state of %d meters loaded (snapshot %d, deltas up to batch %d)", len(states), first,
                     batch_id - 1)
        return states, meta

    def save(self, batch_id: int, states: MeterStates, changed_rows: np.ndarray, meta: dict) -> None:
        """Record the state after `batch_id`: its changed rows, or all of it every `snapshot_every` batches."""
        if batch_id - self._last_snapshot >= self.snapshot_every:
            _write(self.folder / f"snapshot-{batch_id:012d}.arrow", states.to_table(), meta)
            # The previous snapshot and the deltas after it stay until the next snapshot: should
            # this batch not commit, it is run again from them.
            previous, self._last_snapshot = self._last_snapshot, batch_id
            for number, _, path in self._files():
                if number < previous:
                    path.unlink()
        else:
            rows = np.unique(np.asarray(changed_rows, dtype=np.int64))
            _write(self.folder / f"delta-{batch_id:012d}.arrow", states.to_table(rows, self._named), meta)
        self._named = len(states)


def _write(path: Path, table: pa.Table, meta: dict) -> None:
    table = table.replace_schema_metadata({_META: json.dumps(meta).encode()})
    partial = path.with_name(path.name + ".partial")
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(partial, path)


def _read(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()

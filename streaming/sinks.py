"""Alert sinks: Cassandra history (alerts_by_house) and the RethinkDB live table, both by upsert.

RethinkDB is the live feed; an outage of it must not lose alerts nor stop the job.
Alerts bound for it are first appended to a spool file (under the job's checkpoint
folder, so it survives a restart) and the spool is then flushed with
`insert(..., conflict="update")`; a failed flush keeps the spool and is retried on
the next batch and by a background timer. Every document is complete, so the spool
keeps only the newest document per id and replaying it is harmless. The spool is only
ever replaced whole (written beside it, then renamed), so a crash cannot tear it; a line
that does not parse all the same (a disk or a hand that damaged it) is skipped, counted
and moved to `<spool>.damaged`, and the rest is delivered.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from smw import alert, config, cql, rethink

log = logging.getLogger(__name__)

_INSERT_CQL = (
    f"INSERT INTO {alert.CASSANDRA_TABLE} (house_id, start_ts, alert_id, kind, meter, appliance, state, severity, "
    "threshold_w, multiplier, peak_w, mean_w, end_ts, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _timestamp(ts_s):
    return None if ts_s is None else datetime.fromtimestamp(ts_s, tz=timezone.utc)


class CassandraHistory:
    """Writes alert rows to alerts_by_house with one prepared statement."""

    def __init__(self, settings: config.Settings):
        self.cluster, self.session = cql.connect(settings)
        self.insert = self.session.prepare(_INSERT_CQL)

    def write(self, docs: list[dict]) -> None:
        from cassandra.concurrent import execute_concurrent_with_args

        rows = [(d["house_id"], _timestamp(d["start_ts_s"]), d["id"], d["kind"], d["meter"], d["appliance"],
                 d["state"], d["severity"], d["threshold_w"], d["multiplier"], d["peak_w"], d["mean_w"],
                 _timestamp(d["end_ts_s"]), _timestamp(d["updated_ts_s"])) for d in docs]
        # raise_on_first_error: a failed write fails the batch, which Spark re-runs from its checkpoint.
        execute_concurrent_with_args(self.session, self.insert, rows, concurrency=32, raise_on_first_error=True)

    def close(self) -> None:
        self.cluster.shutdown()


class RethinkFeed:
    """Spooled, retried upserts into the RethinkDB alerts table."""

    def __init__(self, settings: config.Settings, spool_path: Path, retry_interval_s: float = 5.0,
                 timeout_s: float = 3.0):
        self.settings = settings
        self.spool_path = Path(spool_path)
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self._lock = threading.Lock()
        self._conn = None
        self._failing_since = None
        self._stop = threading.Event()
        self._timer = None
        self.damaged_lines = 0

    # -- spool ---------------------------------------------------------------
    def _read_spool(self) -> dict[str, dict]:
        pending: dict[str, dict] = {}
        if not self.spool_path.exists():
            return pending
        damaged = []
        for line in self.spool_path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                pending[doc["id"]] = doc
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError):
                damaged.append(line)
        if damaged:
            with open(self.spool_path.with_name(self.spool_path.name + ".damaged"), "ab") as out:
                out.write(b"\n".join(damaged) + b"\n")
            self.damaged_lines += len(damaged)
            log.error("%d damaged line(s) in the alert spool %s skipped and kept in %s.damaged; %d alerts recovered",
                      len(damaged), self.spool_path, self.spool_path.name, len(pending))
            self._rewrite(list(pending.values()))
        return pending

    def pending(self) -> int:
        """Documents waiting for RethinkDB."""
        with self._lock:
            return len(self._read_spool())

    # -- writes --------------------------------------------------------------
    def write(self, docs: list[dict]) -> bool:
        """Deliver the documents and everything spooled; what cannot be delivered is spooled (on
        disk before this returns, so the batch may commit). True if nothing is left spooled."""
        with self._lock:
            return self._flush_locked(docs)

    def flush(self) -> bool:
        """Try to deliver the spool; True if nothing is left."""
        with self._lock:
            return self._flush_locked([])

    def _flush_locked(self, docs: list[dict]) -> bool:
        from rethinkdb.errors import ReqlError

        spooled = self.spool_path.exists()
        pending = self._read_spool()
        pending.update((doc["id"], doc) for doc in docs)
        if not pending:
            return True
        docs = list(pending.values())
        try:
            if self._conn is None:
                self._conn = rethink.connect(self.settings, timeout_s=self.timeout_s)
            table = rethink.r.table(alert.RETHINKDB_TABLE)
            for start in range(0, len(docs), 1000):
                result = table.insert(docs[start:start + 1000], conflict="update").run(self._conn)
                if result.get("errors"):
                    raise ReqlError(result.get("first_error", "insert reported errors"))
        except (ReqlError, OSError) as exc:
            self._drop_connection()
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.error("RethinkDB unreachable (%s): %d alerts kept in %s and retried",
                          exc, len(docs), self.spool_path)
            else:
                log.debug("RethinkDB still unreachable: %s", exc)
            # Rewrite the spool compacted to one document per id, so it does not grow with retries.
            self._rewrite(docs)
            return False
        if self._failing_since is not None:
            log.warning("RethinkDB reachable again after %.0f s: %d spooled alerts delivered",
                        time.monotonic() - self._failing_since, len(docs))
            self._failing_since = None
        if spooled:
            self.spool_path.unlink(missing_ok=True)
        return True

    def _rewrite(self, docs: list[dict]) -> None:
        """Replace the spool whole: written beside it, synced, renamed over it."""
        staging = self.spool_path.with_suffix(".tmp")
        with open(staging, "w", encoding="utf-8") as spool:
            for doc in docs:
                spool.write(json.dumps(doc, separators=(",", ":")) + "\n")
            spool.flush()
            os.fsync(spool.fileno())
        os.replace(staging, self.spool_path)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                rethink.close(self._conn)
            except OSError:
                pass  # already broken; nothing to close cleanly
            self._conn = None

    # -- background retry -----------------------------------------------------
    def start_retrying(self) -> None:
        """Retry the spool every `retry_interval_s` even when no batch comes."""
        def loop():
            while not self._stop.wait(self.retry_interval_s):
                self.flush()

        self._timer = threading.Thread(target=loop, name="rethinkdb-retry", daemon=True)
        self._timer.start()

    def close(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=self.retry_interval_s + 1)
        with self._lock:
            self._drop_connection()


class AlertSinks:
    """Both sinks behind one `write(alerts)`: Cassandra first (durable), then the live feed."""

    def __init__(self, settings: config.Settings, spool_path: Path, retry_interval_s: float = 5.0):
        self.history = CassandraHistory(settings)
        self.feed = RethinkFeed(settings, spool_path, retry_interval_s)

    def write(self, alerts: list[dict]) -> int:
        """Write the newest row per alert id to both sinks; returns the number of documents."""
        now_s = time.time()
        docs = [alert.document(a, now_s) for a in alert.latest_per_id(alerts)]
        if docs:
            self.history.write(docs)
        self.feed.write(docs)
        return len(docs)

    def close(self) -> None:
        self.feed.close()
        self.history.close()

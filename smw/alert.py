"""The alert document: one per episode, the same in RethinkDB (the live feed), Cassandra
(the durable history), the web app and its API.

| field        | type   | meaning                                                       |
|--------------|--------|---------------------------------------------------------------|
| id           | string | deterministic (`alert_id`): a replay cannot duplicate an alert |
| kind         | string | overshoot, no_data or new_peak                                |
| house_id     | string |                                                               |
| meter        | int    | channel number                                                |
| appliance    | string | normalised appliance name                                     |
| threshold_w  | double | the threshold judged against (null for no_data)               |
| multiplier   | double | the raise multiplier (or the new-peak margin)                 |
| peak_w       | double | highest power of the episode                                  |
| mean_w       | double | mean power of the episode's readings                          |
| start_ts_s   | double | first reading of the episode (UTC epoch seconds)              |
| end_ts_s     | double | where it ended; null while open                               |
| state        | string | open or closed                                                |
| severity     | string | info, warning or critical                                     |
| updated_ts_s | double | when the document was last written                            |
"""
from __future__ import annotations

import hashlib

KIND_OVERSHOOT = "overshoot"
KIND_NO_DATA = "no_data"
KIND_NEW_PEAK = "new_peak"

# (name, Spark SQL type) of the fields an alert is raised with; the sinks add updated_ts_s.
RAISED_FIELDS = (
    ("id", "string"), ("kind", "string"), ("house_id", "string"), ("meter", "bigint"), ("appliance", "string"),
    ("threshold_w", "double"), ("multiplier", "double"), ("peak_w", "double"), ("mean_w", "double"),
    ("start_ts_s", "double"), ("end_ts_s", "double"), ("state", "string"), ("severity", "string"),
)
RAISED_NAMES = tuple(name for name, _ in RAISED_FIELDS)
FIELDS = RAISED_NAMES + ("updated_ts_s",)

RETHINKDB_TABLE = "alerts"  # primary key id; indexes in smw/init.py
CASSANDRA_TABLE = "alerts_by_house"  # infra/cql/001_serving.cql


def alert_id(kind: str, house_id: str, meter: int, start_ts_s: float) -> str:
    """Deterministic alert id: a replay of the same readings yields the same id."""
    return hashlib.sha1(f"{kind}|{house_id}|{meter}|{start_ts_s:.3f}".encode()).hexdigest()


def document(alert: dict, updated_ts_s: float | None = None) -> dict:
    """The document of an alert row: exactly the contract's fields (missing ones null).

    `updated_ts_s` stamps the write; without it the row's own value is kept.
    """
    doc = {name: alert.get(name) for name in FIELDS}
    if updated_ts_s is not None:
        doc["updated_ts_s"] = updated_ts_s
    return doc


def latest_per_id(alerts: list[dict]) -> list[dict]:
    """The last row of each alert id, in order of `seq` (open then close in one batch = the close)."""
    newest: dict[str, dict] = {}
    for alert in sorted(alerts, key=lambda a: a.get("seq", 0)):
        newest[alert["id"]] = alert
    return list(newest.values())


def spark_ddl(extra: str = "") -> str:
    """The raised fields as a Spark DDL schema string, with `extra` columns after them."""
    ddl = ", ".join(f"{name} {kind}" for name, kind in RAISED_FIELDS)
    return f"{ddl}, {extra}" if extra else ddl

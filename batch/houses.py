"""Register houses (time zone, zip, location) in Cassandra's `houses` table.

    python -m batch.houses DIR/houses.parquet      # a generator's houses file
    python -m batch.houses houses.json             # JSON lines: house_id, tz, zip, ...

The nightly job reads each house's time zone and zip code from this table. Upsert
by house id, so loading a file twice changes nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow.parquet as pq

from smw import config, cql

log = logging.getLogger(__name__)
COLUMNS = ("house_id", "zip", "geohash", "tz", "lat", "lon")


def read_records(path: Path) -> list[dict]:
    """The records of a houses file, Parquet or JSON lines, as they are (not validated)."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def registered(settings: config.Settings) -> list[dict]:
    """house_id, zip and tz of every house in Cassandra's `houses` table."""
    handle, session = cql.connect(settings)
    try:
        return [row._asdict() for row in session.execute("SELECT house_id, zip, tz FROM houses")]
    finally:
        handle.shutdown()


def read_houses(path: Path) -> list[dict]:
    """House records from Parquet or JSON lines; every record needs house_id and a valid tz."""
    houses = []
    for number, record in enumerate(read_records(path), start=1):
        if not record.get("house_id"):
            raise ValueError(f"{path}: record {number} has no house_id")
        try:
            ZoneInfo(record.get("tz") or "")
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{path}: house {record['house_id']} has an unknown time zone {record.get('tz')!r}")
        houses.append({column: record.get(column) for column in COLUMNS})
    return houses


def load(settings: config.Settings, houses: list[dict]) -> int:
    handle, session = cql.connect(settings)
    try:
        insert = session.prepare(
            f"INSERT INTO houses ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
        )
        for house in houses:
            session.execute(insert, [house[column] for column in COLUMNS])
    finally:
        handle.shutdown()
    return len(houses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch.houses", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="houses.parquet (generator output) or a JSON-lines file")
    config.add_arguments(parser, "cassandra_hosts", "cassandra_keyspace")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.path.exists():
        print(f"error: {args.path}: no such file; give the houses.parquet a generator run wrote "
              "(python -m datasets.generate --out DIR) or a JSON-lines file", file=sys.stderr)
        return 1
    try:
        count = load(config.from_args(args), read_houses(args.path))
    except (OSError, ValueError, cql.Unavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{count} houses registered")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""RethinkDB connections for every process (works with RethinkDB 2.4 and reqlite)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rethinkdb import RethinkDB

from smw import config

r = RethinkDB()


def connect(settings: config.Settings | None = None, timeout_s: float = 5.0):
    """A new driver connection to the configured server and database."""
    settings = settings or config.load()
    return r.connect(
        host=settings.rethinkdb_host, port=int(settings.rethinkdb_port), db=settings.rethinkdb_db, timeout=timeout_s
    )


def close(connection) -> None:
    # noreply_wait=False: reqlite answers the NOREPLY_WAIT query with an empty
    # response that the Python driver cannot parse; nothing here uses noreply.
    connection.close(noreply_wait=False)


@contextmanager
def connection(settings: config.Settings | None = None, timeout_s: float = 5.0) -> Iterator[object]:
    """`with connection() as conn:` a connection closed on exit."""
    conn = connect(settings, timeout_s)
    try:
        yield conn
    finally:
        close(conn)

"""Connections of the web process.

Cassandra: one driver Session per process (the driver pools connections and is
thread-safe) with statements prepared once. RethinkDB: one connection per request,
kept on `g` and closed at teardown, as flaskr does with its database.
"""
from __future__ import annotations

import atexit
import functools
import logging
import threading
from collections import namedtuple

from cassandra.cluster import EXEC_PROFILE_DEFAULT
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import named_tuple_factory
from flask import Flask, current_app, g

from smw import cql, rethink

log = logging.getLogger(__name__)


PROFILE = "smw_web"  # the default execution profile with named_rows as its row factory


@functools.lru_cache(maxsize=256)
def _row_class(columns: tuple[str, ...]):
    return namedtuple("Row", columns)


def named_rows(columns, rows) -> list:
    """Rows as named tuples, like the driver's default factory, but with one class per column list:
    the driver builds a new namedtuple class for every result, a cost paid on every query."""
    try:
        make = _row_class(tuple(columns))._make
    except ValueError:  # a column name that is no identifier: the driver's factory cleans it
        return named_tuple_factory(columns, rows)
    return [make(row) for row in rows]


class CassandraStore:
    """The process's Cassandra session and its prepared statements."""

    def __init__(self, settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._cluster = None
        self._session = None
        self._prepared: dict = {}

    @property
    def session(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    cluster, session = cql.connect(self._settings)
                    cluster.add_execution_profile(PROFILE, session.execution_profile_clone_update(
                        EXEC_PROFILE_DEFAULT, row_factory=named_rows))
                    self._cluster, self._session = cluster, session
                    atexit.register(self.shutdown)
        return self._session

    def prepared(self, statement: str):
        """The prepared form of a CQL statement, prepared on first use."""
        found = self._prepared.get(statement)
        if found is None:
            found = self.session.prepare(statement)
            self._prepared[statement] = found
        return found

    def rows(self, statement: str, params: tuple = ()) -> list:
        return list(self.session.execute(self.prepared(statement), params, execution_profile=PROFILE))

    def start(self, statement: str, params: tuple = ()):
        """Send a query without waiting; `list(future.result())` are its rows. Queries started
        together travel together: a request pays one round trip instead of one per query."""
        return self.session.execute_async(self.prepared(statement), params, execution_profile=PROFILE)

    def many(self, statement: str, param_list: list[tuple], concurrency: int = 32) -> list[list]:
        """Run one prepared statement for each parameter tuple; rows per tuple, in order."""
        if not param_list:
            return []
        results = execute_concurrent_with_args(
            self.session, self.prepared(statement), param_list, concurrency=concurrency, raise_on_first_error=True,
            execution_profile=PROFILE)
        return [list(result) for _ok, result in results]

    def shutdown(self) -> None:
        with self._lock:
            if self._cluster is not None:
                self._cluster.shutdown()
            self._cluster = None
            self._session = None
            self._prepared.clear()


def cassandra() -> CassandraStore:
    return current_app.extensions["smw_cassandra"]


def get_rethinkdb():
    """The request's RethinkDB connection, opened on first use."""
    if "rethinkdb" not in g:
        g.rethinkdb = rethink.connect(current_app.config["SMW_SETTINGS"])
    return g.rethinkdb


def close_rethinkdb(_exc=None) -> None:
    conn = g.pop("rethinkdb", None)
    if conn is not None:
        rethink.close(conn)


def init_app(app: Flask) -> None:
    app.extensions["smw_cassandra"] = CassandraStore(app.config["SMW_SETTINGS"])
    app.teardown_appcontext(close_rethinkdb)

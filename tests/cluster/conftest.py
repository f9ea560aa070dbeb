"""The multi-node stack of `make cluster-up` (tools/cluster.py), for the tests marked `cluster`.

They never start it themselves and never skip: a cluster that is not whole fails the test with
what is missing and how to start it (`make test-cluster` starts it first).
"""
from __future__ import annotations

import pytest

from tools import cluster as cluster_tool


@pytest.fixture(scope="session")
def cluster() -> cluster_tool.Cluster:
    handle = cluster_tool.Cluster()
    if not any(node.pid() for node in handle.nodes):
        pytest.fail("the multi-node stack is not running: start it with `make cluster-up` "
                    "(make test-cluster does this)", pytrace=False)
    problems = handle.missing(handle.health())
    if problems:
        pytest.fail("the multi-node stack is not whole: " + "; ".join(what for what, _nodes in problems)
                    + "; `make cluster-up` starts what is missing", pytrace=False)
    return handle


# The fault tests' Cassandra keyspace and RethinkDB database (RethinkDB stays the local stack's):
# kept between runs like the local tests' smw_test; each test clears what it compares first.
NAMESPACE = "smw_cluster_test"


@pytest.fixture(scope="session")
def client_settings(cluster):
    """The settings of a client of the cluster (var/cluster/cluster.env) in the tests' keyspace and
    RethinkDB database, with the keyspace's tables created (replication as CASSANDRA_REPLICATION says)."""
    from smw import cql
    from tests.cluster import faults

    settings = faults.cluster_settings(cluster, cassandra_keyspace=NAMESPACE, rethinkdb_db=NAMESPACE)
    handle, session = cql.connect(settings, keyspace=False)
    try:
        cql.apply_schema(session, settings)
    finally:
        handle.shutdown()
    return settings


FIGURES: list[str] = []


@pytest.fixture(scope="session")
def figures():
    """figures(test, text): one measured figure (a recovery time), printed as it is known (pytest -s)
    and listed again at the end of the run."""
    def add(what: str, text: str) -> None:
        line = f"{what}: {text}"
        FIGURES.append(line)
        print(f"\n[figure] {line}", flush=True)

    return add


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("cluster fault tests: figures")
        for line in FIGURES:
            terminalreporter.write_line(line)

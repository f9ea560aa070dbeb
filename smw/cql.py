"""Cassandra connections for every process: one Cluster per process, prepared statements."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from cassandra import AuthenticationFailed, ConsistencyLevel, InvalidRequest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

from smw import config, jobs

log = logging.getLogger(__name__)

CQL_DIR = config.ROOT / "infra" / "cql"


class _NoKeyspaceAdvice(logging.Filter):
    """Cassandra 5 warns on every statement prepared in a session bound to a keyspace (`USE
    <keyspace> ... is considered to be an anti-pattern`): every process of the platform
    works in the one configured keyspace, so the names are never ambiguous and the warning
    would only repeat in every log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "USE <keyspace>" not in record.getMessage()


logging.getLogger("cassandra.protocol").addFilter(_NoKeyspaceAdvice())
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


def check_identifier(name: str) -> str:
    """A keyspace name is spliced into DDL (it cannot be a bind marker): validate it."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid Cassandra identifier {name!r}: letters, digits and _ only")
    return name


def consistency(settings: config.Settings) -> int:
    """The driver's level for CASSANDRA_CONSISTENCY; `Unavailable` naming the levels otherwise."""
    try:
        return ConsistencyLevel.name_to_value[settings.cassandra_consistency_level]
    except ValueError as exc:
        raise Unavailable(str(exc)) from None


def cluster(
    settings: config.Settings | None = None, connect_timeout_s: float = 5.0, request_timeout_s: float = 10.0
) -> Cluster:
    """A driver Cluster: token-aware routing within the local data centre."""
    settings = settings or config.load()
    auth = (
        PlainTextAuthProvider(settings.cassandra_username, settings.cassandra_password)
        if settings.cassandra_username
        else None
    )
    return Cluster(
        settings.cassandra_host_list,
        port=int(settings.cassandra_port),
        auth_provider=auth,
        connect_timeout=connect_timeout_s,
        protocol_version=5,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                consistency_level=consistency(settings),
                request_timeout=request_timeout_s,
            )
        },
    )


class Unavailable(RuntimeError):
    """Cassandra cannot be used as configured; the message is one line saying what to do."""


def _unavailable(exc: Exception, settings: config.Settings) -> Unavailable:
    """The one line a failed connect comes down to."""
    where = f"{settings.cassandra_hosts}:{settings.cassandra_port}"
    # NoHostAvailable.errors maps each host to its error; for a keyspace no host has, it is a list of hosts.
    errors = getattr(exc, "errors", None)
    reasons = {type(e).__name__ for e in (errors.values() if isinstance(errors, dict) else ())}
    reasons.add(type(exc).__name__)
    if "AuthenticationFailed" in reasons:
        return Unavailable(f"Cassandra at {where} refused the credentials of user "
                           f"{settings.cassandra_username or '(none)'}; check CASSANDRA_USERNAME and CASSANDRA_PASSWORD")
    if isinstance(exc, InvalidRequest) or "using keyspace" in str(exc):
        return Unavailable(f"Cassandra keyspace {settings.cassandra_keyspace!r} does not exist at {where}; "
                           "create it with make init")
    reasons.discard("NoHostAvailable")
    return Unavailable(f"Cassandra is unreachable at {where} ({', '.join(sorted(reasons)) or 'no answer'}); "
                       "is it running (make up) and are CASSANDRA_HOSTS and CASSANDRA_PORT right?")


def connect(settings: config.Settings | None = None, keyspace: bool = True) -> tuple[Cluster, Session]:
    """(cluster, session), the session bound to the configured keyspace unless keyspace=False.

    Raises `Unavailable` (a one-line message) when no host answers, the credentials are
    refused or the keyspace does not exist.
    """
    settings = settings or config.load()
    name = check_identifier(settings.cassandra_keyspace)
    handle = cluster(settings)
    try:
        # The driver logs each failed attempt with a traceback before it raises.
        with jobs.quiet_logger("cassandra"):
            session = handle.connect(name if keyspace else None)
    except (NoHostAvailable, AuthenticationFailed, InvalidRequest) as exc:
        handle.shutdown()
        raise _unavailable(exc, settings) from None
    return handle, session


def statements(path: Path) -> list[str]:
    """The statements of a CQL file, `--` comments removed."""
    text = "\n".join(line.split("--", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


def apply_schema(session: Session, settings: config.Settings) -> int:
    """Create the keyspace and run every infra/cql/*.cql file in order; returns statements run."""
    keyspace = check_identifier(settings.cassandra_keyspace)
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {settings.cassandra_replication}"
    )
    session.set_keyspace(keyspace)
    count = 0
    for path in sorted(CQL_DIR.glob("*.cql")):
        for statement in statements(path):
            session.execute(statement, timeout=60)
            count += 1
    return count


def cqlsh(settings: config.Settings, statement: str | None = None) -> int:
    """Cassandra's shell (`make cqlsh`) on the first configured host and the keyspace, with the
    configured credentials: the password in a credentials file readable by this user only, which
    cqlsh asks for instead of a password on its command line, deleted on exit."""
    import os
    import subprocess
    import sys
    import tempfile

    command = [str(Path(sys.executable).parent / "cqlsh"), settings.cassandra_host_list[0], settings.cassandra_port,
               "-k", settings.cassandra_keyspace]
    if statement:
        command += ["-e", statement]
    if not settings.cassandra_username:
        return subprocess.call(command)
    with tempfile.TemporaryDirectory(prefix="smw-cqlsh-") as folder:
        credentials = Path(folder) / "credentials"
        descriptor = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(f"[PlainTextAuthProvider]\nusername = {settings.cassandra_username}\n"
                      f"password = {settings.cassandra_password}\n")
        return subprocess.call(command + ["-u", settings.cassandra_username, "--credentials", str(credentials)])


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m smw.cql", description="Cassandra's shell on the configured "
                                     "keyspace, with the configured credentials (make cqlsh).")
    parser.add_argument("-e", "--execute", help="run one statement and exit")
    args = parser.parse_args(argv)
    return cqlsh(config.load(), args.execute)


if __name__ == "__main__":
    import sys

    sys.exit(main())

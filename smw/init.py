"""Create topics, keyspace, tables and RethinkDB tables/indexes (idempotent).

    python -m smw.init [--only kafka|cassandra|rethinkdb] [--kafka-bootstrap ...]

Safe to run any number of times: existing objects are left as they are. It only
connects to the configured hosts (KAFKA_BOOTSTRAP, CASSANDRA_HOSTS, RETHINKDB_HOST)
and never starts a service: `make init` starts the local ones first. Topics get
KAFKA_REPLICATION_FACTOR replicas and KAFKA_MIN_INSYNC_REPLICAS, the keyspace
CASSANDRA_REPLICATION.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys

from smw import config, cql, jobs, kafka_clients, rethink

log = logging.getLogger(__name__)

RETHINKDB_SCHEMA = config.ROOT / "infra" / "rethinkdb" / "schema.json"


def kafka_topics(settings: config.Settings) -> dict[str, int]:
    """Topics the platform uses and their partition counts."""
    partitions = int(settings.kafka_partitions)
    return {settings.kafka_topic: partitions, settings.kafka_events_topic: partitions}


class InitError(RuntimeError):
    """One part could not be initialised; the message is one line saying what to check."""


def topic_replication(settings: config.Settings) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of the topics make init creates, checked."""
    try:
        factor, min_insync = int(settings.kafka_replication_factor), int(settings.kafka_min_insync_replicas)
    except ValueError:
        raise InitError(f"KAFKA_REPLICATION_FACTOR ({settings.kafka_replication_factor!r}) and "
                        f"KAFKA_MIN_INSYNC_REPLICAS ({settings.kafka_min_insync_replicas!r}) must be whole numbers")
    if not 1 <= min_insync <= factor:
        raise InitError(f"KAFKA_MIN_INSYNC_REPLICAS ({min_insync}) must be between 1 and KAFKA_REPLICATION_FACTOR "
                        f"({factor}): acks=all could never be satisfied")
    return factor, min_insync


def create_topics(settings: config.Settings, topics: dict[str, int]) -> list[str]:
    """Create missing topics with the configured replication; returns the names created.
    Existing topics are left as they are (partitions, replication and configuration)."""
    from kafka.admin import NewTopic
    from kafka.errors import InvalidConfigurationError, InvalidReplicationFactorError, TopicAlreadyExistsError

    factor, min_insync = topic_replication(settings)
    admin = kafka_clients.admin(settings, request_timeout_ms=15000)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name=name, num_partitions=partitions, replication_factor=factor,
                     topic_configs={"min.insync.replicas": str(min_insync)})
            for name, partitions in topics.items()
            if name not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=15000)
            except TopicAlreadyExistsError:
                log.info("a topic was created concurrently")  # the goal state holds either way
            except (InvalidReplicationFactorError, InvalidConfigurationError) as exc:
                said = re.search(r"error_message='([^']*)'", str(exc))
                raise InitError(
                    f"Kafka at {settings.kafka_bootstrap} refused to create {', '.join(t.name for t in missing)} with "
                    f"KAFKA_REPLICATION_FACTOR={factor} and KAFKA_MIN_INSYNC_REPLICAS={min_insync}: "
                    f"{said.group(1) if said else type(exc).__name__}") from exc
        return [t.name for t in missing]
    finally:
        admin.close()


def topic_exists(settings: config.Settings, name: str, timeout_s: float = 30.0) -> bool:
    """Whether the brokers have this topic (they do not create topics on first use).
    TimeoutError when they do not say within timeout_s; a KafkaError when they cannot be reached."""
    import threading

    answer: list = []

    def ask() -> None:
        try:
            admin = kafka_clients.admin(settings, request_timeout_ms=15000)
            try:
                answer.append(name in set(admin.list_topics()))
            finally:
                admin.close()
        except Exception as exc:  # handed to the caller's thread
            answer.append(exc)

    # The admin client has no overall deadline of its own: a broker that is still starting can
    # keep it retrying; a daemon thread is left behind instead of the caller waiting.
    asker = threading.Thread(target=ask, name="topic-exists", daemon=True)
    asker.start()
    asker.join(timeout_s)
    if not answer:
        raise TimeoutError(f"Kafka at {settings.kafka_bootstrap} did not list its topics within {timeout_s:.0f} s")
    if isinstance(answer[0], Exception):
        raise answer[0]
    return answer[0]


def delete_topic(settings: config.Settings, name: str) -> bool:
    """Delete a topic if it exists; True if it did. Kafka finishes the deletion in the background."""
    from kafka.errors import UnknownTopicOrPartitionError

    admin = kafka_clients.admin(settings, request_timeout_ms=15000)
    try:
        admin.delete_topics([name])
        return True
    except UnknownTopicOrPartitionError:
        return False
    finally:
        admin.close()


def create_cassandra(settings: config.Settings) -> int:
    handle, session = cql.connect(settings, keyspace=False)
    try:
        return cql.apply_schema(session, settings)
    finally:
        handle.shutdown()


def create_rethinkdb(settings: config.Settings) -> list[str]:
    """Create the database, tables and secondary indexes; returns what was created."""
    r = rethink.r
    schema = json.loads(RETHINKDB_SCHEMA.read_text(encoding="utf-8"))
    created = []
    with rethink.connection(settings) as conn:
        if settings.rethinkdb_db not in r.db_list().run(conn):
            r.db_create(settings.rethinkdb_db).run(conn)
            created.append(f"db {settings.rethinkdb_db}")
        db = r.db(settings.rethinkdb_db)
        tables = set(db.table_list().run(conn))
        for table, spec in schema["tables"].items():
            if table not in tables:
                db.table_create(table, primary_key=spec.get("primary_key", "id")).run(conn)
                created.append(f"table {table}")
            indexes = set(db.table(table).index_list().run(conn))
            for index, fields in spec.get("indexes", {}).items():
                if index in indexes:
                    continue
                if isinstance(fields, list):
                    db.table(table).index_create(index, [r.row[f] for f in fields]).run(conn)
                else:
                    db.table(table).index_create(index, r.row[fields]).run(conn)
                created.append(f"index {table}.{index}")
            db.table(table).index_wait().run(conn)
    return created


def _failed(settings: config.Settings, part: str, where: str, variables: str, exc: Exception) -> InitError:
    """The one line a failed part comes down to, with what to check: the local stack when the part is
    configured on a loopback address, the settings naming the hosts otherwise."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    if settings.is_local(part):
        hint = "is the local stack up? (make up, then make status)"
    else:
        hint = f"is it running and reachable from here, and is {variables} right?"
    return InitError(f"initialisation failed: {part} at {where} ({reason}); {hint}")


def init(settings: config.Settings, only: list[str] | None = None) -> None:
    parts = only or ["kafka", "cassandra", "rethinkdb"]
    if "kafka" in parts:
        topics = kafka_topics(settings)
        factor, min_insync = topic_replication(settings)
        try:
            created = create_topics(settings, topics)
        except InitError:
            raise
        except kafka_clients.KafkaAuthError as exc:
            raise InitError(f"initialisation failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any failure: say which part and where
            raise _failed(settings, "kafka", settings.kafka_bootstrap,
                          "KAFKA_BOOTSTRAP (and KAFKA_REPLICATION_FACTOR for the number of brokers)", exc) from exc
        print(f"kafka      topics created: {', '.join(created) or 'none (all exist)'}"
              f"{f' (replication factor {factor}, min.insync.replicas {min_insync})' if created else ''}")
    if "cassandra" in parts:
        count = create_cassandra(settings)
        print(f"cassandra  keyspace {settings.cassandra_keyspace}: {count} statements applied (IF NOT EXISTS; "
              f"replication {settings.cassandra_replication} when created)")
    if "rethinkdb" in parts:
        try:
            created = create_rethinkdb(settings)
        except Exception as exc:  # noqa: BLE001 - any failure: say which part and where
            raise _failed(settings, "rethinkdb", f"{settings.rethinkdb_host}:{settings.rethinkdb_port}",
                          "RETHINKDB_HOST / RETHINKDB_PORT", exc) from exc
        print(f"rethinkdb  created: {', '.join(created) or 'nothing (all exist)'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smw.init", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=["kafka", "cassandra", "rethinkdb"],
                        help="initialise only this part (repeatable)")
    config.add_arguments(parser, "kafka_bootstrap", "kafka_partitions", "kafka_replication_factor",
                         "kafka_min_insync_replicas", "cassandra_hosts", "cassandra_port", "cassandra_keyspace",
                         "cassandra_replication", "rethinkdb_host", "rethinkdb_port", "rethinkdb_db")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # kafka-python logs each failed attempt; the error below says it once.
        with jobs.quiet_logger("kafka"):
            init(config.from_args(args), args.only)
    except (cql.Unavailable, InitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a CLI: say what failed, exit non-zero
        print(f"error: initialisation failed ({type(exc).__name__}: {exc}); is the stack up? (make up, then "
              "make status)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

from pathlib import Path

import pytest

from smw import config, cql, jars


@pytest.mark.parametrize(
    ("file_name", "artifact"),
    [
        ("kafka-clients-3.4.1.jar", "kafka-clients"),
        ("scala-library-2.12.19.jar", "scala-library"),
        ("spark-sql-kafka-0-10_2.12-3.5.7.jar", "spark-sql-kafka-0-10_2.12"),
        ("java-driver-shaded-guava-25.1-jre-graal-sub-1.jar", "java-driver-shaded-guava"),
        ("netty-tcnative-boringssl-static-2.0.70.Final-linux-x86_64.jar", "netty-tcnative-boringssl-static"),
        ("HdrHistogram-2.1.12.jar", "HdrHistogram"),
    ],
)
def test_artifact_name_strips_version(file_name, artifact):
    assert jars.artifact_name(Path(file_name)) == artifact


def test_missing_jars_say_how_to_fetch_them(tmp_path):
    from smw import config

    settings = config.load(environ={"SMW_JARS_DIR": str(tmp_path)}, dotenv=None)
    with pytest.raises(FileNotFoundError, match="make setup"):
        jars.jars("spark", settings)


def test_cql_statements_drop_comments_and_split(tmp_path):
    path = tmp_path / "x.cql"
    path.write_text("-- header; with a semicolon\nCREATE TABLE a (k int PRIMARY KEY); -- trailing\n\nCREATE TABLE b (\n k int PRIMARY KEY\n);\n")
    assert cql.statements(path) == ["CREATE TABLE a (k int PRIMARY KEY)", "CREATE TABLE b (\n k int PRIMARY KEY\n)"]


@pytest.mark.parametrize("name", ["smw", "smw_test", "Keyspace1"])
def test_valid_keyspace_names_pass(name):
    assert cql.check_identifier(name) == name


@pytest.mark.parametrize("name", ["", "1abc", "smw; DROP KEYSPACE x", "a-b", "x" * 49])
def test_invalid_keyspace_names_are_rejected(name):
    with pytest.raises(ValueError):
        cql.check_identifier(name)


def test_the_servers_use_keyspace_advice_is_dropped_and_other_warnings_kept(caplog):
    import logging

    from smw import cql  # noqa: F401 - installs the filter

    logger = logging.getLogger("cassandra.protocol")
    with caplog.at_level(logging.WARNING, logger="cassandra.protocol"):
        logger.warning("Server warning: `USE <keyspace>` with prepared statements is considered to be an anti-pattern")
        logger.warning("Server warning: Aggregation query used without partition key")
    assert [r.getMessage() for r in caplog.records] == ["Server warning: Aggregation query used without partition key"]


def test_one_consistency_level_for_the_driver_and_the_spark_connector():
    from cassandra import ConsistencyLevel

    from smw import spark

    settings = config.Settings().replace(cassandra_consistency="local_quorum")
    assert cql.consistency(settings) == ConsistencyLevel.LOCAL_QUORUM
    profile = cql.cluster(settings).profile_manager.default
    assert profile.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    conf = spark.base_conf(settings)
    assert conf["spark.cassandra.input.consistency.level"] == "LOCAL_QUORUM"
    assert conf["spark.cassandra.output.consistency.level"] == "LOCAL_QUORUM"
    for wrong in ("bogus", "SERIAL", "LOCAL_SERIAL"):  # serial levels are for lightweight transactions only
        with pytest.raises(cql.Unavailable, match="CASSANDRA_CONSISTENCY"):
            cql.consistency(settings.replace(cassandra_consistency=wrong))
        with pytest.raises(ValueError, match="is not a consistency level"):
            spark.base_conf(settings.replace(cassandra_consistency=wrong))

import argparse
import os

import pytest

from smw import config


def test_defaults_point_at_loopback():
    settings = config.load(environ={}, dotenv=None)
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.cassandra_host_list == ["127.0.0.1"]
    assert settings.rethinkdb_host == "127.0.0.1"
    assert settings.kafka_port == 9092


def test_environment_overrides_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nKAFKA_BOOTSTRAP=broker-a:9092\nexport CASSANDRA_HOSTS='c1, c2'\n\nnot a line\n")
    settings = config.load(environ={"KAFKA_BOOTSTRAP": "broker-b:9093"}, dotenv=dotenv)
    assert settings.kafka_bootstrap_list == ["broker-b:9093"]
    assert settings.cassandra_host_list == ["c1", "c2"]


def test_command_line_overrides_environment(monkeypatch):
    monkeypatch.setenv("CASSANDRA_KEYSPACE", "from_env")
    monkeypatch.setenv("RETHINKDB_DB", "env_db")
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, "cassandra_keyspace", "rethinkdb_db")
    settings = config.from_args(parser.parse_args(["--cassandra-keyspace", "from_cli"]))
    assert settings.cassandra_keyspace == "from_cli"
    assert settings.rethinkdb_db == "env_db"


def test_help_shows_the_values_in_force_and_masks_secrets(monkeypatch):
    monkeypatch.setenv("CASSANDRA_KEYSPACE", "from_env")
    monkeypatch.setenv("CASSANDRA_PASSWORD", "s3cret")
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, "cassandra_keyspace", "cassandra_password")
    text = " ".join(parser.format_help().split())
    assert "(env CASSANDRA_KEYSPACE; now 'from_env')" in text
    assert "(env CASSANDRA_PASSWORD; now (set))" in text and "s3cret" not in text


def test_every_setting_has_an_environment_variable_in_env_example():
    example = (config.ROOT / ".env.example").read_text()
    for field in config.fields(config.Settings):
        assert f"{field.metadata['env']}=" in example, field.metadata["env"]


def test_unknown_override_is_rejected():
    with pytest.raises(TypeError):
        config.load(environ={}, dotenv=None).replace(no_such_setting="x")


def test_verbose_brings_sparks_log_to_the_console_of_a_jvm_it_launches(monkeypatch):
    import logging

    from smw import jobs

    # setenv first, so that the value apply_verbose writes is undone after the test too.
    monkeypatch.setenv("SMW_SPARK_CONSOLE_LEVEL", "warn")
    monkeypatch.delenv("SMW_SPARK_CONSOLE_LEVEL")
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    parser = argparse.ArgumentParser()
    jobs.add_verbose(parser)
    jobs.apply_verbose(parser.parse_args([]), logging.getLogger("test"))
    assert "SMW_SPARK_CONSOLE_LEVEL" not in os.environ
    jobs.apply_verbose(parser.parse_args(["--verbose"]), logging.getLogger("test"))
    assert os.environ["SMW_SPARK_CONSOLE_LEVEL"] == "info"
    # The level is read where make setup writes Spark's logging configuration.
    from smw import spark

    assert "${env:SMW_SPARK_CONSOLE_LEVEL:-warn}" in spark.LOG4J2.format(log="spark.log")

"""The one place that knows where the fetched jars live.

`make setup` runs Maven (infra/maven) into `<jars_dir>/<module>/`: `kafka` and
`cassandra` are the classpaths of the local services, `spark` holds what Spark
needs beside pyspark (Kafka source, Cassandra connector and their dependencies).
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from smw import config

log = logging.getLogger(__name__)

# A version is the first dash-separated part that starts "<digits>.<digit>"; this
# keeps "-0-10_2.12" of spark-sql-kafka-0-10_2.12 in the artifact name.
_VERSION_PART = re.compile(r"^\d+\.\d")


def module_dir(module: str, settings: config.Settings | None = None) -> Path:
    """Folder of one Maven module's jars, e.g. module_dir('kafka')."""
    settings = settings or config.load()
    return Path(settings.jars_dir) / module


def jars(module: str, settings: config.Settings | None = None) -> list[Path]:
    """Sorted jar paths of a module; a clear error when `make setup` has not run."""
    folder = module_dir(module, settings)
    found = sorted(folder.glob("*.jar"))
    if not found:
        raise FileNotFoundError(f"no jars in {folder}: run `make setup` first")
    return found


def classpath(module: str, settings: config.Settings | None = None) -> str:
    return ":".join(str(p) for p in jars(module, settings))


def artifact_name(jar: Path) -> str:
    """Artifact id without version: 'kafka-clients-3.4.1.jar' -> 'kafka-clients'."""
    parts = jar.stem.split("-")
    for index, part in enumerate(parts[1:], start=1):
        if _VERSION_PART.match(part):
            return "-".join(parts[:index])
    return jar.stem


def pyspark_jars_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("pyspark is not installed: run `make setup`")
    return Path(spec.origin).parent / "jars"


def prune_spark_duplicates(settings: config.Settings | None = None) -> list[Path]:
    """Delete fetched Spark-side jars whose artifact pyspark already ships.

    Two versions of one library on a classpath make class loading depend on
    order; pyspark's own copy is the one Spark was built and tested with.
    """
    shipped = {artifact_name(p) for p in pyspark_jars_dir().glob("*.jar")}
    removed = []
    for jar in sorted(module_dir("spark", settings).glob("*.jar")):
        if artifact_name(jar) in shipped:
            jar.unlink()
            removed.append(jar)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smw.jars", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prune", help="remove Spark-side jars pyspark already ships")
    show = sub.add_parser("classpath", help="print a module's classpath")
    show.add_argument("module", choices=["kafka", "cassandra", "spark"])
    args = parser.parse_args(argv)
    if args.command == "prune":
        removed = prune_spark_duplicates()
        print(f"pruned {len(removed)} jar(s) pyspark already ships")
    else:
        print(classpath(args.module))
    return 0


if __name__ == "__main__":
    sys.exit(main())

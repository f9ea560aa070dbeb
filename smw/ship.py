"""What executors that cannot read this checkout need: the project's code and its Python.

    python -m smw.ship            # build both archives (make package), print them and the spark-submit flags

With a master that is not local (`spark://`, `yarn`, `k8s://`, `mesos://`) the executors run on
other machines, or as other users, with neither the checkout nor its virtualenv. `smw.spark.session`
then ships

- the code archive: a zip of the packages the executors import (`CODE_PACKAGES`), named by the
  hash of their sources (`.deps/dist/smw-code-<hash>.zip`, rebuilt whenever a source changes, in
  well under a second), added with `SparkContext.addPyFile` (what `--py-files` does);
- the environment archive: the virtualenv packed by venv-pack (`.deps/dist/smw-env-<hash>.tar.gz`,
  named by the interpreter and the installed distributions), shipped with `spark.archives` as
  `#environment` and run by the executors as `./environment/bin/python`; the driver keeps
  its own interpreter. pyspark's 320 MB of jars stay out of it (the executors' JVM has its own
  Spark) and so does the editable install's pointer at the checkout.

venv-pack keeps the virtualenv's link to its base interpreter: the executor hosts need the same
Python 3.11 at the same path (`SMW_SHIP_PYTHON_PREFIX` relinks it to another prefix, e.g. `/usr`).
Local masters (`local`, `local[N]`, `local[*]`) ship nothing: their executors are this process's JVM.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from smw import config

log = logging.getLogger(__name__)

# What the executors import: the jobs' own modules (functions of a job run as a module are pickled by
# reference), the ground floor and what ingest reads from datasets. webapp and tools never run there.
CODE_PACKAGES = ("smw", "batch", "streaming", "ingest", "datasets")
# Left out of the environment archive: Spark's jars (the executors' JVM brings its own), the
# editable install, which points at the checkout the executors cannot read, and the biggest packages
# of the `tools` extra (DuckDB, Selenium), which only the tooling imports.
ENV_EXCLUDES = (
    "lib/python*/site-packages/pyspark/jars/*",
    "lib/python*/site-packages/duckdb/*",
    "lib/python*/site-packages/_duckdb*",
    "lib/python*/site-packages/selenium/*",
    "lib/python*/site-packages/__editable__*",
    "lib/python*/site-packages/__pycache__/__editable__*",
    "lib/python*/site-packages/smart_meter_watchdog-*",
)
ENV_NAME = "environment"
EXECUTOR_PYTHON = f"./{ENV_NAME}/bin/python"
_LOCAL_MASTER = re.compile(r"^local(\[[^\]]*\])?$")
# Zip entries get this fixed time, so that the same sources make the same archive.
_EPOCH = (2000, 1, 1, 0, 0, 0)


def is_local_master(master: str) -> bool:
    """`local`, `local[N]`, `local[*]`, `local[N,F]`: executors in the driver's JVM, reading this checkout."""
    return bool(_LOCAL_MASTER.match(master.strip()))


def dist_dir(settings: config.Settings | None = None) -> Path:
    settings = settings or config.load()
    return Path(settings.jars_dir).parent / "dist"


def _sources(root: Path = config.ROOT) -> list[Path]:
    found = []
    for package in CODE_PACKAGES:
        found += [p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(found)


def code_archive(settings: config.Settings | None = None, root: Path = config.ROOT) -> Path:
    """The zip of `CODE_PACKAGES` named by the hash of their sources; built when missing."""
    sources = _sources(root)
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    target = dist_dir(settings) / f"smw-code-{digest.hexdigest()[:16]}.zip"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sources:
            entry = zipfile.ZipInfo(path.relative_to(root).as_posix(), _EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, path.read_bytes())
    partial.replace(target)
    _prune(target, "smw-code-*.zip")
    return target


def _environment_key(prefix: Path) -> str:
    """A hash of what the environment is: its interpreter and every installed distribution's version."""
    from importlib import metadata

    digest = hashlib.sha256()
    digest.update(f"{sys.version}\0{os.path.realpath(sys.executable)}\0{prefix}\0".encode())
    digest.update(os.environ.get("SMW_SHIP_PYTHON_PREFIX", "").encode() + b"\0")
    digest.update("\0".join(ENV_EXCLUDES).encode() + b"\0")
    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions(path=_site_packages(prefix)))
    digest.update("\n".join(names).encode())
    return digest.hexdigest()[:16]


def _site_packages(prefix: Path) -> list[str]:
    return [str(p) for p in sorted(prefix.glob("lib/python*/site-packages"))]


def environment_prefix() -> Path:
    """The virtualenv this interpreter runs in (the one `make setup` made)."""
    if sys.prefix == sys.base_prefix:
        raise RuntimeError(f"{sys.executable} is not a virtualenv's interpreter: run the jobs with the project's "
                           ".venv (make setup) so that its packages can be shipped to the executors")
    return Path(sys.prefix)


def env_archive(settings: config.Settings | None = None, build: bool = True) -> Path:
    """The venv-pack archive of this virtualenv, named by `_environment_key`; built when missing
    (a minute or so on two cores; `make package` builds it ahead)."""
    prefix = environment_prefix()
    target = dist_dir(settings) / f"smw-env-{_environment_key(prefix)}.tar.gz"
    if target.exists() or not build:
        return target
    try:
        import venv_pack
    except ImportError:
        raise RuntimeError("venv-pack is not installed in this virtualenv: run make setup (it is in "
                           "requirements.lock), then make package") from None

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    started = time.perf_counter()
    log.info("packing the Python environment %s into %s (once per set of installed packages) ...", prefix, target)
    venv_pack.pack(prefix=str(prefix), output=str(partial), format="tar.gz", force=True, compress_level=1,
                   python_prefix=os.environ.get("SMW_SHIP_PYTHON_PREFIX") or None,
                   filters=[("exclude", pattern) for pattern in ENV_EXCLUDES])
    partial.chmod(0o644)
    partial.replace(target)
    log.info("packed the Python environment in %.0f s (%.0f MiB)", time.perf_counter() - started,
             target.stat().st_size / 2**20)
    _prune(target, "smw-env-*.tar.gz")
    return target


def _prune(keep: Path, pattern: str, older_than_s: float = 86400.0) -> None:
    """Delete archives of the same kind a day old or more: a job still running may be serving a newer one."""
    now = time.time()
    for path in keep.parent.glob(pattern):
        try:
            if path != keep and now - path.stat().st_mtime > older_than_s:
                path.unlink()
        except OSError:
            pass


@dataclass(frozen=True)
class Shipment:
    """What a session with a non-local master ships: its Spark settings and the code archive to add."""

    code: Path
    environment: Path

    def conf(self) -> dict[str, str]:
        return {
            "spark.archives": f"{self.environment}#{ENV_NAME}",
            # The executors' Python workers; the driver's is spark.pyspark.driver.python (this interpreter).
            "spark.pyspark.python": EXECUTOR_PYTHON,
        }


def prepare(settings: config.Settings | None = None) -> Shipment:
    """Both archives, built when missing or out of date."""
    return Shipment(code=code_archive(settings), environment=env_archive(settings))


def submit_flags(shipment: Shipment) -> list[str]:
    """The same shipment as spark-submit flags (for a driver that does not run `smw.spark.session` here,
    e.g. `--deploy-mode cluster`)."""
    return ["--py-files", str(shipment.code), "--archives", f"{shipment.environment}#{ENV_NAME}",
            "--conf", f"spark.pyspark.python={EXECUTOR_PYTHON}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smw.ship", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shipment = prepare()
    print(f"code         {shipment.code} ({shipment.code.stat().st_size / 2**10:.0f} KiB)")
    print(f"environment  {shipment.environment} ({shipment.environment.stat().st_size / 2**20:.0f} MiB)")
    print("A session with a non-local master ships both by itself; spark-submit flags for a driver that runs "
          "elsewhere (--deploy-mode cluster):")
    print("  " + " ".join(submit_flags(shipment)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a cluster master's executors get (smw.ship): which masters ship, the code archive."""
import zipfile

import pytest

from smw import config, ship


@pytest.mark.parametrize("master, local", [
    ("local", True), ("local[2]", True), ("local[*]", True), ("local[4,2]", True),
    ("spark://127.0.0.1:7077", False), ("yarn", False), ("k8s://https://api:6443", False),
    ("local-cluster[2,1,1024]", False),
])
def test_only_local_masters_ship_nothing(master, local):
    assert ship.is_local_master(master) is local


def test_the_code_archive_holds_every_package_the_executors_import(tmp_path):
    settings = config.load().replace(jars_dir=str(tmp_path / "jars"))
    archive = ship.code_archive(settings)
    assert archive.parent == tmp_path / "dist" and archive.name.startswith("smw-code-")
    names = set(zipfile.ZipFile(archive).namelist())
    for module in ("smw/energy.py", "smw/contract.py", "batch/nightly.py", "streaming/alerts.py", "ingest/land.py",
                   "datasets/synthetic.py", "smw/__init__.py"):
        assert module in names
    assert not any(name.startswith(("webapp/", "tools/", "tests/")) or "__pycache__" in name for name in names)
    # Same sources, same archive: nothing is rebuilt.
    again = ship.code_archive(settings)
    assert again == archive and again.stat().st_mtime == archive.stat().st_mtime


def test_the_code_archive_is_renamed_when_a_source_changes(tmp_path):
    root = tmp_path / "checkout"
    for package in ship.CODE_PACKAGES:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    settings = config.load().replace(jars_dir=str(tmp_path / "jars"))
    first = ship.code_archive(settings, root)
    (root / "smw" / "energy.py").write_text("X = 1\n")
    second = ship.code_archive(settings, root)
    assert second != first and "smw/energy.py" in zipfile.ZipFile(second).namelist()
    # Byte for byte the same archive from the same sources (fixed times, sorted entries).
    second.unlink()
    assert ship.code_archive(settings, root).read_bytes() == ship.code_archive(settings, root).read_bytes()


def test_the_shipment_runs_the_executors_on_the_packed_interpreter(tmp_path):
    shipment = ship.Shipment(code=tmp_path / "c.zip", environment=tmp_path / "e.tar.gz")
    conf = shipment.conf()
    assert conf["spark.archives"] == f"{tmp_path / 'e.tar.gz'}#environment"
    assert conf["spark.pyspark.python"] == "./environment/bin/python"
    flags = ship.submit_flags(shipment)
    assert flags[:2] == ["--py-files", str(tmp_path / "c.zip")]
    assert "--archives" in flags

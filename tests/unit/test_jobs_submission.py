"""What a submission carries (machinewatch/jobs.py): the jobs' Python packages and the one connector jar."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from machinewatch import jobs
from machinewatch.config import load_settings


def test_the_python_archive_holds_every_module_the_jobs_import_on_a_taskmanager(tmp_path: Path) -> None:
    names = set(zipfile.ZipFile(jobs.ship_python(tmp_path)).namelist())
    for module in ("flink_jobs/sustained_overheat.py", "flink_jobs/overheat_logic.py", "flink_jobs/sustained_rules.py",
                   "machinewatch/record.py", "machinewatch/config.py", "machinewatch/__init__.py",
                   "flink_jobs/__init__.py"):
        assert module in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_submission_ships_the_archive_and_the_connector_and_names_the_clusters_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    jar = tmp_path / "bundle.jar"
    monkeypatch.setattr(jobs, "connector_jar", lambda _settings: jar)
    archive = tmp_path / "jobs.zip"
    assert jobs.submission_args(load_settings(), archive) == ["-pyfs", str(archive), "-j", str(jar)]
    args = jobs.submission_args(load_settings(flink_python="/opt/py/bin/python"), archive)
    assert args[-1] == "-Dpython.executable=/opt/py/bin/python"


def test_the_connector_bundle_holds_the_connector_and_zstd_jni(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / "libs" / "5.0.0-2.2-abc"
    libs.mkdir(parents=True)
    for name, entries in (("zstd-jni-1.5.6.jar", {"META-INF/MANIFEST.MF": "zstd", "com/github/luben/Zstd.class": "z"}),
                          ("flink-sql-connector-kafka-5.0.0-2.2.jar",
                           {"META-INF/MANIFEST.MF": "connector", "org/apache/flink/connector/kafka/K.class": "k"})):
        with zipfile.ZipFile(libs / name, "w") as zf:
            for entry, text in entries.items():
                zf.writestr(entry, text)
    monkeypatch.setattr(jobs.provision, "flink_connector_libs", lambda _settings: libs)
    bundle = zipfile.ZipFile(jobs.connector_jar(load_settings(cache_dir=tmp_path)))
    assert bundle.read("META-INF/MANIFEST.MF") == b"connector"  # the connector's, not zstd-jni's
    assert {"com/github/luben/Zstd.class", "org/apache/flink/connector/kafka/K.class"} <= set(bundle.namelist())

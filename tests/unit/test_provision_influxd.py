"""Which influxd the stack runs: MW_INFLUXD, the cached build, one on PATH, or a build (fake binaries, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from machinewatch.config import Settings, load_settings
from machinewatch.stack import provision

PINNED = "InfluxDB v2.9.1 (git: module-v2.9.1) build_date: 2026-01-01T00:00:00Z"


def fake_influxd(folder: Path, output: str, code: int = 0) -> Path:
    """A shell script that answers `influxd version` like the real one (and nothing else)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "influxd"
    path.write_text(f"#!/bin/sh\n[ \"$1\" = version ] || exit 64\necho '{output}'\nexit {code}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """The builds that ran; the build script is replaced by one that installs a fake influxd of the pinned version."""
    ran: list[list[str]] = []

    def fake_build(cmd: list[str], prefix: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        ran.append(cmd)
        fake_influxd(Path(cmd[-1]), PINNED)

    monkeypatch.setattr(provision, "_stream", fake_build)
    monkeypatch.setattr(provision, "require", lambda *tools: None)
    monkeypatch.setattr(provision, "_chosen_influxd", {})
    monkeypatch.setenv("PATH", str(tmp_path / "path"))  # no influxd on PATH unless a test puts one there
    monkeypatch.delenv("MW_INFLUXD", raising=False)
    return ran


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(cache_dir=tmp_path / "cache", state_dir=tmp_path / "state", influxdb_version="2.9.1",
                         **overrides)


def cached(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "influxdb" / "2.9.1" / "influxd"


def test_mw_influxd_of_the_pinned_major_version_is_run_and_nothing_is_built(
        tmp_path: Path, builds: list[list[str]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    mine = fake_influxd(tmp_path / "opt", "InfluxDB v2.7.4 (git: 19e5c0e1b7) build_date: 2023-11-08T17:07:42Z")
    monkeypatch.setenv("MW_INFLUXD", str(mine))
    s = settings(tmp_path)
    assert provision.influxd_binary(s) == mine
    assert builds == []
    log = capsys.readouterr().err
    assert f"using InfluxDB 2.7.4 at {mine} (MW_INFLUXD) instead of building 2.9.1" in log
    assert provision.influxd_binary(s) == mine  # the stack asks several times while it starts ...
    assert capsys.readouterr().err == ""  # ... and says it once


@pytest.mark.parametrize(("output", "code", "why"), [
    ("InfluxDB v1.8.10 (git: 1.8 688e697c51)", 0, "it is InfluxDB 1.8.10; machinewatch needs InfluxDB 2.x"),
    ("InfluxDB dev (git: none) build_date: unknown", 0, "without an 'InfluxDB vX.Y.Z'"),
    ("Error: unknown command", 1, "exited 1"),
])
def test_mw_influxd_of_another_version_is_refused_and_the_pinned_one_built(
        tmp_path: Path, builds: list[list[str]], capsys: pytest.CaptureFixture[str],
        output: str, code: int, why: str) -> None:
    other = fake_influxd(tmp_path / "opt", output, code)
    assert provision.influxd_binary(settings(tmp_path, influxd=other)) == cached(tmp_path)
    assert len(builds) == 1
    log = capsys.readouterr().err
    assert f"not using {other} (MW_INFLUXD): " in log and why in log


def test_mw_influxd_that_does_not_exist_is_refused(tmp_path: Path, builds: list[list[str]],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "influxd"
    assert provision.influxd_binary(settings(tmp_path, influxd=missing)) == cached(tmp_path)
    assert f"not using {missing} (MW_INFLUXD): '{missing} version' did not run" in capsys.readouterr().err
    assert len(builds) == 1


def test_influxd_on_path_is_run_when_nothing_is_cached(tmp_path: Path, builds: list[list[str]],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    on_path = fake_influxd(tmp_path / "path", "InfluxDB v2.8.0 (git: abc) build_date: 2025-01-01T00:00:00Z")
    assert provision.influxd_binary(settings(tmp_path)) == on_path
    assert builds == []
    assert f"using InfluxDB 2.8.0 at {on_path} (found on PATH)" in capsys.readouterr().err


def test_influxd_on_path_of_another_major_version_is_refused(tmp_path: Path, builds: list[list[str]],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    fake_influxd(tmp_path / "path", "InfluxDB v1.8.10 (git: 1.8 688e697c51)")
    assert provision.influxd_binary(settings(tmp_path)) == cached(tmp_path)
    assert "(found on PATH): it is InfluxDB 1.8.10" in capsys.readouterr().err
    assert len(builds) == 1


def test_a_cached_build_comes_before_path_but_after_mw_influxd(tmp_path: Path, builds: list[list[str]],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake_influxd(cached(tmp_path).parent, PINNED)  # built by an earlier run: its data directory is that version's
    fake_influxd(tmp_path / "path", "InfluxDB v2.7.4 (git: 19e5c0e1b7)")
    assert provision.influxd_binary(settings(tmp_path)) == cached(tmp_path)
    assert "PATH" not in capsys.readouterr().err

    mine = fake_influxd(tmp_path / "opt", "InfluxDB v2.7.4 (git: 19e5c0e1b7)")
    assert provision.influxd_binary(settings(tmp_path, influxd=mine)) == mine

    wrong = fake_influxd(tmp_path / "old", "InfluxDB v1.8.10 (git: 1.8 688e697c51)")
    assert provision.influxd_binary(settings(tmp_path, influxd=wrong)) == cached(tmp_path)
    assert f"using the cached build of InfluxDB 2.9.1 at {cached(tmp_path)}" in capsys.readouterr().err
    assert builds == []


def test_influxd_version_reads_the_real_output_format(tmp_path: Path) -> None:
    assert provision.influxd_version(fake_influxd(tmp_path, PINNED)) == "2.9.1"

"""The archive collector: an archive read back as the readings it holds, bad rows and files dead-lettered."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from ingest.archive.source import ArchiveSource
from machinewatch import plugins
from machinewatch.archive import partition_dir, read_archive, write_file
from machinewatch.record import Reading
from tests.collector_support import drive

TESTDATA = Path(__file__).parents[2] / "ingest" / "archive" / "testdata" / "archive"


class Memory:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.dead: list[tuple[str, Any, str, str]] = []

    def send(self, reading: Reading) -> None:
        self.readings.append(reading)

    def dead_letter(self, source: str, raw: Any, reason: str, origin: str = "", **_: Any) -> None:
        self.dead.append((source, raw, reason, origin))

    def flush(self) -> None:
        pass


def test_the_testdata_archive_is_replayed_whole_with_its_event_ids_and_the_run_ends() -> None:
    sink = Memory()
    source = drive(ArchiveSource(TESTDATA, max_batch=4), sink)  # two polls at least: 6 readings, batches of 4
    assert sink.readings == list(read_archive(TESTDATA))
    assert len(sink.readings) == 6 and source.files == 2 and not sink.dead


def test_rows_that_are_not_readings_and_unreadable_files_are_dead_lettered(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    shutil.copytree(TESTDATA, root)
    good = next(iter(read_archive(TESTDATA))).to_dict()
    folder = partition_dir(root, good["ts"])
    write_file(folder / "part-00009.parquet", [{**good, "value": float("nan"), "event_id": "x1"}])
    (folder / "part-00010.parquet").write_bytes(b"PAR1 not really")
    sink = Memory()
    source = drive(ArchiveSource(root), sink)
    assert len(sink.readings) == 6 and source.rejects == 2
    reasons = [reason for _, _, reason, _ in sink.dead]
    assert reasons[0].startswith("not a reading") and reasons[1].startswith("not a readable Parquet file")
    assert sink.dead[1][1] == b"PAR1 not really" and sink.dead[1][3].endswith("part-00010.parquet")
    assert all(name == "archive" for name, _, _, _ in sink.dead)


def test_a_missing_root_is_a_usage_error_not_a_retried_failure(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from machinewatch.cli import main

    with pytest.raises(ValueError, match="not a folder"):
        ArchiveSource(tmp_path / "nope")
    assert main(["ingest", "archive", "--root", str(tmp_path / "nope")]) == 1  # before any Kafka connection
    assert "not a folder" in capsys.readouterr().err


def test_ingest_archive_flags_become_its_settings(tmp_path: Path) -> None:
    from machinewatch import cli

    plugin = plugins.collectors()["archive"]
    args = cli.build_parser().parse_args(["ingest", "archive", "--root", str(tmp_path), "--topic", "t.x"])
    assert plugin.flag_overrides is not None
    loaded: Any = plugin.load_settings(None, plugin.flag_overrides(args), environ={})
    assert (loaded.root, loaded.topic) == (tmp_path, "t.x")

"""The PerfMon folder watcher without Kafka: finished-file detection, done/ and error/, state, crash recovery.

A recording publisher stands in for Kafka (the integration tests use the real broker); a "crash" is
``os._exit`` turned into an exception that nothing in the watcher catches.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.perfmon import watcher as watcher_mod
from ingest.perfmon.config import PerfmonConfig
from ingest.perfmon.watcher import CRASH_POINTS, WatcherState
from machinewatch import quality
from machinewatch.config import load_settings
from simulators.perfmon import CORRUPT_CELL, PerfmonSimulator
from tests.collector_support import PerfmonWatcher
from tests.unit.conftest import RecordingPublisher

TESTDATA = Path(__file__).resolve().parents[2] / "ingest" / "perfmon" / "testdata"


class Crash(BaseException):
    pass


def _config(root: Path, **extra: Any) -> PerfmonConfig:
    return PerfmonConfig(watch_dir=root / "in", settle_s=0, batch_rows=7, **extra)


def _watcher(config: PerfmonConfig, pub: RecordingPublisher) -> PerfmonWatcher:
    w = PerfmonWatcher(config, load_settings(), publisher=pub)  # type: ignore[arg-type]
    w.setup()
    return w


def test_only_settled_files_are_taken(tmp_path: Path) -> None:
    config = PerfmonConfig.model_validate({"watch_dir": tmp_path / "in", "settle_s": 30})
    w = _watcher(config, RecordingPublisher())
    old = config.watch_dir / "HOST_20240101-000001" / "DataCollector01.csv"
    old.parent.mkdir(parents=True)
    old.write_text("x")
    os.utime(old, (time.time() - 60, time.time() - 60))
    (config.watch_dir / "active.csv").write_text("still being written")
    (config.watch_dir / ".hidden.csv").write_text("x")
    (config.watch_dir / "notes.txt").write_text("x")
    done = config.done_path / "earlier.csv"
    done.write_text("x")
    os.utime(done, (time.time() - 60, time.time() - 60))
    assert w.finished_files() == [old]
    assert set(w.finished_files(now=time.time() + 60)) == {old, config.watch_dir / "active.csv"}


def test_good_file_to_done_bad_file_to_error(tmp_path: Path) -> None:
    pub = RecordingPublisher()
    w = _watcher(_config(tmp_path), pub)
    for name in ("bad-rows.csv", "not-pdh.csv", "cp1251-russian.csv"):
        shutil.copy(TESTDATA / name, w.config.watch_dir / name)
    outcomes = {o.path.name: o for o in w.run_once()}
    assert outcomes["not-pdh.csv"].status == "error"
    assert outcomes["bad-rows.csv"].status == "done" and outcomes["bad-rows.csv"].dead_letters == 2
    assert sorted(p.name for p in w.config.done_path.iterdir()) == ["bad-rows.csv", "cp1251-russian.csv"]
    reason = (w.config.error_path / "not-pdh.csv.reason.txt").read_text()
    assert "PDH-CSV 4.0" in reason
    assert not list(w.config.watch_dir.glob("*.csv"))
    docs = pub.docs()
    assert sum("event_id" in d for d in docs) == 5 + 8
    dead = [d for d in docs if "reason" in d]
    assert len(dead) == 3 and any(d["origin"] == "perfmon-file:not-pdh.csv" for d in dead)
    # State: every row of both files acknowledged.
    state = json.loads(w.config.state_path.read_text())
    assert sorted((e["rows"], e["acked_rows"]) for e in state["files"].values()) == [(3, 3), (4, 4)]


def test_same_file_dropped_again_is_not_resent(tmp_path: Path) -> None:
    pub = RecordingPublisher()
    w = _watcher(_config(tmp_path), pub)
    shutil.copy(TESTDATA / "bad-rows.csv", w.config.watch_dir / "a.csv")
    w.run_once()
    sent = len(pub.delivered)
    shutil.copy(TESTDATA / "bad-rows.csv", w.config.watch_dir / "renamed.csv")
    (outcome,) = w.run_once()
    assert outcome.status == "done" and outcome.readings == 0 and len(pub.delivered) == sent
    assert (w.config.done_path / "renamed.csv").exists()


def test_corrupt_state_is_not_silently_reset(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(RuntimeError, match="unreadable"):
        WatcherState.load(path)


def test_state_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = WatcherState(tmp_path / "s.json")
    state.save()
    before = (tmp_path / "s.json").read_bytes()

    def boom(*_a: Any) -> None:
        msg = "disk full"
        raise OSError(msg)

    monkeypatch.setattr(watcher_mod.os, "replace", boom)
    state.files["x"] = watcher_mod.FileEntry(name="x", rows=1)
    with pytest.raises(OSError, match="disk full"):
        state.save()
    assert (tmp_path / "s.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp file left behind


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_at_each_point_then_restart_gives_each_id_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_readback: list[RecordingPublisher], point: str
) -> None:
    sim = PerfmonSimulator(tmp_path / "in", hosts=["CRASHY"], rows_per_file=20, interval_s=1, corrupt_every=5)
    sim.write_files(datetime(2026, 2, 1, tzinfo=UTC), 2)
    corrupt_rows = sum(p.read_text().count(CORRUPT_CELL) for p in (tmp_path / "in").rglob("*.csv"))

    def crash(code: int) -> None:
        raise Crash(code)

    monkeypatch.setattr(watcher_mod.os, "_exit", crash)
    monkeypatch.setenv("MW_PERFMON_CRASH_AT", point)
    monkeypatch.setenv("MW_PERFMON_CRASH_NTH", "2")
    first = RecordingPublisher()
    kafka_readback.append(first)
    with pytest.raises(Crash):
        _watcher(_config(tmp_path), first).run_once()

    monkeypatch.delenv("MW_PERFMON_CRASH_AT")
    second = RecordingPublisher()
    kafka_readback.append(second)
    _watcher(_config(tmp_path), second).run_once()

    docs = first.docs() + second.docs()
    ids = [d["event_id"] for d in docs if "event_id" in d]
    origins = [":".join(d["origin"].split(":", 3)[:3]) for d in docs if "reason" in d]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} readings sent twice"
    assert len(origins) == len(set(origins)) == corrupt_rows
    # 2 files x 20 rows x 5 counters, minus 2 blanks in each file's first row, minus corrupt cells.
    assert len(ids) == 2 * 20 * 5 - 2 * 2 - corrupt_rows
    assert not list((tmp_path / "in").glob("*/*.csv"))
    assert len(list((tmp_path / "in" / "done").rglob("*.csv"))) == 2


class BrokerDownPublisher(RecordingPublisher):
    """Takes the records but never gets them acknowledged."""

    def flush(self, timeout: float | None = None) -> None:
        msg = "KafkaTimeoutError: Failed to flush buffered records within 120 secs"
        raise RuntimeError(msg)


def test_unacknowledged_batch_keeps_the_file_and_retries(
    tmp_path: Path, kafka_readback: list[RecordingPublisher]
) -> None:
    config = _config(tmp_path)
    down = BrokerDownPublisher()
    kafka_readback.append(down)  # the broker may have stored them even though no ack arrived
    w = _watcher(config, down)
    shutil.copy(TESTDATA / "cp1251-russian.csv", config.watch_dir / "ru.csv")
    (outcome,) = w.run_once()
    assert outcome.status == "retry" and "not acknowledged" in outcome.detail
    assert (config.watch_dir / "ru.csv").exists() and not list(config.done_path.iterdir())
    up = RecordingPublisher()
    kafka_readback.append(up)
    (outcome,) = _watcher(config, up).run_once()
    assert outcome.status == "done" and outcome.resent_skipped == 8 and up.delivered == []


def test_cli_help_explains_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    from machinewatch.cli import build_parser

    for argv in (["ingest", "perfmon", "--help"], ["simulate", "--help"]):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--config", "--once", "settle_s", "--out-dir", "--rows-per-file", "--offset-minutes"):
        assert option in out


def test_a_file_too_large_to_read_is_dead_lettered_with_its_head_and_real_size(tmp_path: Path) -> None:
    config = _config(tmp_path, max_file_mb=0.25)  # 256 KiB: the file below is 4x that
    pub = RecordingPublisher()
    w = _watcher(config, pub)
    big = config.watch_dir / "big.csv"
    body = bytes(range(256)) * 4096
    big.write_bytes(body)
    assert w.process(big).status == "error"
    (letter,) = pub.docs()
    assert "larger than max_file_mb=0.25" in letter["reason"]
    assert letter["size"] == len(body) and letter["truncated"] is True
    assert quality.raw_bytes(letter) == body[: len(quality.raw_bytes(letter))] and len(quality.raw_bytes(letter)) > 0
    assert (config.error_path / "big.csv").read_bytes() == body  # the file itself is kept whole

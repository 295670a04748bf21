"""Issue 14 against the real Kafka: PerfMon files with a broken envelope lose no value.

The made-up files of ingest/perfmon/testdata reproduce each deviation (cut header in cp1251, a zone
name without offset in UTF-16, no zone at all, an unknown zone, localised counter names). What must
reach the topics is computed without the parser (csv module, zoneinfo, hand-written UTC times and
units: tests/unit/test_perfmon_envelope.py); each test reads the topics from the offsets they had
when it started and keeps to its own site and file names, so it can share a broker with others.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from ingest.perfmon.config import load_config
from ingest.perfmon.parser import parse
from ingest.perfmon.watcher import note_id
from machinewatch import names, quality
from machinewatch.config import Settings
from machinewatch.quality import MAX_RAW_BYTES
from machinewatch.stack import Stack
from tests.collector_support import PerfmonWatcher
from tests.stack_support import end_offsets, read_since
from tests.unit.test_perfmon_envelope import FIXTURES, TESTDATA, expected_utc_ms, good_cells, independent_lines

pytestmark = pytest.mark.integration

TOPICS = (names.TOPIC_READINGS, names.TOPIC_DEAD_LETTER, names.TOPIC_QUALITY)


def _end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    return end_offsets(settings, TOPICS)


def _read_since(settings: Settings, starts: dict[TopicPartition, int]) -> dict[str, list[dict[str, Any]]]:
    got = read_since(settings, starts)
    return {t: got.get(t, []) for t in TOPICS}


def _config(path: Path, inbox: Path, site: str, extra: str = "") -> None:
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(f'[perfmon]\nwatch_dir = "{inbox}"\nsettle_s = 0\npoll_interval_s = 0.5\nbatch_rows = 5\n'
                    f'site = "{site}"\n{extra}')
    os.utime(path, (before + 5, before + 5))


def _check_file(fx_name: str, tag: str, readings: list[dict[str, Any]], dead: list[dict[str, Any]],
                notes: list[dict[str, Any]]) -> None:
    """The file's every value is in the topics once (or in its row's dead letter), times and units right."""
    fx = FIXTURES[fx_name]
    lines, rows = independent_lines(fx)
    header, data = rows[0], rows[1:]
    identity = parse((TESTDATA / fx_name).read_bytes(), timezone=fx.timezone).identity
    hosts = {col.split("\\")[2] for col in header[1:]}
    mine = [d for d in readings if d["device_id"] in hosts]
    ids = [d["event_id"] for d in mine]
    assert len(ids) == len(set(ids)) == good_cells(fx), fx_name
    expected: Counter[tuple[str, int, str, float]] = Counter()
    for i, cells in enumerate(data):
        ms = expected_utc_ms(fx, i, cells[0])
        for col, cell in zip(header[1:], cells[1:], strict=False):
            if ms is None or not cell.strip():
                continue
            try:
                value = float(cell)
            except ValueError:
                continue
            unit, factor = fx.units[col.rsplit("\\", 1)[1]]
            expected[(col.split("\\")[2], ms, unit, value * factor)] += 1
    assert Counter((d["device_id"], d["ts"], d["unit"], d["value"]) for d in mine) == expected, fx_name

    # Rows with a bad cell or time: one dead letter each, the line's exact bytes in the file's encoding.
    letters = [d for d in dead if d["origin"].startswith(f"perfmon:{identity}:") and tag in d["origin"]]
    raw = sorted(quality.raw_bytes(d) for d in letters)
    bad_lines = sorted(lines[i + 1] for i, cells in enumerate(data)
                       if expected_utc_ms(fx, i, cells[0]) is None
                       or any(c.strip() and not _number(c) for c in cells[1:]))
    assert raw == bad_lines, fx_name
    assert all(d["size"] == len(quality.raw_bytes(d)) and not d["truncated"] for d in letters)

    # Notes: where the zone came from (unless the header's offset), unknown counter names; stable ids.
    got = {d["kind"]: d for d in notes if d["origin"].startswith(f"perfmon:{identity}:") and tag in d["origin"]}
    kinds = {"timezone"} if fx.zone_source != "header offset" else set()
    kinds |= {"unknown_unit"} if fx.unknown else set()
    assert set(got) == kinds, fx_name
    for kind, doc in got.items():
        assert doc["note_id"] == note_id(identity, kind) and doc["source"] == "perfmon"
        assert quality.raw_bytes(doc) == lines[0]  # the header line's exact bytes
    if fx.unknown:
        assert all(name in got["unknown_unit"]["reason"] for name in fx.unknown)
    if "timezone" in got:
        assert fx.zone_source in got["timezone"]["reason"]


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_deviating_envelopes_lose_no_value(stack: Stack, settings: Settings, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    site = f"it-pm-envelope-{tag}"
    inbox = tmp_path / "in"
    inbox.mkdir()
    names_ = ["ru-cut-header-cp1251.csv", "zone-name-no-offset-utf16.csv", "no-zone-de-utf8.csv",
              "localised-units-utf8.csv"]
    for name in names_:
        shutil.copy(TESTDATA / name, inbox / f"{tag}-{name}")
    conf = tmp_path / "perfmon.conf"
    _config(conf, inbox, site, 'timezone = "Europe/Berlin"\n')  # only no-zone-de needs it
    starts = _end_offsets(settings)
    watcher = PerfmonWatcher(load_config(conf), settings, config_path=conf)
    watcher.setup()
    try:
        outcomes = watcher.run_once()
    finally:
        watcher.stop()
    assert sorted(o.status for o in outcomes) == ["done"] * 4
    topics = _read_since(settings, starts)
    readings = [d for d in topics[names.TOPIC_READINGS] if d.get("site") == site]
    for name in names_:
        _check_file(name, tag, readings, topics[names.TOPIC_DEAD_LETTER], topics[names.TOPIC_QUALITY])
    assert len(readings) == sum(good_cells(FIXTURES[n]) for n in names_)


def test_parked_file_is_taken_back_by_the_running_watcher_when_its_config_gets_a_timezone(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    site = f"it-pm-parked-{tag}"
    inbox = tmp_path / "in"
    inbox.mkdir()
    name = "unknown-zone-fr-cp1252.csv"
    conf = tmp_path / "perfmon.conf"
    _config(conf, inbox, site)
    starts = _end_offsets(settings)
    env = {**os.environ, **settings.to_env()}
    env.pop("MW_PERFMON_CRASH_AT", None)
    log = (tmp_path / "watcher.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "machinewatch", "ingest", "perfmon", "--config", str(conf)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        shutil.copy(TESTDATA / name, inbox / f"{tag}-{name}")
        parked = inbox / "error" / f"{tag}-{name}"
        reason = parked.with_name(parked.name + ".reason.txt")
        _wait(lambda: reason.exists(), 90, "the file to be parked in error/", tmp_path)
        text = reason.read_text()
        assert f"[perfmon] table of {conf}" in text and "timezone = " in text
        time.sleep(2)  # a few more scans: still parked, nothing published
        assert parked.exists()
        _config(conf, inbox, site, 'timezone = "Europe/Paris"\n')
        done = inbox / "done" / f"{tag}-{name}"
        _wait(lambda: done.exists(), 90, "the parked file to be taken back and published", tmp_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert not parked.exists() and not reason.exists()
    topics = _read_since(settings, starts)
    readings = [d for d in topics[names.TOPIC_READINGS] if d.get("site") == site]
    _check_file(name, tag, readings, topics[names.TOPIC_DEAD_LETTER],
                [d for d in topics[names.TOPIC_QUALITY] if d["kind"] != "parked"])
    (note,) = [d for d in topics[names.TOPIC_QUALITY] if d["kind"] == "parked" and tag in d["origin"]]
    assert "timezone = " in note["reason"] and quality.raw_bytes(note) == independent_lines(FIXTURES[name])[0][0]
    timezone_note = next(d for d in topics[names.TOPIC_QUALITY] if d["kind"] == "timezone" and tag in d["origin"])
    assert "Europe/Paris" in timezone_note["reason"]


def _wait(ready: Any, seconds: float, what: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; watcher log:\n{(tmp_path / 'watcher.log').read_text()}")
        time.sleep(0.2)


@pytest.mark.parametrize("size", [100_000, MAX_RAW_BYTES + 10_000])
def test_rejected_file_dead_letter_holds_its_exact_bytes(stack: Stack, settings: Settings, tmp_path: Path,
                                                         size: int) -> None:
    tag = uuid.uuid4().hex[:8]
    inbox = tmp_path / "in"
    inbox.mkdir()
    # Not PerfMon at all (and not UTF-8): rejected whole; the dead letter keeps its bytes, not a text slice.
    data = ("время;значение\r\n".encode("cp1251") + bytes(range(256)) * (size // 256 + 1))[:size]
    (inbox / f"{tag}.csv").write_bytes(data)
    starts = _end_offsets(settings)
    conf = tmp_path / "perfmon.conf"
    _config(conf, inbox, "unused")
    watcher = PerfmonWatcher(load_config(conf), settings, config_path=conf)
    watcher.setup()
    try:
        (outcome,) = watcher.run_once()
    finally:
        watcher.stop()
    assert outcome.status == "error"
    (letter,) = [d for d in _read_since(settings, starts)[names.TOPIC_DEAD_LETTER]
                 if d["origin"] == f"perfmon-file:{tag}.csv"]
    kept = min(size, MAX_RAW_BYTES)
    assert letter["raw_encoding"] == "base64" and letter["size"] == size
    assert letter["truncated"] == (size > MAX_RAW_BYTES)
    assert quality.raw_bytes(letter) == data[:kept]
    assert (inbox / "error" / f"{tag}.csv").read_bytes() == data

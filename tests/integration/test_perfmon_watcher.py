"""The PerfMon folder watcher against the real Kafka: what the files held is what the topics hold.

Expectations come from the csv module and zoneinfo. Each test reads the topics from the offsets
they had when it started and keeps to its own site / host names, so runs sharing the broker (and
earlier runs of the same real files, whose event ids are by design the same) do not interfere.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from kafka import TopicPartition

from ingest.perfmon.config import PerfmonConfig
from ingest.perfmon.parser import parse
from ingest.perfmon.watcher import CRASH_EXIT_CODE, CRASH_POINTS
from machinewatch import names
from machinewatch.config import Settings
from machinewatch.stack import Stack
from simulators.perfmon import CORRUPT_CELL, PerfmonSimulator
from tests.collector_support import PerfmonWatcher
from tests.realdata import realdata_file
from tests.stack_support import end_offsets, read_since

pytestmark = pytest.mark.integration

TESTDATA = Path(__file__).resolve().parents[2] / "ingest" / "perfmon" / "testdata"
TOPICS = (names.TOPIC_READINGS, names.TOPIC_DEAD_LETTER)


def _end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    return end_offsets(settings, TOPICS)


def _read_since(settings: Settings, starts: dict[TopicPartition, int]) -> dict[str, list[dict[str, Any]]]:
    got = read_since(settings, starts)
    return {t: got.get(t, []) for t in TOPICS}


def _oracle(path: Path, tz: Any) -> list[tuple[str, int, str, float]]:
    """(host, UTC epoch ms, instance, value in canonical units) of every numeric cell of a PDH-CSV file."""
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    header, data = rows[0], rows[1:]
    out = []
    for row in data:
        local = datetime.strptime(row[0], "%m/%d/%Y %H:%M:%S.%f").replace(tzinfo=tz)
        ms = round(local.timestamp() * 1000)
        for col, cell in zip(header[1:], row[1:], strict=True):
            if cell.strip() and cell != CORRUPT_CELL:
                obj = col.split("\\")[3]
                instance = obj[obj.index("(") + 1 : -1] if "(" in obj else ""
                # The documented normalisation: PerfMon's MBytes are MiB, published in bytes.
                factor = 1024.0 * 1024.0 if col.endswith("MBytes") else 1.0
                out.append((col.split("\\")[2], ms, instance, float(cell) * factor))
    return out


def _instance(metric: str) -> str:
    return metric[metric.index("[") + 1 : -1] if metric.endswith("]") else ""


def test_real_exports_reach_kafka_complete_and_unchanged(stack: Stack, settings: Settings, tmp_path: Path) -> None:
    site = f"it-perfmon-{uuid.uuid4().hex[:8]}"
    inbox = tmp_path / "in"
    inbox.mkdir()
    files = {"india-logicaldisk-15s.csv": ZoneInfo("Asia/Kolkata"),
             "eastern-process-bytes-2s.csv": ZoneInfo("America/New_York")}
    real = {name: realdata_file(f"perfmon/{name}") for name in files}
    for name in files:
        shutil.copy(real[name], inbox / name)
    starts = _end_offsets(settings)
    watcher = PerfmonWatcher(PerfmonConfig(watch_dir=inbox, settle_s=0, batch_rows=50, site=site,
                                           region="it"), settings)
    watcher.setup()
    try:
        outcomes = watcher.run_once()
    finally:
        watcher.stop()
    assert sorted(o.status for o in outcomes) == ["done", "done"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == sorted(files)

    got = [d for d in _read_since(settings, starts)[names.TOPIC_READINGS] if d.get("site") == site]
    expected = [t for name, tz in files.items() for t in _oracle(real[name], tz)]
    assert len(expected) == 244 + 208 * 8
    ids = [d["event_id"] for d in got]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate event ids in the topic"
    assert len(got) == len(expected)
    assert Counter((d["device_id"], d["ts"], _instance(d["metric"]), d["value"]) for d in got) == Counter(expected)
    # Content by event id: the topic holds exactly what the parser made of the files.
    parsed = {r.event_id: r.to_dict() for name in files
              for row in parse(real[name].read_bytes(), region="it", site=site).rows() for r in row.readings}
    assert {d["event_id"]: d for d in got} == parsed
    assert {d["unit"] for d in got} == {"count", "bytes"}


def test_bad_rows_and_bad_files_go_to_the_dead_letter_topic(stack: Stack, settings: Settings,
                                                            tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    site = f"it-perfmon-{tag}"
    inbox = tmp_path / "in"
    inbox.mkdir()
    for name in ("bad-rows.csv", "truncated-header.csv", "not-pdh.csv", "cp1251-russian.csv", "utf16-bom.csv"):
        shutil.copy(TESTDATA / name, inbox / f"{tag}-{name}")
    starts = _end_offsets(settings)
    watcher = PerfmonWatcher(PerfmonConfig(watch_dir=inbox, settle_s=0, site=site), settings)
    watcher.setup()
    try:
        watcher.run_once()
    finally:
        watcher.stop()
    topics = _read_since(settings, starts)
    readings = [d for d in topics[names.TOPIC_READINGS] if d.get("site") == site]
    dead = [d for d in topics[names.TOPIC_DEAD_LETTER] if tag in d.get("origin", "")]

    # bad-rows: 4 rows, 1 with a non-number beside a good value, 1 with a broken timestamp.
    by_file = Counter(d["device_id"] for d in readings)
    assert by_file == {"BOX1": 5, "NODE9": 2, "СЕРВЕР-01": 8, "WKS-7": 4}
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 4
    assert sum("'-nan(ind)' is not a number" in r for r in reasons) == 1
    assert sum("timestamp 'not a time'" in r for r in reasons) == 1
    assert sum("no counter in the header" in r for r in reasons) == 1
    file_level = [d for d in dead if d["origin"] == f"perfmon-file:{tag}-not-pdh.csv"]
    assert len(file_level) == 1 and "PDH-CSV 4.0" in file_level[0]["reason"]
    assert file_level[0]["raw"].startswith("time,cpu")
    row_level = [d for d in dead if d not in file_level]
    assert all(d["raw"].startswith('"') and d["source"] == "perfmon" for d in row_level)
    assert (inbox / "error" / f"{tag}-not-pdh.csv").exists()
    assert "PDH-CSV" in (inbox / "error" / f"{tag}-not-pdh.csv.reason.txt").read_text()
    assert len(list((inbox / "done").iterdir())) == 4


def _run_cli(settings: Settings, config: Path, crash_at: str | None) -> int:
    env = {**os.environ, **settings.to_env()}
    env.pop("MW_PERFMON_CRASH_AT", None)
    if crash_at:
        env.update(MW_PERFMON_CRASH_AT=crash_at, MW_PERFMON_CRASH_NTH="2")
    proc = subprocess.run([sys.executable, "-m", "machinewatch", "ingest", "perfmon", "--config", str(config),
                           "--once"], env=env, capture_output=True, text=True, timeout=180, check=False)
    if proc.returncode not in (0, CRASH_EXIT_CODE):
        print(proc.stdout, proc.stderr)
    return proc.returncode


RAW_DUPLICATES: dict[str, int] = {}


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_watcher_killed_at_each_step_publishes_every_row_exactly_once(
    stack: Stack, settings: Settings, tmp_path: Path, point: str
) -> None:
    host = f"PMCRASH-{uuid.uuid4().hex[:8].upper()}"
    inbox = tmp_path / "in"
    sim = PerfmonSimulator(inbox, hosts=[host], rows_per_file=30, interval_s=2, seed=11, corrupt_every=7,
                           spike_rate=0.05)
    sim.write_files(datetime.now(tz=UTC) - timedelta(minutes=5), 2)
    sources = sorted(inbox.rglob("*.csv"))
    texts = {p.parent.name: p.read_text() for p in sources}
    config = tmp_path / "perfmon.conf"
    config.write_text(f'[perfmon]\nwatch_dir = "{inbox}"\nsettle_s = 0\nbatch_rows = 12\nsite = "crash"\n')
    starts = _end_offsets(settings)

    assert _run_cli(settings, config, point) == CRASH_EXIT_CODE, f"the watcher did not die at {point}"
    assert _run_cli(settings, config, None) == 0
    assert not [p for p in inbox.rglob("*.csv") if "done" not in p.parts], "files left in the inbox"

    topics = _read_since(settings, starts)
    got = [d for d in topics[names.TOPIC_READINGS] if d.get("device_id") == host]
    tz = timezone(timedelta(minutes=60))  # the simulator's default header offset is -60 (UTC+1)
    expected: list[tuple[str, int, str, float]] = []
    for text in texts.values():
        tmp = tmp_path / "oracle.csv"
        tmp.write_text(text)
        expected += _oracle(tmp, tz)
    ids = [d["event_id"] for d in got]
    RAW_DUPLICATES[point] = len(ids) - len(set(ids))
    print(f"{point}: {len(ids)} records in Kafka, {len(set(ids))} distinct event ids, "
          f"{RAW_DUPLICATES[point]} raw duplicates")
    distinct = {d["event_id"]: d for d in got}.values()
    assert len(distinct) == len(expected), "rows lost or invented"
    assert Counter((d["device_id"], d["ts"], _instance(d["metric"]), d["value"]) for d in distinct) == Counter(expected)
    assert RAW_DUPLICATES[point] == 0, "a crash produced a second copy of some rows"

    identities = {parse(t.encode()).identity for t in texts.values()}
    dead = [d for d in topics[names.TOPIC_DEAD_LETTER]
            if d.get("origin", "").startswith("perfmon:") and d["origin"].split(":")[1] in identities]
    corrupt = sum(t.count(CORRUPT_CELL) for t in texts.values())
    origins = [":".join(d["origin"].split(":", 3)[:3]) for d in dead]
    assert corrupt > 0 and len(origins) == len(set(origins)) == corrupt

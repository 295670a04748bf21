"""The shipped backfill flow, run as a user runs it (the CLI), on the test stack.

`ingest/history/sample.conf` puts the course dataset on 2024-01-01, older than the live buckets keep.
Loaded as the README's backfill (own topic, the window job in batch mode, the writer into the
`history` bucket) its windows and alerts are readable with `machinewatch query`; written into the live
buckets instead, every point is dead-lettered with the reason and none is counted as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from machinewatch import jobs, names, quality
from machinewatch.config import Settings
from machinewatch.stack import Stack
from tests.integration.conftest import require_free_slot
from tests.integration.pipeline_support import hop_windows
from tests.integration.test_course_dataset import course_readings
from tests.realdata import realdata_file
from tests.stack_support import read_topic
from tests.waiting import poll

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAY = "2024-01-01"  # sample.conf's base_date


def _cli(settings: Settings, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``machinewatch ARGS`` from the clone's root (where sample.conf's relative paths start), as a user runs it."""
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "machinewatch", *args], cwd=REPO, env=env, text=True,  # noqa: S603
                          capture_output=True, timeout=timeout, check=False)


def _rows(output: str, what: str) -> int:
    match = re.search(rf"^{what} \((\d+) rows", output, re.MULTILINE)
    return int(match[1]) if match else 0


def test_sample_history_config_backfills_into_the_history_bucket(stack: Stack, settings: Settings,
                                                                tmp_path: Path) -> None:
    data = realdata_file("servers/course-dataset-20-servers-5s.csv")  # sample.conf's file: skip without it
    load = _cli(settings, "ingest", "history", "--config", "ingest/history/sample.conf",
                "--state", str(tmp_path / "state.json"), "--no-progress")
    assert load.returncode == 0, load.stdout + load.stderr

    require_free_slot(settings)
    submitted = _cli(settings, "jobs", "submit", "window-aggregates", "--batch", "--history")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    state = poll(lambda: next((j["state"] for j in jobs.list_jobs(settings) if j["jid"] == job_id), "?"),
                 lambda s: s in {"FINISHED", "FAILED", "CANCELED"}, 600, "the backfill job to finish", every=3)
    assert state == "FINISHED"

    written = _cli(settings, "sink", "influxdb", "--history", "--idle-exit", "20")
    assert written.returncode == 0, written.stdout + written.stderr

    # Every window of every server and metric (batch mode: up to the file's end), in the history bucket.
    readings = course_readings(data, datetime.fromisoformat(DAY + "T00:00:00+00:00"))
    size_ms, slide_ms = settings.hop_size_s * 1000, settings.hop_slide_s * 1000
    want_sliding = len(hop_windows(readings, size_ms, slide_ms))
    want_tumbling = len(hop_windows(readings, settings.window_size_s * 1000, settings.window_size_s * 1000))
    span = ["--bucket", "history", "--start", DAY, "--stop", "2024-01-03", "--limit", "3"]
    sliding = _cli(settings, "query", *span, "--window", f"{settings.hop_size_s}s@{settings.hop_slide_s}s")
    assert _rows(sliding.stdout, "window aggregates") == want_sliding, sliding.stdout + sliding.stderr
    tumbling = _cli(settings, "query", *span, "--window", f"{settings.window_size_s}s")
    assert _rows(tumbling.stdout, "window aggregates") == want_tumbling, tumbling.stdout + tumbling.stderr
    alerts = _cli(settings, "query", "--alerts", *span)
    assert _rows(alerts.stdout, "threshold alerts") > 0, alerts.stdout + alerts.stderr

    # The same results into the live buckets (90 / 365 days): all dead-lettered, none counted as written.
    started = time.time() * 1000
    live = _cli(settings, "sink", "influxdb", "--idle-exit", "20", "--group-id", f"live-{job_id[:8]}",
                "--aggregates-topic", names.TOPIC_HISTORY_AGGREGATES, "--late-topic", names.TOPIC_HISTORY_LATE,
                "--alerts-topic", names.TOPIC_HISTORY_ALERTS)
    assert live.returncode == 0, live.stdout + live.stderr
    assert "written 0 points so far" in live.stderr, live.stderr[-2000:]
    letters = [d for d in read_topic(settings, names.TOPIC_DEAD_LETTER)
               if d.get("source") == "influx-writer" and d.get("received_ms", 0) >= started]
    refused = sum(len(quality.raw_bytes(d).split(b"\n")) for d in letters)
    results = sum(1 for topic in (names.TOPIC_HISTORY_AGGREGATES, names.TOPIC_HISTORY_ALERTS)
                  for _ in read_topic(settings, topic))
    assert results >= want_sliding + want_tumbling
    assert refused == results, f"{results} results, {refused} dead-lettered"
    assert all("older than bucket" in d["reason"] and "--history" in d["reason"] for d in letters)

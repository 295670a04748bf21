"""The benchmark's pieces without a stack: its readings are the core's encoding, the phases run in their order
with --skip and failures handled one by one, and the report renders the goals from the raw numbers."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench import phases, run
from bench.kafka_data import reading_json
from bench.report import Report, write_results
from machinewatch.record import Reading, make_event_id


def _former_reading_json(device: str, value: float, ts: int) -> bytes:
    # bench/run.py's own encoder before the split, kept here as the reference the core's must match.
    return json.dumps({
        "source": "bench", "region": f"r{hash(device) % 5}", "site": "line-a", "device_id": device,
        "metric": "temperature", "value": value, "unit": "°C", "orig_value": None, "orig_unit": None,
        "ts": ts, "event_id": make_event_id("bench", device, ts),
    }, separators=(",", ":")).encode()


@pytest.mark.parametrize(("device", "value", "ts"), [
    ("dev-000001", 55.123, 1_700_000_000_000), ("dev-999999", 95.0, 1_700_000_001_000),
    ("dev-000042", -3.5e-05, 1_700_000_002_500), ("dev-000007", 123456.789, 1_800_000_000_000),
])
def test_bench_readings_are_the_core_encoding_byte_for_byte(device: str, value: float, ts: int) -> None:
    payload = reading_json(device, value, ts)
    assert payload == _former_reading_json(device, value, ts)
    assert Reading.from_json(payload).to_json() == payload


def test_help_lists_every_phase_in_order() -> None:
    names = [name for name, _ in phases.PHASES]
    assert names == ["raw", "window", "overheat", "pipeline", "spark", "spark-overheat", "latency", "latency-wm",
                     "latency-spark", "disorder", "ingest", "influx", "dashboard", "scale", "capacity", "rollups"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        run.main(["--help"])
    assert done.value.code == 0
    # argparse wraps the help at hyphens too: compare without white space.
    assert "commalistof:" + ",".join(names) in "".join(out.getvalue().split())


def _run(tmp_path: Path) -> phases.Run:
    return phases.Run(settings=None, topic="t", events=10, args=argparse.Namespace(quick=True),  # type: ignore[arg-type]
                      latency_seconds=1, sampler=None, tmp=tmp_path, report=Report())  # type: ignore[arg-type]


def test_phases_run_in_order_skips_are_noted_and_a_failure_does_not_stop_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def ok(name: str) -> Any:
        return lambda r: ran.append(name)

    def broken(r: phases.Run) -> None:
        ran.append("b")
        msg = "no broker\nsecond line"
        raise RuntimeError(msg)

    monkeypatch.setattr(phases, "PHASES", (("a", ok("a")), ("b", broken), ("c", ok("c")), ("d", ok("d"))))
    r = _run(tmp_path)
    phases.run_phases(r, skip={"c"})
    assert ran == ["a", "b", "d"]
    assert r.report.notes == ["`c` skipped on request (--skip)."]
    assert r.report.rows == [("b", "FAILED", "–", "RuntimeError: no broker")]
    assert "no broker" in r.report.raw["errors"]["b"]


def test_the_report_renders_goals_from_the_raw_numbers(tmp_path: Path) -> None:
    report = Report()
    report.raw.update({
        "machine_before": {"cpu": "cpu", "ram": "1 GiB", "os": "Linux", "java": "java", "python": "3.11",
                           "load": "0.1"},
        "raw_consume": [{"msg_per_s": 100_000.0}], "window_job": {"events_per_s": 60_000.0},
        "pyspark": {"events_per_s": 30_000.0},
    })
    report.add("1 throughput", "window", "60,000")
    out = tmp_path / "RESULTS.md"
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    write_results(out, report, moment, moment, ["--quick"], 1000, argparse.Namespace(devices=10))
    text = out.read_text()
    assert "| … window job alone | 0.60× | yes |" in text
    assert "| throughput ≥ 3 × PySpark: window job vs its PySpark twin | 2.00× | no |" in text
    assert "| 1 throughput | window | 60,000 |  |" in text
    assert "- command: `python -m bench.run --quick`" in text


def test_raw_numbers_are_written_whole_and_compact() -> None:
    """RESULTS.md's raw numbers parse back to what the run measured, nothing cut off, samples packed per line."""
    from bench.report import compact_json

    raw = {"overheat_job": {"samples": [[19.9 + i, 1000 * i] for i in range(3000)], "complete": False},
           "dashboard_1000x24h": {"table": ["KPI fleet summary | 1 | 2 | 3"] * 11, "worst_p95_ms": 27139.0},
           "empty": {}, "none": [], "text": "x" * 300}
    text = compact_json(raw)
    assert json.loads(text) == raw
    assert len(text.splitlines()) < 1_000  # indented one number per line, the samples alone took 12,000

"""A Runner's Prometheus endpoint (machinewatch.metrics), scraped over HTTP with in-process doubles."""

from __future__ import annotations

import ast
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from machinewatch import metrics
from machinewatch.quality import reason_class
from machinewatch.runtime import Batch, Rejected, Runner, RunOptions, TransientError
from tests.unit.test_runtime import ListDeadLetters, ListSink, ScriptedSource

FAST = RunOptions(flush_interval_s=0.01, poll_timeout_s=0.01, retry_min_s=0.001, retry_max_s=0.004,
                  stop_timeout_s=0.2, stats_interval_s=0.05)
REPO = Path(__file__).resolve().parents[2]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    text = requests.get(url, timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def start(runner: Runner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def wait(done: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_a_running_runner_is_scraped_with_records_in_out_rejected_by_reason_lag_and_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_METRICS_PORT", "0")
    events: list[str] = []
    source = ScriptedSource([
        Batch([1, 2, -3], [Rejected(b"x", "not JSON"), Rejected(b"{", "line 12: value 'abc' is not a number")], 1),
        TransientError("broker away"),
        Batch([4, -5], [Rejected(b"y", "line 99: value 'zz' is not a number")], 2),
    ], events)
    source.lag = lambda: 7  # type: ignore[attr-defined]
    runner = Runner("health-test", source, ListSink(events), ListDeadLetters(events), FAST)
    before = time.time()
    thread = start(runner)
    try:
        wait(lambda: source.commits and source.commits[-1] == 2 and runner.metrics_url)
        assert runner.metrics_url is not None
        assert runner.metrics_url.startswith("http://127.0.0.1:")
        got = scrape(runner.metrics_url)
    finally:
        runner.stop()
        thread.join(10)
    r = (("runner", "health-test"),)
    assert got[("machinewatch_records_received_total", r)] == 8
    assert got[("machinewatch_records_written_total", r)] == 3
    assert got[("machinewatch_checkpoints_total", r)] == len(source.commits) >= 1
    assert got[("machinewatch_records_rejected_total", (("reason", "not JSON"), *r))] == 1
    # the two "not a number" letters differ only in line and value: one reason class
    assert got[("machinewatch_records_rejected_total", (("reason", "line N: value '…' is not a number"), *r))] == 2
    assert got[("machinewatch_records_rejected_total", (("reason", "negative value"), *r))] == 2
    assert got[("machinewatch_errors_total", (*r, ("step", "poll")))] == 1
    assert got[("machinewatch_errors_total", (*r, ("step", "flush")))] == 0
    assert got[("machinewatch_lag_records", r)] == 7
    for name in ("machinewatch_last_success_timestamp_seconds", "machinewatch_last_input_timestamp_seconds",
                 "machinewatch_runner_start_timestamp_seconds"):
        assert before <= got[(name, r)] <= time.time(), name


def test_off_by_default_and_the_endpoint_ends_with_the_last_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MW_METRICS_PORT", raising=False)
    events: list[str] = []
    runner = Runner("quiet", ScriptedSource([], events), ListSink(events), ListDeadLetters(events), FAST)
    runner.run(duration_s=0.05)
    assert runner.metrics_url is None and metrics.current() is None

    monkeypatch.setenv("MW_METRICS_PORT", "0")
    one = Runner("one", ScriptedSource([Batch([1], [], 1)], events), ListSink(events), ListDeadLetters(events), FAST)
    two = Runner("two", ScriptedSource([Batch([2, 3], [], 1)], events), ListSink(events), ListDeadLetters(events), FAST)
    threads = [start(one), start(two)]
    try:
        wait(lambda: one.counters.written == 1 and two.counters.written == 2 and one.metrics_url and two.metrics_url)
        assert one.metrics_url == two.metrics_url  # one server per process, a runner label each
        got = scrape(str(one.metrics_url))
        assert got[("machinewatch_records_written_total", (("runner", "one"),))] == 1
        assert got[("machinewatch_records_written_total", (("runner", "two"),))] == 2
        one.stop()
        threads[0].join(10)
        got = scrape(str(two.metrics_url))
        assert ("machinewatch_records_written_total", (("runner", "one"),)) not in got
    finally:
        two.stop()
        for t in threads:
            t.join(10)
    assert metrics.current() is None
    with pytest.raises(requests.ConnectionError):
        requests.get(str(two.metrics_url), timeout=2)


def test_a_taken_port_and_a_bad_value_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("MW_METRICS_PORT", str(port))
        runner = Runner("busy", ScriptedSource([], events), ListSink(events), ListDeadLetters(events), FAST)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}.*MW_METRICS_PORT"):
            runner.run(duration_s=0.05)
    monkeypatch.setenv("MW_METRICS_PORT", "ninety")
    with pytest.raises(RuntimeError, match="MW_METRICS_PORT='ninety'"):
        Runner("bad", ScriptedSource([], events), ListSink(events), ListDeadLetters(events), FAST).run(duration_s=0.05)
    assert metrics.current() is None


def test_reason_classes_are_few_and_bounded() -> None:
    assert reason_class("event time 2026-01-01T00:00:00+00:00 is 3600 s in the future (max_future_skew_s=300)") == (
        "event time N is N s in the future (max_future_skew_s=N)")
    same = reason_class("duplicate event_id a1b2: sent already")
    assert same == reason_class("duplicate event_id ff09: sent already")
    assert reason_class("metric 'temp': bad\nsecond line") == "metric '…': bad"
    assert reason_class("") == "(no reason)"
    assert len(reason_class("x" * 500)) == 100


def test_many_reason_classes_end_in_other() -> None:
    from machinewatch.runtime import MAX_REASONS

    events: list[str] = []
    letters = [Rejected(b"x", f"reason {chr(65 + i % 26)}{chr(65 + i // 26)}") for i in range(MAX_REASONS + 10)]
    source = ScriptedSource([Batch([], letters, 1)], events)
    runner = Runner("many", source, ListSink(events), ListDeadLetters(events), FAST)
    start_ = start(runner)
    wait(lambda: source.commits)
    runner.stop()
    start_.join(10)
    by_reason = runner.counters.rejected_by_reason
    assert len(by_reason) == MAX_REASONS + 1 and by_reason["other"] == 10


def test_metrics_is_core_and_imports_the_client_only_when_asked() -> None:
    tree = ast.parse((REPO / "machinewatch" / "metrics.py").read_text())
    top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert not any(m.startswith("prometheus_client") for m in top), top
    assert not any(m.split(".")[0] in {"ingest", "sinks", "simulators", "flink_jobs", "dashboards"} for m in top)

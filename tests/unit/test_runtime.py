"""The connector runner with in-process doubles: flush-then-checkpoint, retries, dead letters, counters, signals."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from machinewatch.runtime import Backoff, Batch, Rejected, Runner, RunOptions, Sink, Source, TransientError

FAST = RunOptions(flush_interval_s=0.01, poll_timeout_s=0.01, retry_min_s=0.001, retry_max_s=0.004,
                  stop_timeout_s=0.2, stats_interval_s=0.05)


class ScriptedSource:
    """Hands out the given batches one per poll (then nothing), numbering checkpoints; logs every call."""

    name = "scripted"

    def __init__(self, batches: list[Batch | Exception], events: list[str]) -> None:
        self.batches = list(batches)
        self.events = events
        self.commits: list[object] = []
        self.closed = False

    def open(self) -> None:
        self.events.append("open")

    def poll(self, timeout_s: float) -> Batch:
        if not self.batches:
            time.sleep(timeout_s)
            return Batch()
        item = self.batches.pop(0)
        if isinstance(item, Exception):
            raise item
        self.events.append(f"poll {item.checkpoint}")
        return item

    def commit(self, checkpoint: object) -> None:
        self.events.append(f"commit {checkpoint}")
        self.commits.append(checkpoint)

    def close(self) -> None:
        self.closed = True


class ListSink:
    """Refuses records whose value is negative; ``flush`` fails ``fail_flushes`` times first."""

    def __init__(self, events: list[str], fail_flushes: int = 0) -> None:
        self.events = events
        self.fail_flushes = fail_flushes
        self.pending: list[Any] = []
        self.durable: list[Any] = []
        self.closed = False

    def write(self, records: Sequence[Any]) -> list[Rejected]:
        refused = [Rejected(repr(r).encode(), "negative value", origin="sink") for r in records if r < 0]
        self.pending += [r for r in records if r >= 0]
        self.events.append(f"write {len(records)}")
        return refused

    def flush(self) -> None:
        if self.fail_flushes:
            self.fail_flushes -= 1
            self.events.append("flush failed")
            msg = "broker away"
            raise TransientError(msg)
        self.durable += self.pending
        self.pending = []
        self.events.append("flush")

    def close(self) -> None:
        self.closed = True


class ListDeadLetters:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.letters: list[tuple[str, Rejected]] = []

    def send(self, source: str, rejected: Rejected) -> None:
        self.letters.append((source, rejected))

    def flush(self) -> None:
        self.events.append("dead letters flush")


def run_until(runner: Runner, done: Any, timeout: float = 10.0) -> threading.Thread:
    """Run in a thread (no signal handlers there), stop once ``done()``; returns the joined thread."""
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.005)
    runner.stop()
    thread.join(timeout)
    assert not thread.is_alive()
    return thread


def test_the_doubles_satisfy_the_contract() -> None:
    events: list[str] = []
    assert isinstance(ScriptedSource([], events), Source)
    assert isinstance(ListSink(events), Sink)


def test_checkpoint_is_committed_only_after_sink_and_dead_letters_flushed() -> None:
    events: list[str] = []
    source = ScriptedSource([Batch([1, 2], [], 1), Batch([3], [Rejected(b"\xff", "not JSON")], 2)], events)
    sink = ListSink(events)
    runner = Runner("t", source, sink, ListDeadLetters(events), FAST)
    run_until(runner, lambda: source.commits and source.commits[-1] == 2)
    for n, event in enumerate(events):
        if event.startswith("commit"):
            assert events[n - 2:n] == ["flush", "dead letters flush"], events
    assert sink.durable == [1, 2, 3]
    assert source.closed and sink.closed
    assert runner.counters.written == 3
    assert runner.counters.received == 4
    assert runner.counters.rejected == 1


def test_a_failing_flush_is_retried_and_nothing_is_committed_until_it_succeeds() -> None:
    events: list[str] = []
    source = ScriptedSource([Batch([1], [], 1), Batch([2], [], 2)], events)
    sink = ListSink(events, fail_flushes=3)
    runner = Runner("t", source, sink, ListDeadLetters(events), FAST)
    run_until(runner, lambda: source.commits and source.commits[-1] == 2)
    first_commit = events.index(next(e for e in events if e.startswith("commit")))
    assert events[:first_commit].count("flush failed") == 3
    assert "commit" not in " ".join(events[:first_commit])
    assert runner.counters.retries == 3
    assert sink.durable == [1, 2]


def test_rejects_of_source_and_sink_are_dead_lettered_with_their_exact_bytes() -> None:
    events: list[str] = []
    raw = b"\x00\xffnot json\n"
    source = ScriptedSource([Batch([5, -1], [Rejected(raw, "not JSON", "mqtt://t/a", size=None)], 1)], events)
    dead = ListDeadLetters(events)
    runner = Runner("t", source, ListSink(events), dead, FAST)
    run_until(runner, lambda: source.commits)
    assert [(s, r.raw, r.reason) for s, r in dead.letters] == [
        ("scripted", raw, "not JSON"), ("scripted", b"-1", "negative value")]
    assert (runner.counters.written, runner.counters.rejected) == (1, 2)


def test_a_full_batch_is_flushed_before_the_interval() -> None:
    events: list[str] = []
    source = ScriptedSource([Batch(list(range(10)), [], 1)], events)
    options = FAST.model_copy(update={"flush_interval_s": 3600, "max_batch": 10})
    runner = Runner("t", source, ListSink(events), ListDeadLetters(events), options)
    run_until(runner, lambda: source.commits, timeout=5)
    assert source.commits == [1]


def test_stop_flushes_and_commits_what_was_polled() -> None:
    events: list[str] = []
    source = ScriptedSource([Batch([1], [], 7)], events)
    options = FAST.model_copy(update={"flush_interval_s": 3600})
    runner = Runner("t", source, ListSink(events), ListDeadLetters(events), options)
    run_until(runner, lambda: "poll 7" in events)
    assert source.commits == [7]
    assert runner.counters.written == 1


def test_the_last_flush_gives_up_after_stop_timeout_and_commits_nothing() -> None:
    events: list[str] = []
    source = ScriptedSource([Batch([1], [], 1)], events)
    sink = ListSink(events, fail_flushes=10**6)
    options = FAST.model_copy(update={"flush_interval_s": 3600, "stop_timeout_s": 0.05})
    runner = Runner("t", source, sink, ListDeadLetters(events), options)
    started = time.monotonic()
    run_until(runner, lambda: "poll 1" in events)
    assert source.commits == []
    assert runner.counters.written == 0
    assert time.monotonic() - started < 5


def test_a_transient_poll_failure_is_retried_and_other_errors_end_the_run_closing_both_ends() -> None:
    events: list[str] = []
    source = ScriptedSource([ConnectionResetError("gone"), Batch([1], [], 1)], events)
    runner = Runner("t", source, ListSink(events), ListDeadLetters(events), FAST)
    run_until(runner, lambda: source.commits)
    assert runner.counters.retries == 1

    source = ScriptedSource([ValueError("a bug")], events)
    sink = ListSink(events)
    with pytest.raises(ValueError, match="a bug"):
        Runner("t", source, sink, ListDeadLetters(events), FAST).run()
    assert source.closed and sink.closed


def test_sigterm_stops_gracefully_and_the_previous_handlers_come_back() -> None:
    events: list[str] = []
    source = ScriptedSource([Batch([1], [], 1)], events)
    options = FAST.model_copy(update={"flush_interval_s": 3600})
    runner = Runner("t", source, ListSink(events), ListDeadLetters(events), options)
    before = signal.getsignal(signal.SIGTERM)

    def kill_after_poll() -> None:
        while "poll 1" not in events:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_after_poll, daemon=True).start()
    counters = runner.run(duration_s=10)  # the main thread: the runner takes SIGTERM itself
    assert source.commits == [1]
    assert counters.written == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_duration_ends_the_run() -> None:
    events: list[str] = []
    runner = Runner("t", ScriptedSource([], events), ListSink(events), ListDeadLetters(events), FAST)
    started = time.monotonic()
    counters = runner.run(duration_s=0.1)
    assert 0.1 <= time.monotonic() - started < 5
    assert counters.received == 0


def test_counters_line_is_one_format_and_lag_comes_from_the_source() -> None:
    events: list[str] = []
    source = ScriptedSource([], events)
    source.lag = lambda: 42  # type: ignore[attr-defined]
    runner = Runner("t", source, ListSink(events), ListDeadLetters(events), FAST)
    runner.run(duration_s=0.2)
    assert runner.counters.lag == 42
    assert runner.counters.line() == ("received 0, written 0, rejected 0, checkpoints 0, retries 0, lag 42")


def test_backoff_doubles_up_to_its_limit_and_resets() -> None:
    backoff = Backoff(0.5, 3)
    assert [backoff.next() for _ in range(5)] == [0.5, 1, 2, 3, 3]
    backoff.reset()
    assert backoff.next() == 0.5


def test_run_options_refuse_a_minimum_above_the_maximum() -> None:
    with pytest.raises(ValueError, match="retry_min_s"):
        RunOptions(retry_min_s=10, retry_max_s=1)


def test_idle_exit_ends_the_run_once_the_source_has_been_quiet_that_long() -> None:
    events: list[str] = []
    source = ScriptedSource([Batch([1], [], 1)], events)
    runner = Runner("t", source, ListSink(events), ListDeadLetters(events), FAST)
    started = time.monotonic()
    counters = runner.run(idle_exit_s=0.2)
    assert 0.2 <= time.monotonic() - started < 5
    assert source.commits == [1] and counters.written == 1  # the last flush and checkpoint still happen


def test_a_given_stop_event_stops_the_run_and_is_what_stop_sets() -> None:
    events: list[str] = []
    stop = threading.Event()
    runner = Runner("t", ScriptedSource([Batch([1], [], 1)], events), ListSink(events), ListDeadLetters(events),
                    FAST, stop_event=stop)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    while "poll 1" not in events:
        time.sleep(0.005)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and runner.stopping
    runner2 = Runner("t", ScriptedSource([], events), ListSink(events), ListDeadLetters(events), FAST,
                     stop_event=threading.Event())
    runner2.stop()
    assert runner2.stopping


class FiniteSource(ScriptedSource):
    """Says it is finished once its batches are handed out (a file read to its end)."""

    @property
    def finished(self) -> bool:
        return not self.batches


def test_a_finished_source_ends_the_run_after_a_last_flush_and_commit() -> None:
    events: list[str] = []
    source = FiniteSource([Batch([1], [], 1), Batch([2, 3], [], 2)], events)
    sink = ListSink(events)
    runner = Runner("t", source, sink, ListDeadLetters(events), FAST)
    started = time.monotonic()
    counters = runner.run(duration_s=10)  # ends by itself, long before the duration
    assert time.monotonic() - started < 5
    assert sink.durable == [1, 2, 3] and source.commits[-1] == 2 and counters.written == 3
    assert events[-3:] == ["flush", "dead letters flush", "commit 2"]
    assert source.closed


class DrainingSource(ScriptedSource):
    """Keeps ``held`` back until ``stop_input``: what a listener took in but the runner has not polled yet."""

    def __init__(self, held: list[Batch], events: list[str]) -> None:
        super().__init__([], events)
        self.held = held

    def stop_input(self) -> None:
        self.events.append("stop input")
        self.batches += self.held


def test_stop_input_is_called_and_what_the_source_held_is_delivered_before_the_last_flush() -> None:
    events: list[str] = []
    source = DrainingSource([Batch([4], [], 1), Batch([5], [], 2)], events)
    sink = ListSink(events)
    runner = Runner("t", source, sink, ListDeadLetters(events), FAST)
    run_until(runner, lambda: "open" in events)
    assert sink.durable == [4, 5] and source.commits[-1] == 2
    assert events.index("stop input") < events.index("poll 1")


def test_a_reject_naming_its_own_source_is_dead_lettered_under_that_source() -> None:
    events: list[str] = []
    source = FiniteSource([Batch([], [Rejected(b"x", "bad", source="dc-usa"), Rejected(b"y", "bad")], 1)], events)
    letters = ListDeadLetters(events)
    Runner("t", source, ListSink(events), letters, FAST).run(duration_s=10)
    assert [name for name, _ in letters.letters] == ["dc-usa", "scripted"]


class TellingSource(FiniteSource):
    def __init__(self, batches: list[Batch | Exception], events: list[str]) -> None:
        super().__init__(batches, events)
        self.told: list[Rejected] = []

    def refused(self, rejected: list[Rejected]) -> None:
        self.events.append(f"refused {len(rejected)}")
        self.told += rejected


def test_a_source_with_refused_is_told_what_the_sink_refused_before_it_is_dead_lettered() -> None:
    events: list[str] = []
    source = TellingSource([Batch([1, -2, -3], [], 1)], events)
    letters = ListDeadLetters(events)
    Runner("t", source, ListSink(events), letters, FAST).run(duration_s=10)
    assert [r.reason for r in source.told] == ["negative value", "negative value"]
    assert [r for _, r in letters.letters] == source.told
    assert "refused 2" in events


class BackgroundSink(ListSink):
    """Refuses negative values only when flushed, as a sink writing in the background learns of them late."""

    def write(self, records: Sequence[Any]) -> list[Rejected]:
        self.pending += list(records)
        self.events.append(f"write {len(records)}")
        return []

    def flush(self) -> list[Rejected]:  # type: ignore[override]
        refused = [Rejected(repr(r).encode(), "refused in the background") for r in self.pending if r < 0]
        self.durable += [r for r in self.pending if r >= 0]
        self.pending = []
        self.events.append("flush")
        return refused


def test_what_a_background_sink_refused_by_its_flush_is_dead_lettered_before_the_commit() -> None:
    events: list[str] = []
    source = ScriptedSource([Batch([4, -2, 7], [], 1)], events)
    dead = ListDeadLetters(events)
    runner = Runner("t", source, BackgroundSink(events), dead, FAST)
    run_until(runner, lambda: source.commits)
    assert [(s, r.raw, r.reason) for s, r in dead.letters] == [("scripted", b"-2", "refused in the background")]
    assert events[events.index("commit 1") - 2:events.index("commit 1")] == ["flush", "dead letters flush"]
    assert (runner.counters.written, runner.counters.rejected) == (2, 1)

"""Running a collector's ``runtime.Source`` in-process on the real ``Runner``, into in-memory doubles.

``drive(source, sink)`` takes the old tests' sink shape (``send``, ``dead_letter``, ``flush``) so their
assertions read the same; ``run_in_thread`` gives a runner running a long-lived source (a listener).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from machinewatch.runtime import Rejected, Runner, RunOptions, Source

FAST = RunOptions(flush_interval_s=0.05, poll_timeout_s=0.05, retry_min_s=0.01, retry_max_s=0.05,
                  stop_timeout_s=5)


class LegacySink:
    """A ``runtime.Sink`` and ``DeadLetterOutput`` over an object with ``send``/``dead_letter``/``flush``."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self._refused: set[int] = set()  # refusals the target dead-lettered itself, as the Publisher does

    def write(self, records: Sequence[Any]) -> list[Rejected]:
        from machinewatch.kafka_io import QualityNote

        refused: list[Rejected] = []
        for record in records:
            if isinstance(record, QualityNote):
                self.target.note(record.source, record.kind, record.raw, record.reason, record.origin,
                                 record.note_id)
                continue
            before = getattr(self.target, "dead_lettered", None)
            self.target.send(record)
            if before is not None and self.target.dead_lettered > before:
                rejected = Rejected(record.to_json(), "refused by the publisher", record.device_id)
                self._refused.add(id(rejected))
                refused.append(rejected)
        return refused

    def send(self, source: str, rejected: Rejected) -> None:
        if id(rejected) in self._refused:
            self._refused.discard(id(rejected))
            return
        extra = {"size": rejected.size} if rejected.size is not None else {}
        self.target.dead_letter(source, rejected.raw, rejected.reason, rejected.origin, **extra)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        pass


class _LegacyDeadLetters:
    """The dead-letter side of a ``LegacySink``: its target's one ``flush`` covers both, as the Publisher's does."""

    def __init__(self, sink: LegacySink) -> None:
        self.sink = sink

    def send(self, source: str, rejected: Rejected) -> None:
        self.sink.send(source, rejected)

    def flush(self) -> None:
        pass


def runner_for(source: Source, target: Any, options: RunOptions = FAST) -> Runner:
    adapter = LegacySink(target)
    return Runner(source.name, source, adapter, _LegacyDeadLetters(adapter), options)


def drive(source: Source, target: Any, options: RunOptions = FAST, timeout_s: float = 600) -> Any:
    """Run a finite source to its end; returns the source (its counters, its report). What ends the run with an
    error is raised here; a run still going after ``timeout_s`` (a flush retried for ever) is stopped and fails.

    ``target``: a ``machinewatch.kafka_io.Publisher`` (the runner ``run_collector`` builds), or an object with
    ``send``/``dead_letter``/``flush``."""
    from machinewatch.kafka_io import Publisher

    if isinstance(target, Publisher):
        runner = kafka_runner(source, target, KAFKA if options is FAST else options)
    else:
        runner = runner_for(source, target, options)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        runner.stop()
        thread.join(60)
    if failure:
        raise failure[0]
    assert getattr(source, "finished", False), f"the source did not finish within {timeout_s} s"
    return source


def run_in_thread(source: Source, target: Any, options: RunOptions = FAST) -> tuple[Runner, threading.Thread]:
    runner = runner_for(source, target, options)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread


# Against Kafka: the default batching (a flush waits for the broker's acknowledgements), quick polls.
KAFKA = RunOptions(poll_timeout_s=0.1, retry_min_s=0.1, retry_max_s=2.0)


def kafka_runner(source: Source, publisher: Any, options: RunOptions = KAFKA) -> Runner:
    """The runner ``run_collector`` builds, on a given publisher: readings to its topic, rejects dead-lettered.

    The publisher stays open when the run ends (``run_collector``'s sink closes its own): the caller owns it."""
    from machinewatch.kafka_io import KafkaDeadLetters, PublisherSink

    class BorrowedPublisherSink(PublisherSink):
        def close(self) -> None:
            pass

    return Runner(source.name, source, BorrowedPublisherSink(publisher), KafkaDeadLetters(publisher), options)


class PerfmonWatcher:
    """The PerfMon source in the old tests' shape: ``run_once()`` / ``process(path)`` run it on the runner (``--once``)
    into ``publisher`` (a real ``Publisher``, or a double with ``send``/``dead_letter``/``note``/``flush``).

    A double whose ``flush`` raises a non-transient error ends the run (the real sink's ``TransientError`` would be
    retried until stopped); either way the file whose batch was not committed is reported ``retry``."""

    def __init__(self, config: Any, settings: Any, publisher: Any = None, *, config_path: Any = None,
                 overrides: dict[str, Any] | None = None) -> None:
        from ingest.perfmon.watcher import PerfmonSource

        self.source = PerfmonSource(config, settings, config_path=config_path, overrides=overrides, once=True)
        self.settings = settings
        self.publisher = publisher

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def setup(self) -> None:
        self.source.setup()

    def _run(self) -> list[Any]:
        from machinewatch.kafka_io import Publisher

        if self.publisher is None:
            with Publisher(self.settings) as publisher:
                return self._run_on(kafka_runner(self.source, publisher))
        if isinstance(self.publisher, Publisher):
            runner = kafka_runner(self.source, self.publisher)
        else:
            runner = runner_for(self.source, self.publisher)
        return self._run_on(runner)

    def _run_on(self, runner: Runner) -> list[Any]:
        # A double's flush failing for good ends the run: the source reported the file as 'retry' when closed.
        with contextlib.suppress(RuntimeError):
            runner.run(duration_s=600)
        return self.source.outcomes

    def run_once(self) -> list[Any]:
        self.source._given = None
        return self._run()

    def process(self, path: Any) -> Any:
        self.source._given = [path]
        (outcome,) = self._run()
        return outcome

    def stop(self) -> None:
        pass


class HistoryLoader:
    """The history source in the old tests' shape: ``HistoryLoader(sink, mapping, state, ...).load(path)`` runs it
    on the runner into ``sink`` (a ``Publisher``, or a double with ``send``/``dead_letter``/``note``/``flush``) and
    returns the file's ``LoadReport``; what ends the run (a failed flush of a double, a refusing guard) is raised."""

    def __init__(self, sink: Any, mapping: Any, state: Any, chunk_rows: int = 5000, progress: bool = True,
                 guard: Any = None) -> None:
        from ingest.history.loader import load_key

        self.sink, self.mapping, self.state = sink, mapping, state
        self.chunk_rows, self.progress, self.guard = chunk_rows, progress, guard
        self.load_key, self.options = load_key(mapping, sink.topic)

    def load(self, path: Any, force: bool = False) -> Any:
        from ingest.history.loader import HistorySource

        if not path.exists():
            msg = f"no such file: {path}"
            raise FileNotFoundError(msg)
        source = HistorySource(self.mapping, [path], self.state, self.sink.topic, self.chunk_rows, self.progress,
                               self.guard, force, max_future_ms=self.sink.max_future_ms)
        drive(source, self.sink)
        (report,) = source.reports
        return report

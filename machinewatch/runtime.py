"""The connector contract (a Source emits records, a Sink writes them) and the one runner that moves them.

A *Source* hands out batches of typed records (``Reading`` …), the input it could not turn into records
(``Rejected``: the reason and the exact bytes) and a *checkpoint*: an opaque token saying how far the
batch goes. A *Sink* writes records and returns the ones it refused, again as ``Rejected``; its
``flush()`` makes everything written so far durable, or raises ``TransientError`` (and is called again).

``Runner`` owns the lifecycle, the same for every connector:

* SIGTERM / SIGINT stop it gracefully (a second one ends the process at once);
* flush-then-checkpoint: the source's checkpoint is committed only after the sink *and* the dead letters
  were flushed, so a crash can repeat records (with the same event ids) but never lose one;
* transient failures (``TransientError``, ``OSError``) of the source or the sink are retried with a
  doubling back-off; nothing new is polled while a flush is failing (back-pressure);
* rejected input goes to the dead-letter output with its reason and exact bytes, never stopping the run;
* counters (received, written, rejected, checkpoints, retries, lag) are logged in one format for all, and
  exported for Prometheus when MW_METRICS_PORT is set (``machinewatch.metrics``).

This module is part of the core: it imports nothing of Kafka, of a stage or of the composition root.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from machinewatch import metrics
from machinewatch.quality import reason_class

log = logging.getLogger(__name__)


class TransientError(RuntimeError):
    """A failure worth retrying (a broker away, a write not acknowledged): the runner backs off and retries."""


class Record(Protocol):
    """What a sink can write: a typed record that serialises itself (``Reading``, ``DeviceEvent``)."""

    def to_json(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that did not become a record, or a record a sink refused: why, and the exact bytes.

    ``size`` is the original's length when ``raw`` holds only its head (an oversize message). ``source`` names
    the dead letter's source when it is not the connector's own (a collector's mapping, e.g. ``dc-usa``).
    """

    raw: bytes | str
    reason: str
    origin: str = ""
    size: int | None = None
    source: str = ""


@dataclass(slots=True)
class Batch:
    """What one ``Source.poll`` returns; ``checkpoint`` None when the batch moved nothing on."""

    records: list[Any] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    checkpoint: object | None = None

    def __len__(self) -> int:
        return len(self.records) + len(self.rejected)


@runtime_checkable
class Source(Protocol):
    """Where records come from: a collector's transport, or a Kafka consumer.

    ``name`` is the ``source`` of its dead letters. ``open()`` connects and loads state; ``poll()`` waits at
    most ``timeout_s`` and returns what arrived (possibly nothing); ``commit(checkpoint)`` is called with the
    latest checkpoint once everything polled up to it is durable downstream (acknowledge upstream, commit
    offsets, save a cursor); ``close()`` releases everything, without committing.

    Two optional members (looked up with ``getattr``, so the protocol stays four methods):

    * ``finished`` (bool): a finite source (a file, an archive) sets it once its input is exhausted; the runner
      then flushes, commits and ends the run.
    * ``stop_input()``: called when the run is stopping, before the last flush; the source stops taking input
      (closes a listening socket) and the runner polls until a batch comes back empty, so what the source
      has already taken in is delivered, not dropped.
    * ``refused(rejected)``: told what the sink refused of the last batch (before it is dead-lettered), for a
      source whose report counts it (the history loader's summary).
    """

    name: str

    def open(self) -> None: ...

    def poll(self, timeout_s: float) -> Batch: ...

    def commit(self, checkpoint: object) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where records go. ``write`` returns what it refused (errors as data); ``flush`` makes every record
    written so far durable or raises ``TransientError`` (called again, it retries what is not durable yet).
    A sink that writes in the background returns from ``flush`` what it refused since (dead-lettered before the
    commit); others return None."""

    def write(self, records: Sequence[Any]) -> list[Rejected]: ...

    def flush(self) -> list[Rejected] | None: ...

    def close(self) -> None: ...


class DeadLetterOutput(Protocol):
    """Where rejected input goes (``machinewatch.kafka_io.KafkaDeadLetters``: the dead-letter topic)."""

    def send(self, source: str, rejected: Rejected) -> None: ...

    def flush(self) -> None: ...


class RunOptions(BaseModel):
    """How the runner batches and retries; a plugin's ``[<name>.runner]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flush_interval_s: float = Field(default=0.5, gt=0, le=3600,
                                    description="longest time a record waits before a flush")
    max_batch: int = Field(default=5000, ge=1, description="records (and rejects) that make a flush due at once")
    poll_timeout_s: float = Field(default=0.5, gt=0, le=60, description="longest single wait for the source")
    retry_min_s: float = Field(default=0.5, gt=0, le=60, description="first back-off after a transient failure")
    retry_max_s: float = Field(default=30.0, gt=0, le=3600, description="longest back-off")
    stop_timeout_s: float = Field(default=30.0, ge=0, le=3600,
                                  description="on stop: how long the last flush is retried before giving up")
    stats_interval_s: float = Field(default=60.0, gt=0, description="how often the counters are logged")

    @model_validator(mode="after")
    def _retry_order(self) -> RunOptions:
        if self.retry_min_s > self.retry_max_s:
            msg = f"retry_min_s ({self.retry_min_s}) is larger than retry_max_s ({self.retry_max_s})"
            raise ValueError(msg)
        return self


@dataclass
class Counters:
    """What a run did so far; ``line()`` is the one format every connector logs."""

    received: int = 0     # records and rejects the source produced
    written: int = 0      # records the sink accepted and made durable
    rejected: int = 0     # dead letters: rejected by the source or refused by the sink
    checkpoints: int = 0  # commits to the source
    retries: int = 0      # transient failures retried
    lag: int | None = None  # what the source says is waiting (None: it does not say)
    # For the metrics endpoint, not the log line: dead letters by quality.reason_class (at most
    # MAX_REASONS classes, then "other"), transient failures by step, wall-clock times (time.time()).
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    last_input: float | None = None    # the last batch that held anything
    last_success: float | None = None  # the last flush-then-checkpoint that succeeded

    def line(self) -> str:
        text = (f"received {self.received}, written {self.written}, rejected {self.rejected}, "
                f"checkpoints {self.checkpoints}, retries {self.retries}")
        return text if self.lag is None else f"{text}, lag {self.lag}"


MAX_REASONS = 50  # reason classes counted apart; a label per class must not grow without bound


class Backoff:
    """Doubling waits between ``min_s`` and ``max_s``; ``reset()`` after a success."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.delay = min_s

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.delay = self.min_s


_TRANSIENT: tuple[type[BaseException], ...] = (TransientError, OSError)


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Runner:
    """Moves records from one source to one sink until stopped: ``Runner(...).run()``.

    ``stop()`` (or SIGTERM/SIGINT while ``run`` holds the main thread) ends it gracefully: what was polled
    is flushed and checkpointed, then source and sink are closed. ``stop_event``, when given, is the event
    ``stop()`` sets: a sink that waits (a retry until a server is back) can wait on it and wake up to stop.
    """

    def __init__(self, name: str, source: Source, sink: Sink, dead_letters: DeadLetterOutput,
                 options: RunOptions | None = None, *, clock: Callable[[], float] = time.monotonic,
                 stop_event: threading.Event | None = None) -> None:
        self.name = name
        self.source = source
        self.sink = sink
        self.dead_letters = dead_letters
        self.options = options or RunOptions()
        self.counters = Counters()
        self.started_at: float | None = None   # wall time run() began
        self.metrics_url: str | None = None    # the Prometheus endpoint, when MW_METRICS_PORT is set
        self._clock = clock
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._signals = 0
        self._pending = 0                      # records and rejects taken since the last checkpoint
        self._pending_written = 0              # of which records the sink accepted
        self._pending_since: float | None = None
        self._checkpoint: object | None = None
        self._last_stats = clock()
        self._last_input = clock()
        self._poll_backoff = Backoff(self.options.retry_min_s, self.options.retry_max_s)

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the run to end after a last flush and checkpoint (safe from any thread or signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, duration_s: float | None = None, idle_exit_s: float | None = None) -> Counters:
        """Run until ``stop()``, a signal, ``duration_s``, or ``idle_exit_s`` without input from the source
        (counted from the start, then from the last batch that held anything); returns the counters."""
        deadline = None if duration_s is None else self._clock() + duration_s
        self._last_input = self._clock()
        with self._signals_stop(), metrics.exporting(self):
            try:
                self._open()
                while not self._stop.is_set():
                    if deadline is not None and self._clock() >= deadline:
                        break
                    if idle_exit_s is not None and self._clock() - self._last_input > idle_exit_s:
                        log.info("%s: nothing received for %g s: stopping", self.name, idle_exit_s)
                        break
                    self._poll_once()
                    if self._flush_due():
                        self._flush_and_commit(final=False)
                    self._maybe_log_stats()
                    if getattr(self.source, "finished", False):
                        log.info("%s: input exhausted", self.name)
                        break
                self._drain_input()
                self._flush_and_commit(final=True)
            finally:
                self._close()
        log.info("%s stopped: %s", self.name, self.counters.line())
        return self.counters

    # ------------------------------------------------------------------ steps

    def _open(self) -> None:
        backoff = Backoff(self.options.retry_min_s, self.options.retry_max_s)
        while not self._stop.is_set():
            try:
                self.source.open()
                return
            except _TRANSIENT as exc:
                self._retry("open", exc, backoff)

    def _drain_input(self) -> None:
        """Stopping: a source with ``stop_input`` stops taking input; what it took in already is polled."""
        stop_input = getattr(self.source, "stop_input", None)
        if not callable(stop_input):
            return
        try:
            stop_input()
        except Exception as exc:  # noqa: BLE001 - what was polled so far is still flushed and committed
            log.warning("%s: stopping the source's input failed: %s", self.name, _describe(exc))
            return
        give_up = self._clock() + self.options.stop_timeout_s
        while self._clock() < give_up and self._poll_once():
            if self._flush_due():
                self._flush_and_commit(final=False)

    def _poll_once(self) -> int:
        """One poll; returns how many records and rejects it took."""
        timeout = self.options.poll_timeout_s
        if self._pending_since is not None:
            due = self._pending_since + self.options.flush_interval_s - self._clock()
            timeout = max(0.0, min(timeout, due))
        try:
            batch = self.source.poll(timeout)
        except _TRANSIENT as exc:
            self._retry("poll", exc, self._poll_backoff)
            return 0
        self._poll_backoff.reset()
        if not len(batch) and batch.checkpoint is None:
            return 0
        if len(batch):
            self._last_input = self._clock()
            self.counters.last_input = time.time()
        self.counters.received += len(batch)
        for rejected in batch.rejected:
            self._dead_letter(rejected)
        if batch.records:
            refused = self.sink.write(batch.records)
            tell = getattr(self.source, "refused", None)
            if refused and callable(tell):
                tell(refused)
            for rejected in refused:
                self._dead_letter(rejected)
            self._pending_written += len(batch.records) - len(refused)
        if batch.checkpoint is not None:
            self._checkpoint = batch.checkpoint
        self._pending += max(len(batch), 1)
        if self._pending_since is None:
            self._pending_since = self._clock()
        return len(batch)

    def _dead_letter(self, rejected: Rejected) -> None:
        self.counters.rejected += 1
        by_reason = self.counters.rejected_by_reason
        kind = reason_class(rejected.reason)
        kind = kind if kind in by_reason or len(by_reason) < MAX_REASONS else "other"
        by_reason[kind] = by_reason.get(kind, 0) + 1
        self.dead_letters.send(rejected.source or self.source.name, rejected)

    def _flush_due(self) -> bool:
        if self._pending_since is None:
            return False
        return (self._pending >= self.options.max_batch
                or self._clock() - self._pending_since >= self.options.flush_interval_s)

    def _flush_and_commit(self, final: bool) -> None:
        """Flush the sink and the dead letters, then commit the checkpoint; retried while it fails.

        On the final flush (stopping) it is retried for ``stop_timeout_s`` at most; then nothing is committed
        and the source delivers those records again on the next start.
        """
        if self._pending_since is None:
            return
        backoff = Backoff(self.options.retry_min_s, self.options.retry_max_s)
        give_up = self._clock() + self.options.stop_timeout_s if final else None
        while True:
            try:
                for rejected in self.sink.flush() or ():
                    self._dead_letter(rejected)
                    self._pending_written -= 1
                self.dead_letters.flush()
                if self._checkpoint is not None:
                    self.source.commit(self._checkpoint)
                    self.counters.checkpoints += 1
                break
            except _TRANSIENT as exc:
                if final and give_up is not None and self._clock() >= give_up:
                    log.error("%s: last flush still failing after %.0f s (%s); %d records are not checkpointed "
                              "and will be delivered again", self.name, self.options.stop_timeout_s,
                              _describe(exc), self._pending)
                    return
                # While stopping, keep retrying until the deadline; otherwise wake early only to stop.
                self._retry("flush", exc, backoff, wait_through_stop=final)
                if self._stop.is_set() and not final:
                    return  # the final flush takes over
        self.counters.written += self._pending_written
        self.counters.last_success = time.time()
        self._refresh_lag()
        self._pending = self._pending_written = 0
        self._pending_since = None
        self._checkpoint = None

    def _retry(self, what: str, exc: BaseException, backoff: Backoff, wait_through_stop: bool = False) -> None:
        self.counters.retries += 1
        self.counters.failures[what] = self.counters.failures.get(what, 0) + 1
        delay = backoff.next()
        log.warning("%s: %s failed (%s); retrying in %.1f s", self.name, what, _describe(exc), delay)
        if wait_through_stop:
            time.sleep(delay)
        else:
            self._stop.wait(delay)

    def _maybe_log_stats(self) -> None:
        if self._clock() - self._last_stats < self.options.stats_interval_s:
            return
        self._last_stats = self._clock()
        self._refresh_lag()
        log.info("%s: %s", self.name, self.counters.line())

    def _refresh_lag(self) -> None:
        lag = getattr(self.source, "lag", None)
        if callable(lag):
            self.counters.lag = lag()

    def _close(self) -> None:
        for what, close in (("source", self.source.close), ("sink", self.sink.close)):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the run's own outcome
                log.warning("%s: closing the %s failed: %s", self.name, what, _describe(exc))

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("%s: %s received: stopping after a last flush and checkpoint (again to stop at once)",
                     self.name, name)
            self.stop()
            return
        # The second signal: the default action, now (nothing more is checkpointed; at-least-once holds).
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        os.kill(os.getpid(), signum)

    @contextmanager
    def _signals_stop(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread can take signals; whoever runs us in a thread calls stop()
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

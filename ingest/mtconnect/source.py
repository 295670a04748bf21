"""The MTConnect collector as a connector-runtime Source: the agent follower in a thread, its records in batches.

The follower (``connector.AgentFollower``) keeps its own loop over HTTP (streams, polls, reconnects); it writes
into a ``BatchingSink`` which cuts a batch at every document it finishes, and hands the cursor after that
document as the batch's checkpoint. The runner flushes the batch to Kafka and only then calls ``commit``,
which saves the cursor: the state file never runs ahead of what Kafka acknowledged.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from ingest.mtconnect.config import MTConnectSettings
from ingest.mtconnect.connector import AgentFollower
from ingest.mtconnect.state import Cursor, StateError, save_cursor
from machinewatch.device_events import DeviceEvent
from machinewatch.kafka_io import QualityNote
from machinewatch.record import Reading
from machinewatch.runtime import Batch, Rejected

log = logging.getLogger(__name__)

# Documents handed over and not yet polled; beyond this the follower waits (back-pressure while Kafka is away).
MAX_QUEUED_BATCHES = 64


class BatchingSink:
    """The follower's sink on the runtime: records, dead letters and notes collected until the document ends."""

    def __init__(self, out: queue.Queue[Batch], stopping: threading.Event) -> None:
        self._out = out
        self._stopping = stopping
        self._batch = Batch()

    def send(self, reading: Reading) -> None:
        self._batch.records.append(reading)

    def send_event(self, event: DeviceEvent) -> None:
        self._batch.records.append(event)

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "",
                    size: int | None = None) -> None:
        self._batch.rejected.append(Rejected(raw, reason, origin=origin, size=size))

    def note(self, source: str, kind: str, raw: bytes | str, reason: str, origin: str = "",
             note_id: str = "") -> None:
        self._batch.records.append(QualityNote(source, kind, raw, reason, origin, note_id))

    def flush(self, timeout: float | None = None) -> None:
        """The document is done: what it produced goes to the runner (its cursor follows in ``checkpoint``)."""
        if len(self._batch):
            self._put(self._batch)
            self._batch = Batch()

    def checkpoint(self, cursor: Cursor) -> None:
        self.flush()
        self._put(Batch(checkpoint=cursor))

    def _put(self, batch: Batch) -> None:
        while True:
            try:
                self._out.put(batch, timeout=0.2)
                return
            except queue.Full:
                if self._stopping.is_set():
                    # Stopping with the runner not polling: this batch is not checkpointed, so it is read again.
                    raise _Stopped from None


class _Stopped(Exception):
    """The run is stopping while the follower waits to hand over a batch."""


class MTConnectSource:
    """``machinewatch.runtime.Source`` following one MTConnect agent (see the module docstring)."""

    name = "mtconnect"

    def __init__(self, config: MTConnectSettings) -> None:
        self.config = config
        self._queue: queue.Queue[Batch] = queue.Queue(MAX_QUEUED_BATCHES)
        self._stopping = threading.Event()
        self.sink = BatchingSink(self._queue, self._stopping)
        self.follower = AgentFollower(config, self.sink, commit=self.sink.checkpoint)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def open(self) -> None:
        try:
            self.follower.setup()
        except StateError as exc:
            raise ValueError(str(exc)) from exc
        self._thread = threading.Thread(target=self._follow, name="mtconnect-follower", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            self.follower.run()
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the next poll, in the runner's thread
            self._error = exc

    def poll(self, timeout_s: float) -> Batch:
        if self._error is not None:
            raise self._error
        try:
            first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return Batch()
        # One document per batch: its records and the cursor after it (queued right behind them), so with the
        # default max_batch = 1 a crash repeats at most one document, as the collector did before the runtime.
        batch = Batch(list(first.records), list(first.rejected), first.checkpoint)
        while batch.checkpoint is None:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return batch
            batch.records.extend(more.records)
            batch.rejected.extend(more.rejected)
            batch.checkpoint = more.checkpoint
        return batch

    def commit(self, checkpoint: object) -> None:
        assert isinstance(checkpoint, Cursor)
        save_cursor(self.config.state_path, checkpoint, self.config.agent_url)

    def stop_input(self) -> None:
        """Stopping: the follower ends its request; what it handed over is still polled and committed."""
        self._stopping.set()
        self.follower.stop()
        if self._thread is not None:
            self._thread.join(self.config.request_timeout_s + 5)

    def close(self) -> None:
        self._stopping.set()
        self.follower.stop()

    @property
    def metrics(self) -> Any:
        return self.follower.metrics

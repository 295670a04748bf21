"""The TCP collector's ``runtime.Source``: an asyncio listener for JSON lines, bounded lines, back-pressure.

The listener runs its own event loop in a thread: readers put lines on a bounded queue, and ``poll`` (the
runner's thread) takes them off and maps them into readings and rejects. When the queue is full the readers
wait, which stops reading their sockets and lets TCP flow control slow the senders down, instead of
buffering without bound. TCP has no acknowledgements, so there is no checkpoint: on stop, ``stop_input``
closes the listening socket and cuts each open connection once it has sent nothing for a grace period
(one still delivering lines is read on), and the runner publishes what was queued before its last flush.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
from dataclasses import dataclass

from pydantic import Field, model_validator

from ingest.formats import Mapping, RowMapper, decode_json_line, load_mapping
from machinewatch.plugins import CollectorSettings
from machinewatch.runtime import Batch, Rejected

log = logging.getLogger(__name__)

SOURCE = "tcp"
_HEAD = 1024  # bytes of an oversize line kept in the dead-letter record


class TcpSettings(CollectorSettings):
    """``[tcp]`` in a collector config (see sample.conf); ``[tcp.runner]`` batches the Kafka writes."""

    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=9988, ge=0, le=65535, description="0 picks a free port")
    mappings: list[str] = Field(default_factory=lambda: ["dc-india", "dc-usa", "dc-germany"],
                                description="mapping names or TOML paths a line may use")
    dispatch_field: str = Field(default="feed", description="line field naming its mapping")
    default_mapping: str | None = Field(default=None, description="for lines without the dispatch field")
    max_line_bytes: int = Field(default=64 * 1024, ge=256, description="longest accepted line")
    queue_size: int = Field(default=10_000, ge=1, description="lines buffered between readers and publisher")
    grace_s: float = Field(default=2.0, ge=0,
                           description="on stop: a connection that sent nothing for this long is closed")

    @model_validator(mode="after")
    def _default_known(self) -> TcpSettings:
        if self.default_mapping and self.default_mapping not in self.mappings:
            msg = f"default_mapping {self.default_mapping!r} must be one of mappings {self.mappings}"
            raise ValueError(msg)
        return self


@dataclass(slots=True)
class _Item:
    conn: int
    payload: bytes
    origin: str
    reason: str | None = None  # set: dead-letter as is
    size: int | None = None    # the line's length when ``payload`` is only its head
    closed: bool = False       # the connection ended; drop its per-connection state


class TcpSource:
    """Accepts connections on host:port while open; counters say what happened."""

    def __init__(self, config: TcpSettings) -> None:
        self.name = SOURCE
        self.config = config
        self.mappings: dict[str, Mapping] = {}
        for ref in config.mappings:
            mapping = load_mapping(ref)
            self.mappings[ref] = mapping
            self.mappings.setdefault(mapping.name, mapping)
        if config.default_mapping is None and len(config.mappings) == 1:
            self.default: Mapping | None = self.mappings[config.mappings[0]]
        else:
            self.default = self.mappings[config.default_mapping] if config.default_mapping else None
        self.max_batch = config.runner.max_batch
        self._mappers: dict[tuple[int, str], RowMapper] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._queue: asyncio.Queue[_Item] | None = None
        self._server: asyncio.Server | None = None
        self._conn_ids = itertools.count(1)
        self._clients: set[asyncio.Task[None]] = set()
        self._last_line: dict[asyncio.Task[None], float] = {}  # loop time of each connection's last queued line
        self._draining = False
        self._cutter: asyncio.Future[None] | None = None
        self.listening = threading.Event()
        self.port = config.port
        self.connections = 0
        self.lines = 0
        self.readings = 0
        self.rejects = 0
        self.queue_full_waits = 0

    # -- runtime.Source ----------------------------------------------------------------------------
    def open(self) -> None:
        """Bind and start accepting, in the listener's own thread; returns once the socket listens."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="tcp-listener", daemon=True)
        self._thread.start()
        try:
            self._call(self._start())
        except BaseException:
            self._shutdown_loop()
            raise
        self.listening.set()

    def poll(self, timeout_s: float) -> Batch:
        batch = Batch()
        while True:
            items = self._call(self._take(timeout_s, self.max_batch))
            for item in items:
                self._process(item, batch)
            # While draining an empty batch ends the drain: only connection ends taken is not empty yet.
            if len(batch) or not items or not self._draining:
                return batch

    def commit(self, checkpoint: object) -> None:
        """Nothing to acknowledge: TCP lines carry no delivery receipts."""

    def stop_input(self) -> None:
        """Stop accepting; a connection is cut once it has queued nothing for ``grace_s`` (polls take its lines
        meanwhile); the runner polls until the queue is empty and no connection is left."""
        if self._loop is not None and self._loop.is_running():
            self._call(self._stop_accepting())
            self._draining = True

    def close(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._call(self._cut_clients())
        self._shutdown_loop()
        log.info("tcp listener stopped: %d connections, %d lines, %d readings, %d dead-lettered",
                 self.connections, self.lines, self.readings, self.rejects)

    # -- the listener's loop -----------------------------------------------------------------------
    def _call(self, coro: object) -> list[_Item]:
        assert self._loop is not None
        future: concurrent.futures.Future[list[_Item]] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result()

    def _shutdown_loop(self) -> None:
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()
        self._loop = None

    async def _start(self) -> list[_Item]:
        self._queue = asyncio.Queue(maxsize=self.config.queue_size)
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self.config.port, limit=self.config.max_line_bytes)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("tcp listener on %s:%d (mappings %s, dispatch field %r)", self.config.host, self.port,
                 ", ".join(self.config.mappings), self.config.dispatch_field)
        return []

    async def _stop_accepting(self) -> list[_Item]:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._cutter = asyncio.ensure_future(self._cut_idle_clients())
        return []

    async def _cut_idle_clients(self) -> None:
        assert self._loop is not None
        while self._clients:
            now = self._loop.time()
            for task in list(self._clients):
                if now - self._last_line.get(task, now) >= self.config.grace_s:
                    task.cancel()
            await asyncio.sleep(min(0.1, self.config.grace_s) or 0.01)

    async def _cut_clients(self) -> list[_Item]:
        if self._cutter is not None:
            self._cutter.cancel()
        for task in list(self._clients):
            task.cancel()
        return []

    async def _take(self, timeout_s: float, limit: int) -> list[_Item]:
        assert self._queue is not None
        items: list[_Item] = []
        while not items:
            try:
                items.append(await asyncio.wait_for(self._queue.get(), timeout=max(timeout_s, 0.001)))
            except TimeoutError:
                # Draining: an empty poll ends it, so wait on while a connection may still send.
                if not (self._draining and self._clients):
                    return items
        while len(items) < limit and not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    # -- readers ---------------------------------------------------------------------------------
    async def _put(self, item: _Item) -> None:
        assert self._queue is not None
        if self._queue.full():
            self.queue_full_waits += 1
        await self._queue.put(item)  # waits when full: back-pressure onto the socket
        task = asyncio.current_task()
        if task is not None and self._loop is not None:
            self._last_line[task] = self._loop.time()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
            self._last_line[task] = asyncio.get_running_loop().time()
        conn = next(self._conn_ids)
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.connections += 1
        log.debug("connection %d from %s", conn, where)
        number = 0
        try:
            while True:
                number += 1
                origin = f"tcp://{where}#{number}"
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        await self._put(_Item(conn, exc.partial, origin))
                    break
                except asyncio.LimitOverrunError as exc:
                    head, dropped, eof = await self._discard_line(reader, exc.consumed)
                    reason = (f"line longer than max_line_bytes={self.config.max_line_bytes} "
                              f"({dropped} bytes dropped, first {len(head)} kept)")
                    await self._put(_Item(conn, head, origin, reason=reason, size=dropped))
                    if eof:
                        break
                    continue
                if line.strip():
                    await self._put(_Item(conn, line, origin))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await self._put(_Item(conn, b"", "", closed=True))
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._clients.discard(task)
                self._last_line.pop(task, None)

    async def _discard_line(self, reader: asyncio.StreamReader, consumed: int) -> tuple[bytes, int, bool]:
        """Drop the rest of an oversize line but keep the connection: (head, bytes dropped, eof)."""
        head = b""
        dropped = 0
        while True:
            chunk = await reader.read(consumed or self.config.max_line_bytes)
            if not chunk:
                return head, dropped, True
            head = head or chunk[:_HEAD]
            dropped += len(chunk)
            try:
                rest = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                consumed = exc.consumed
                continue
            except asyncio.IncompleteReadError as exc:
                return head, dropped + len(exc.partial), True
            return head, dropped + len(rest), False

    # -- mapping ----------------------------------------------------------------------------------
    def _reject(self, batch: Batch, item: _Item, reason: str) -> None:
        self.rejects += 1
        batch.rejected.append(Rejected(item.payload, reason, item.origin, size=item.size))

    def _process(self, item: _Item, batch: Batch) -> None:
        if item.closed:
            for key in [k for k in self._mappers if k[0] == item.conn]:
                del self._mappers[key]
            return
        self.lines += 1
        if item.reason is not None:
            self._reject(batch, item, item.reason)
            return
        data, error = decode_json_line(item.payload)
        if data is None:
            self._reject(batch, item, error or "undecodable")
            return
        feed = data.get(self.config.dispatch_field)
        mapping = self.mappings.get(str(feed)) if feed is not None else self.default
        if mapping is None:
            reason = (f"no mapping for this line: field {self.config.dispatch_field!r} = {feed!r}; "
                      f"known: {', '.join(self.config.mappings)}")
            self._reject(batch, item, reason)
            return
        mapper = self._mappers.get((item.conn, mapping.name))
        if mapper is None:
            mapper = self._mappers[(item.conn, mapping.name)] = RowMapper(mapping)
        result = mapper.map(data, item.payload)  # the line's exact bytes for any dead letter
        batch.records.extend(result.readings)
        self.readings += len(result.readings)
        for reject in result.rejects:
            self.rejects += 1
            batch.rejected.append(Rejected(reject.raw, reject.reason, item.origin, source=mapping.source))

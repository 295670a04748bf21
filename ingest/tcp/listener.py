"""asyncio TCP listener for JSON lines: bounded lines, back-pressure, bad lines dead-lettered.

Readers put lines on a bounded queue; one publishing task maps them and hands readings to the
Publisher. When the queue is full, readers wait, which stops reading their sockets and lets TCP
flow control slow the senders down, instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.formats import Mapping, RowMapper, decode_json_line, load_mapping
from ingest.history.loader import Sink
from machinewatch.kafka_io import PublishError

log = logging.getLogger(__name__)

SOURCE = "tcp"
_HEAD = 1024  # bytes of an oversize line kept in the dead-letter record


class TcpConfig(BaseModel):
    """``[tcp]`` in a collector config (see sample.conf)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=9988, ge=0, le=65535, description="0 picks a free port")
    mappings: list[str] = Field(default_factory=lambda: ["dc-india", "dc-usa", "dc-germany"],
                                description="mapping names or TOML paths a line may use")
    dispatch_field: str = Field(default="feed", description="line field naming its mapping")
    default_mapping: str | None = Field(default=None, description="for lines without the dispatch field")
    max_line_bytes: int = Field(default=64 * 1024, ge=256)
    queue_size: int = Field(default=10_000, ge=1, description="lines buffered between readers and publisher")
    flush_interval_s: float = Field(default=1.0, gt=0, description="how often acknowledgements are checked")

    @model_validator(mode="after")
    def _default_known(self) -> TcpConfig:
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


class TcpListener:
    """Accepts connections on host:port until ``stop()``; counters say what happened."""

    def __init__(self, sink: Sink, config: TcpConfig) -> None:
        self.sink = sink
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
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=config.queue_size)
        self._mappers: dict[tuple[int, str], RowMapper] = {}
        self._server: asyncio.Server | None = None
        self._worker: asyncio.Task[None] | None = None
        self._conn_ids = itertools.count(1)
        self._clients: set[asyncio.Task[None]] = set()
        self.port = config.port
        self.connections = 0
        self.lines = 0
        self.readings = 0
        self.rejects = 0
        self.queue_full_waits = 0
        self._reported_failures = 0

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._worker = asyncio.create_task(self._publish_loop())
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self.config.port, limit=self.config.max_line_bytes)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("tcp listener on %s:%d (mappings %s, dispatch field %r)", self.config.host, self.port,
                 ", ".join(self.config.mappings), self.config.dispatch_field)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop accepting; give open connections ``grace_s`` to finish, publish what was queued, flush."""
        if self._server is not None:
            self._server.close()
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=grace_s)
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._queue.put(None)
        if self._worker is not None:
            await self._worker
        await asyncio.to_thread(self.sink.flush)
        log.info("tcp listener stopped: %d connections, %d lines, %d readings, %d dead-lettered",
                 self.connections, self.lines, self.readings, self.rejects)

    async def run(self, duration_s: float | None = None) -> None:
        await self.start()
        try:
            if duration_s is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration_s)
        finally:
            await self.stop()

    # -- readers ---------------------------------------------------------------------------------
    async def _put(self, item: _Item) -> None:
        if self._queue.full():
            self.queue_full_waits += 1
        await self._queue.put(item)  # waits when full: back-pressure onto the socket

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
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

    # -- publishing ------------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if item.closed:
                for key in [k for k in self._mappers if k[0] == item.conn]:
                    del self._mappers[key]
                continue
            self._process(item)
            if time.monotonic() - last_flush >= self.config.flush_interval_s:
                last_flush = time.monotonic()
                await self._check_acks()

    async def _check_acks(self) -> None:
        try:
            await asyncio.to_thread(self.sink.flush)
        except PublishError as exc:
            # The producer has already retried; report each new failure instead of dying or hiding it.
            log.error("tcp listener: records not acknowledged by Kafka: %s", exc)

    def _dead_letter(self, item: _Item, reason: str) -> None:
        self.rejects += 1
        self.sink.dead_letter(SOURCE, item.payload, reason, item.origin, size=item.size)

    def _process(self, item: _Item) -> None:
        self.lines += 1
        if item.reason is not None:
            self._dead_letter(item, item.reason)
            return
        data, error = decode_json_line(item.payload)
        if data is None:
            self._dead_letter(item, error or "undecodable")
            return
        feed = data.get(self.config.dispatch_field)
        mapping = self.mappings.get(str(feed)) if feed is not None else self.default
        if mapping is None:
            reason = (f"no mapping for this line: field {self.config.dispatch_field!r} = {feed!r}; "
                      f"known: {', '.join(self.config.mappings)}")
            self._dead_letter(item, reason)
            return
        mapper = self._mappers.get((item.conn, mapping.name))
        if mapper is None:
            mapper = self._mappers[(item.conn, mapping.name)] = RowMapper(mapping)
        result = mapper.map(data, item.payload)  # the line's exact bytes for any dead letter
        for reading in result.readings:
            self.sink.send(reading)
        self.readings += len(result.readings)
        for reject in result.rejects:
            self.rejects += 1
            self.sink.dead_letter(mapping.source, reject.raw, reject.reason, item.origin)

"""The simulated agent: it owns the clock, the machines and the ring buffer under one lock, steps the machines,
answers /probe, /current and /sample with documents from ``rendering``, streams, and restarts with a new
``instanceId``. Scenarios come from ``scenarios.Scenarios``, the HTTP side from ``server``."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from simulators.mtconnect_agent.model import (
    DeviceState,
    Obs,
    ObservationBuffer,
    all_unavailable,
    first_values,
    make_devices,
    step_device,
)
from simulators.mtconnect_agent.rendering import Documents, multipart_part
from simulators.mtconnect_agent.scenarios import Scenarios
from simulators.mtconnect_agent.server import AgentServer


class MTConnectAgentSimulator(Scenarios):
    """A simulated MTConnect agent for ``devices`` CNC machines with a ring buffer of ``buffer_size``."""

    def __init__(self, devices: int = 2, seed: int = 1, buffer_size: int = 1024, device_prefix: str = "CNC",
                 step_ms: int = 100, start: datetime | None = None, schema_version: str = "1.3",
                 sloppy: bool = False, instance_id: int | None = None) -> None:
        if buffer_size < 8:
            msg = f"buffer_size must be at least 8, got {buffer_size}"
            raise ValueError(msg)
        self.buffer_size = buffer_size
        self.step_ms = step_ms
        self.schema_version = schema_version
        # Real agents in the wild: timestamps without 'Z' and a sloppy encoding declaration.
        self.sloppy = sloppy
        self._rng = random.Random(seed)
        start = start or datetime.now(tz=UTC)
        if start.tzinfo is None:
            msg = "start must be timezone-aware (UTC)"
            raise ValueError(msg)
        self._clock_ms = int(start.timestamp() * 1000)
        self.instance_id = instance_id if instance_id is not None else 1_700_000_000 + seed * 1000
        self._cond = threading.Condition()
        self._buffer = ObservationBuffer(buffer_size)
        self._generation = 0  # bumped by restart(): open streams end, as a real agent's would
        self._silent_until = 0.0
        self._injected: list[tuple[str, bytes, str]] = []
        self._stream_injections: list[bytes] = []
        self._streams_opened = 0
        self.requests: list[str] = []
        self.devices = make_devices(devices, device_prefix)
        self._server: AgentServer | None = None
        self._ticker: threading.Thread | None = None
        self._stop_ticking = threading.Event()
        with self._cond:
            self._power_on()

    # ------------------------------------------------------------------ buffer and ground truth

    @property
    def produced(self) -> list[Obs]:
        """Every observation ever made, across restarts, in order: the ground truth."""
        return self._buffer.produced

    @property
    def first_sequence(self) -> int:
        with self._cond:
            return self._buffer.first_sequence

    @property
    def next_sequence(self) -> int:
        with self._cond:
            return self._buffer.next_sequence

    def produced_keys(self, instance_id: int | None = None) -> list[tuple[str, int]]:
        """(instanceId, sequence) of every observation produced (optionally of one instance), in order."""
        with self._cond:
            return [(str(o.instance_id), o.sequence) for o in self.produced
                    if instance_id is None or o.instance_id == instance_id]

    def device(self, name_or_index: str | int) -> DeviceState:
        if isinstance(name_or_index, int):
            return self.devices[name_or_index]
        for dev in self.devices:
            if name_or_index in (dev.name, dev.uuid):
                return dev
        msg = f"no simulated device {name_or_index!r}"
        raise KeyError(msg)

    def _emit(self, dev: DeviceState, role: str, value: str, level: str = "") -> None:
        self._buffer.add(self.instance_id, dev.name, dev.items[role], self._clock_ms, value, level)

    def _power_on(self) -> None:
        # A starting agent reports every item UNAVAILABLE, then the adapter's first values arrive.
        for dev in self.devices:
            all_unavailable(dev, self._emit)
        self._clock_ms += self.step_ms
        for dev in self.devices:
            first_values(dev, self._rng, self._emit)
        self._cond.notify_all()

    def step(self, rounds: int = 1) -> int:
        """Advance the machines by ``rounds`` steps of ``step_ms``; returns observations produced."""
        with self._cond:
            before = self._buffer.next_sequence
            for _ in range(rounds):
                self._clock_ms += self.step_ms
                for dev in self.devices:
                    if dev.available:
                        step_device(dev, self._rng, self._emit)
            self._cond.notify_all()
            return self._buffer.next_sequence - before

    def restart(self) -> int:
        """Restart the agent: new instanceId, empty buffer, sequences from 1; open streams are cut."""
        with self._cond:
            self.instance_id += 1
            self._buffer.reset()
            self._generation += 1
            self._clock_ms += self.step_ms
            self._power_on()
            return self.instance_id

    # ------------------------------------------------------------------ documents

    def _documents(self) -> Documents:
        return Documents(self.instance_id, self.schema_version, self.buffer_size, self.sloppy)

    def _streams_xml(self, observations: list[Obs], next_seq: int) -> bytes:
        buf = self._buffer
        return self._documents().streams(self.devices, observations, next_seq, buf.first_sequence,
                                         buf.next_sequence - 1)

    def probe_xml(self) -> bytes:
        with self._cond:
            return self._documents().probe(self.devices)

    def error_xml(self, code: str, text: str) -> bytes:
        return self._documents().error(code, text)

    def current_xml(self) -> bytes:
        with self._cond:
            latest = sorted(self._buffer.latest.values(), key=lambda o: o.sequence)
            return self._streams_xml(latest, self._buffer.next_sequence)

    def sample_xml(self, start: int | None, count: int) -> tuple[bytes, int, bool]:
        """(document, next sequence, ok) for /sample; an MTConnectError document when out of range."""
        with self._cond:
            first, next_seq = self._buffer.first_sequence, self._buffer.next_sequence
            begin = first if start is None else start
            if begin < first or begin > next_seq:
                text = f"'from' must be between firstSequence {first} and nextSequence {next_seq}, got {begin}"
                return self.error_xml("OUT_OF_RANGE", text), begin, False
            chosen = self._buffer.since(begin, count)
            nxt = chosen[-1].sequence + 1 if chosen else next_seq
            return self._streams_xml(chosen, nxt), nxt, True

    def stream(self, start: int | None, count: int, interval_ms: int, heartbeat_ms: int) -> Iterator[bytes]:
        """Multipart parts of a /sample stream until the agent restarts or closes (or an error part)."""
        with self._cond:
            generation = self._generation
            self._streams_opened += 1
            stream_id = self._streams_opened  # injections go to the newest stream, not to a dead client's
            nxt = start
        while True:
            with self._cond:
                deadline = time.monotonic() + heartbeat_ms / 1000
                # Wait for new data, a heartbeat deadline, a restart or an injection.
                while (generation == self._generation
                       and not (self._stream_injections and stream_id == self._streams_opened)
                       and (nxt is not None and nxt >= self._buffer.next_sequence) and time.monotonic() < deadline):
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                if generation != self._generation:
                    return
                silent_for = self._silent_until - time.monotonic()
                if self._stream_injections and stream_id == self._streams_opened:
                    injected = self._stream_injections.pop(0)
                else:
                    injected = None
            if injected is not None:
                yield injected
                continue
            if silent_for > 0:
                time.sleep(min(silent_for, 0.5))
                continue
            body, after, ok = self.sample_xml(nxt, count)
            yield multipart_part(body)
            if not ok:
                return
            nxt = after
            time.sleep(interval_ms / 1000)

    def take_injection(self, path: str) -> tuple[bytes, str] | None:
        """The document injected for ``path`` (``inject``), taken so it is served once."""
        with self._cond:
            for i, (p, body, ctype) in enumerate(self._injected):
                if path.endswith(p):
                    del self._injected[i]
                    return body, ctype
        return None

    # ------------------------------------------------------------------ running

    @property
    def url(self) -> str:
        if self._server is None:
            msg = "the simulator is not serving; call serve() first"
            raise RuntimeError(msg)
        return self._server.url

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start the HTTP agent in a background thread; returns its base URL."""
        self._server = AgentServer(self, host, port)
        return self.url

    def start_ticking(self, interval_s: float) -> None:
        """Step the machines every ``interval_s`` of wall-clock time in a background thread."""
        def tick() -> None:
            while not self._stop_ticking.wait(interval_s):
                self.step(1)

        self._ticker = threading.Thread(target=tick, name="mtconnect-sim-ticker", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        self._stop_ticking.set()
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> MTConnectAgentSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""What the source-format simulators share: injectable anomalies, pacing, and where lines go.

A simulator yields ``SimEvent``s (event time, mapping name, the record as its source would write
it). Outputs: Kafka (through the same mappings the collectors use, so a simulated line and a
collected line become identical Readings), a file in the source's own format, or a TCP listener.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SimEvent:
    ts_ms: int
    feed: str               # the mapping that reads this record (ingest/formats/mappings/<feed>.toml)
    record: dict[str, Any]  # as the source writes it
    line: str               # the record in the source's own text form (JSON line or CSV row)


@dataclass
class Anomalies:
    """Injected trouble: overheat episodes, random spikes and silences (device index, offsets in ms)."""

    overheats: list[tuple[int, int, int, float]] = field(default_factory=list)  # (device, start, length, +value)
    silences: list[tuple[int, int, int]] = field(default_factory=list)           # (device, start, length)
    spike_rate: float = 0.0   # probability per reading
    spike_size: float = 30.0  # added to the value on a spike

    def extra(self, device: int, offset_ms: int, rng: random.Random) -> float:
        added = sum(v for d, s, n, v in self.overheats if d == device and s <= offset_ms < s + n)
        # Always draw, so adding spikes does not shift the rest of the random sequence.
        if rng.random() < self.spike_rate:
            added += self.spike_size
        return added

    def silent(self, device: int, offset_ms: int) -> bool:
        return any(d == device and s <= offset_ms < s + n for d, s, n in self.silences)

    @classmethod
    def parse(cls, overheats: Iterable[str] = (), silences: Iterable[str] = (), spike_rate: float = 0.0,
              spike_size: float = 30.0) -> Anomalies:
        """From CLI specs: overheat 'DEVICE:START_S:LENGTH_S:DELTA', silence 'DEVICE:START_S:LENGTH_S'."""
        heat = []
        for spec in overheats:
            parts = spec.split(":")
            if len(parts) != 4:
                msg = f"overheat {spec!r} must be DEVICE:START_S:LENGTH_S:DELTA, e.g. 2:60:120:35"
                raise ValueError(msg)
            heat.append((int(parts[0]), int(float(parts[1]) * 1000), int(float(parts[2]) * 1000), float(parts[3])))
        quiet = []
        for spec in silences:
            parts = spec.split(":")
            if len(parts) != 3:
                msg = f"silence {spec!r} must be DEVICE:START_S:LENGTH_S, e.g. 4:30:60"
                raise ValueError(msg)
            quiet.append((int(parts[0]), int(float(parts[1]) * 1000), int(float(parts[2]) * 1000)))
        if not 0 <= spike_rate <= 1:
            msg = f"spike rate must be within 0..1, got {spike_rate}"
            raise ValueError(msg)
        return cls(heat, quiet, spike_rate, spike_size)


class Simulator(Protocol):
    interval_ms: int

    def stream(self, start: datetime) -> Iterator[SimEvent]: ...


def backfill(sim: Simulator, steps: int, now: datetime | None = None) -> Iterator[SimEvent]:
    """``steps`` intervals of events ending now (never in the future), as fast as possible."""
    now = now or datetime.now(tz=UTC)
    start = now - timedelta(milliseconds=steps * sim.interval_ms)
    end_ms = int(now.timestamp() * 1000)
    for event in sim.stream(start):
        if event.ts_ms >= end_ms:
            return
        yield event


def live(sim: Simulator, speed: float = 1.0, duration_s: float | None = None) -> Iterator[SimEvent]:
    """Events released by the wall clock; event time runs ``speed`` times faster than real time.

    Event times must never lie in the future (the Flink job's watermarks would jump), so with
    speed > 1 the simulated clock starts early enough to reach "now" exactly at the end of the run.
    """
    if speed <= 0:
        msg = f"speed must be > 0, got {speed}"
        raise ValueError(msg)
    if speed > 1 and duration_s is None:
        msg = "speed > 1 in live mode needs a duration: event times must not run into the future"
        raise ValueError(msg)
    wall0 = time.time()
    lead_s = (speed - 1) * duration_s if duration_s and speed > 1 else 0.0
    start = datetime.fromtimestamp(wall0 - lead_s, tz=UTC)
    start_ms = int(start.timestamp() * 1000)
    for event in sim.stream(start):
        due = wall0 + (event.ts_ms - start_ms) / 1000 / speed
        if duration_s is not None and due - wall0 >= duration_s:
            return
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        yield event


class TcpOut:
    """Sends events as JSON lines to a TCP listener (ingest tcp)."""

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port), timeout=30)
        self.sent = 0
        log.info("sending to tcp://%s:%d", host, port)

    def write(self, event: SimEvent) -> None:
        # JSON-line sources go as they are; CSV rows become JSON objects naming their mapping.
        line = event.line if event.line.startswith("{") else json.dumps({**event.record, "feed": event.feed})
        self._sock.sendall(line.rstrip("\n").encode() + b"\n")
        self.sent += 1

    def close(self) -> None:
        self._sock.close()

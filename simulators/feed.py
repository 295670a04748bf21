"""What the source-format simulators share: injectable anomalies, pacing, and where lines go.

A simulator yields ``SimEvent``s (event time, mapping name, the record as its source would write
it). Outputs: Kafka (through the same mappings the collectors use, so a simulated line and a
collected line become identical Readings), a file in the source's own format, or a TCP listener.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field

from machinewatch import plugins
from machinewatch.config import Settings
from machinewatch.plugins import PluginSettings, duration_arg

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


# -- ``machinewatch simulate equipment|servers|datacenter``: what the source-format plugins share --------------

class FeedSimSettings(PluginSettings):
    """A source-format simulator's settings: devices, pace, anomalies and where the lines go."""

    devices: int = Field(10, ge=1, description="number of devices")
    interval_ms: int = Field(1000, gt=0, description="event-time step per device")
    seed: int = Field(1, description="random seed: same seed, same readings")
    speed: float = Field(1.0, gt=0, description="playback speed for live mode")
    duration: timedelta | None = Field(None, description="stop live mode after this long")
    count: int = Field(0, ge=0, description="this many steps ending now, then exit (backfill mode)")
    overheat: list[str] = Field(default_factory=list, description="DEV:START_S:LEN_S:DELTA episodes")
    silence: list[str] = Field(default_factory=list, description="DEV:START_S:LEN_S silences")
    spike_rate: float = Field(0.0, ge=0, le=1, description="probability of a spike per reading")
    output: Path | None = Field(None, description="write the source-format file instead of publishing")
    tcp_port: int | None = Field(None, description="send JSON lines to a TCP listener ('ingest tcp')")
    tcp_host: str = Field("127.0.0.1", description="host of the TCP listener")


def add_feed_arguments(p: argparse._ActionsContainer) -> None:
    """The flags every source-format simulator has."""
    p.add_argument("--devices", type=int, help="number of devices (default 10)")
    p.add_argument("--interval-ms", type=int, help="event-time step per device (default 1000)")
    p.add_argument("--seed", type=int, help="random seed: same seed, same readings (default 1)")
    p.add_argument("--speed", type=float, help="playback speed for live mode (default 1.0)")
    p.add_argument("--duration", type=duration_arg, help="stop live mode after this long, e.g. 2m")
    p.add_argument("--count", type=int, help="this many steps per device ending now, then exit (backfill mode)")
    p.add_argument("--overheat", action="append", metavar="DEV:START_S:LEN_S:DELTA",
                   help="add DELTA to device DEV's value from START_S for LEN_S seconds of event time; repeatable")
    p.add_argument("--silence", action="append", metavar="DEV:START_S:LEN_S",
                   help="device DEV sends nothing; repeatable")
    p.add_argument("--spike-rate", type=float, help="probability of a spike per reading (default 0)")
    p.add_argument("--output", type=Path, help="write the source-format file instead of publishing; use with --count")
    p.add_argument("--tcp-port", type=int, help="send JSON lines to a TCP listener ('ingest tcp', e.g. 9988)")
    p.add_argument("--tcp-host", help="host of the TCP listener (default 127.0.0.1)")


def run_feed(kind: str, config: FeedSimSettings, sim: Simulator, settings: Settings,
             write_file: Callable[[Path, Iterable[SimEvent]], None]) -> int:
    """Play ``sim`` (backfill or live) into a file, a TCP listener, or Kafka through the collectors' mappings."""
    duration = config.duration.total_seconds() if config.duration else None
    try:
        events = backfill(sim, config.count) if config.count else live(sim, config.speed, duration)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    out = logging.getLogger("machinewatch.simulate")
    if config.output:
        write_file(config.output, events)
        out.info("wrote %s", config.output)
        return 0
    if config.tcp_port:
        tcp = TcpOut(config.tcp_host, config.tcp_port)
        try:
            for event in events:
                tcp.write(event)
        finally:
            tcp.close()
        out.info("sent %d lines to %s:%d", tcp.sent, config.tcp_host, config.tcp_port)
        return 0
    from machinewatch.kafka_io import Publisher

    # ingest.formats' FeedMapper, through the registry: a stage never imports another stage.
    feed_mapper = plugins.shared("feeds")
    mappers = None
    with Publisher(settings) as pub:
        last_report = time.monotonic()
        for event in events:
            if mappers is None:  # the servers CSV has times of day only: the date is the run's first day
                day = datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC).date()
                mappers = feed_mapper({"servers": {"base_date": day}})
            result = mappers.map(event.feed, event.record, event.line)
            pub.send_many(result.readings)
            for reject in result.rejects:
                pub.dead_letter(f"sim-{kind}", reject.raw, reject.reason, "simulator")
            if time.monotonic() - last_report >= 5:
                pub.flush()
                out.info("published %d readings (%d acknowledged)", pub.sent, pub.acked)
                last_report = time.monotonic()
        pub.flush()
        out.info("published %d readings of %d %s devices", pub.sent, config.devices, kind)
    return 0


def anomalies_of(config: FeedSimSettings) -> Anomalies:
    """The anomalies the settings ask for; a bad spec is a RuntimeError naming the expected form."""
    try:
        return Anomalies.parse(config.overheat, config.silence, config.spike_rate)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc


def write_lines(path: Path, events: Iterable[SimEvent], header: str | None = None) -> None:
    """The events' lines in their source's own text form, one per line (a CSV header first)."""
    with path.open("w") as out:
        if header is not None:
            out.write(header + "\n")
        for event in events:
            out.write(event.line + "\n")

"""Equipment temperature simulator: N devices, a random walk around a base, overheat episodes.

Deterministic for a seed: the same arguments always give the same readings and event ids, so a
replay overwrites instead of duplicating.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import Field

from machinewatch.config import Settings
from machinewatch.plugins import PluginSettings, SimulatorPlugin, duration_arg
from machinewatch.record import Reading, make_event_id

SOURCE = "sim-temperature"


@dataclass
class TemperatureSimulator:
    """Generates temperature readings for ``devices`` sensors every ``interval_ms`` of event time."""

    devices: int = 10
    interval_ms: int = 1000
    base_c: float = 55.0
    step_c: float = 0.8
    seed: int = 1
    region: str = "plant-1"
    site: str = "line-a"
    device_prefix: str = "sensor"
    # Out-of-order emission: each reading may be delayed by up to this much event time.
    max_disorder_ms: int = 0
    # Overheat episodes: (device index, start offset ms, duration ms, added °C).
    overheats: list[tuple[int, int, int, float]] = field(default_factory=list)

    def device_id(self, index: int) -> str:
        return f"{self.device_prefix}-{index:04d}"

    def readings(self, start: datetime, count_per_device: int) -> list[Reading]:
        """All readings in event-time order, then shuffled within the disorder bound."""
        if start.tzinfo is None:
            msg = "start must be timezone-aware (UTC)"
            raise ValueError(msg)
        rng = random.Random(self.seed)
        start_ms = int(start.timestamp() * 1000)
        temps = [self.base_c + rng.uniform(-5, 5) for _ in range(self.devices)]
        out: list[tuple[int, Reading]] = []
        for step in range(count_per_device):
            offset = step * self.interval_ms
            for idx in range(self.devices):
                temps[idx] += rng.gauss(0, self.step_c) + (self.base_c - temps[idx]) * 0.05
                value = temps[idx] + self._overheat(idx, offset)
                ts = start_ms + offset
                device = self.device_id(idx)
                reading = Reading(
                    source=SOURCE, region=self.region, site=self.site, device_id=device,
                    metric="temperature", value=round(value, 3), unit="°C", ts=ts,
                    event_id=make_event_id(SOURCE, device, ts),
                )
                emit_at = ts + (rng.randrange(self.max_disorder_ms + 1) if self.max_disorder_ms else 0)
                out.append((emit_at, reading))
        out.sort(key=lambda pair: pair[0])
        return [reading for _, reading in out]

    def _overheat(self, idx: int, offset: int) -> float:
        return sum(
            extra for dev, begin, length, extra in self.overheats
            if dev == idx and begin <= offset < begin + length
        )

    def live(self, speed: float = 1.0, periodic_overheat: tuple[int, int, int, int, float] | None = None,
             ) -> Iterator[Reading]:
        """Endless readings stamped with the wall clock, paced in real time.

        ``periodic_overheat`` = (device, first offset ms, length ms, period ms, added °C): that device
        overheats for ``length`` every ``period`` from ``first offset`` after the start. Event time never
        runs ahead of the clock, so a job's watermark is never pushed into the future; ``speed`` > 1
        only shortens the pauses (catching up after a stall), it does not stamp future times.
        """
        rng = random.Random(self.seed)
        temps = [self.base_c + rng.uniform(-5, 5) for _ in range(self.devices)]
        start_ms = int(time.time() * 1000) // self.interval_ms * self.interval_ms
        step = 0
        while True:
            ts = start_ms + step * self.interval_ms
            delay = (ts - time.time() * 1000) / 1000 / max(speed, 1e-6)
            if delay > 0:
                time.sleep(delay)
            offset = ts - start_ms
            for idx in range(self.devices):
                temps[idx] += rng.gauss(0, self.step_c) + (self.base_c - temps[idx]) * 0.05
                value = temps[idx] + self._overheat(idx, offset)
                if periodic_overheat and idx == periodic_overheat[0]:
                    _, first, length, period, extra = periodic_overheat
                    if offset >= first and (offset - first) % period < length:
                        value += extra
                device = self.device_id(idx)
                yield Reading(
                    source=SOURCE, region=self.region, site=self.site, device_id=device,
                    metric="temperature", value=round(value, 3), unit="°C", ts=ts,
                    event_id=make_event_id(SOURCE, device, ts),
                )
            step += 1


# -- ``machinewatch simulate temperature`` (the plugin registered under ``machinewatch.simulators``) --------------

class TemperatureSimSettings(PluginSettings):
    """Canonical temperature readings to Kafka: how many devices, how fast, and the overheat episodes."""

    devices: int = Field(10, ge=1, description="number of devices")
    interval_ms: int = Field(1000, gt=0, description="event-time step per device")
    seed: int = Field(1, description="random seed: same seed, same readings")
    region: str = "plant-1"
    site: str = "line-a"
    disorder_ms: int = Field(0, ge=0, description="max out-of-order delay of a reading")
    speed: float = Field(1.0, gt=0, description="playback speed for live mode")
    duration: timedelta | None = Field(None, description="stop live mode after this long")
    overheat_every: int | None = Field(None, gt=0, description="live mode: one device overheats every N seconds")
    overheat_length: int = Field(150, gt=0, description="seconds of each episode")
    overheat_device: int = Field(3, ge=0, description="index of the device that overheats")
    overheat_delta: float = Field(35.0, description="°C added during an episode")
    count: int = Field(0, ge=0, description="publish this many readings per device ending now, then exit")


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--devices", type=int, help="number of devices (default 10)")
    p.add_argument("--interval-ms", type=int, help="event-time step per device (default 1000)")
    p.add_argument("--seed", type=int, help="random seed: same seed, same readings (default 1)")
    p.add_argument("--region", help="region tag (default plant-1)")
    p.add_argument("--site", help="site tag (default line-a)")
    p.add_argument("--disorder-ms", type=int, help="max out-of-order delay of a reading (default 0)")
    p.add_argument("--speed", type=float, help="playback speed for live mode (default 1.0)")
    p.add_argument("--duration", type=duration_arg, help="stop live mode after this long, e.g. 2m")
    p.add_argument("--overheat-every", type=int, metavar="SECONDS",
                   help="live mode: one device overheats every SECONDS (first time 10 s after start)")
    p.add_argument("--overheat-length", type=int, metavar="SECONDS", help="length of each episode (default 150)")
    p.add_argument("--overheat-device", type=int, help="index of the device that overheats (default 3)")
    p.add_argument("--overheat-delta", type=float, help="°C added during an episode (default 35)")
    p.add_argument("--count", type=int,
                   help="publish this many readings per device ending now, then exit (backfill mode)")


def run(config: TemperatureSimSettings, settings: Settings) -> int:
    """Publish readings: a backfill of ``count`` per device, or live until ``duration`` (or Ctrl-C)."""
    from machinewatch.kafka_io import Publisher

    sim = TemperatureSimulator(devices=config.devices, interval_ms=config.interval_ms, seed=config.seed,
                               region=config.region, site=config.site, max_disorder_ms=config.disorder_ms)
    log = logging.getLogger("machinewatch.simulate")
    with Publisher(settings) as pub:
        if config.count:
            start = datetime.now(tz=UTC) - timedelta(milliseconds=config.count * config.interval_ms)
            n = pub.send_many(sim.readings(start, config.count))
            pub.flush()
            log.info("published %d readings of %d devices", n, config.devices)
            return 0
        deadline = time.monotonic() + config.duration.total_seconds() if config.duration else None
        last_report = time.monotonic()
        periodic = None
        if config.overheat_every:
            periodic = (config.overheat_device, 10_000, config.overheat_length * 1000, config.overheat_every * 1000,
                        config.overheat_delta)
        for reading in sim.live(speed=config.speed, periodic_overheat=periodic):
            pub.send(reading)
            if time.monotonic() - last_report >= 5:
                pub.flush()
                log.info("published %d readings (%d acknowledged)", pub.sent, pub.acked)
                last_report = time.monotonic()
            if deadline is not None and time.monotonic() >= deadline:
                break
    return 0


plugin = SimulatorPlugin(
    name="temperature",
    summary="canonical temperature readings to Kafka, with periodic overheats",
    description="Publishes canonical temperature readings of --devices sensors to the readings topic: a "
    "backfill (--count per device, ending now) or live, optionally out of order (--disorder-ms) and with a "
    "device overheating every --overheat-every seconds (the demo's simulator).",
    settings_model=TemperatureSimSettings,
    run=run,
    add_arguments=_add_arguments,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
)

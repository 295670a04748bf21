"""Equipment temperature simulator: N devices, a random walk around a base, overheat episodes.

Deterministic for a seed: the same arguments always give the same readings and event ids, so a
replay overwrites instead of duplicating.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

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

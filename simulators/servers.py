"""Server metrics in the course dataset's CSV format: ts,server_id,cpu_pct,mem_pct,net_in,net_out,disk_io.

``ts`` is a time of day, as in the course file; the mapping adds the date. CPU and memory walk
around a per-server level, network and disk I/O are bursty. Anomalies: overheat = CPU pinned near
100 %, spikes = a burst on every metric, silences = a server stops reporting. To replay the real
course CSV at a chosen speed use ``machinewatch ingest replay --mapping servers FILE --speed X``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from machinewatch.config import Settings
from machinewatch.plugins import SimulatorPlugin
from simulators.feed import (
    Anomalies,
    FeedSimSettings,
    SimEvent,
    add_feed_arguments,
    anomalies_of,
    run_feed,
    write_lines,
)

FEED = "servers"
COLUMNS = ("ts", "server_id", "cpu_pct", "mem_pct", "net_in", "net_out", "disk_io")
HEADER = ",".join(COLUMNS)


def _clip(value: float, low: float = 0.0, high: float = 100.0) -> float:
    return min(high, max(low, value))


@dataclass
class ServerSimulator:
    """``servers`` servers (server_1 ...), one row each every ``interval_ms`` (5 s in the course data)."""

    servers: int = 20
    interval_ms: int = 5000
    seed: int = 1
    anomalies: Anomalies = field(default_factory=Anomalies)

    def stream(self, start: datetime) -> Iterator[SimEvent]:
        rng = random.Random(self.seed)
        cpu_base = [rng.uniform(20, 70) for _ in range(self.servers)]
        mem_base = [rng.uniform(20, 70) for _ in range(self.servers)]
        net_base = [math.exp(rng.uniform(5, 8)) for _ in range(self.servers)]
        cpu, mem = list(cpu_base), list(mem_base)
        start_ms = int(start.timestamp() * 1000)
        step = 0
        while True:
            offset = step * self.interval_ms
            ts_ms = start_ms + offset
            tod = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%H:%M:%S")
            for idx in range(self.servers):
                cpu[idx] = _clip(cpu[idx] + rng.gauss(0, 4) + (cpu_base[idx] - cpu[idx]) * 0.1)
                mem[idx] = _clip(mem[idx] + rng.gauss(0, 2) + (mem_base[idx] - mem[idx]) * 0.05)
                burst = self.anomalies.extra(idx, offset, rng)
                net_in = net_base[idx] * rng.lognormvariate(0, 0.5) * (1 + burst / 10)
                net_out = net_in * rng.uniform(0.8, 1.3)
                disk = net_base[idx] * 0.3 * rng.lognormvariate(0, 0.8) * (1 + burst / 10)
                if self.anomalies.silent(idx, offset):
                    continue
                row = [tod, f"server_{idx + 1}", round(_clip(cpu[idx] + burst), 2),
                       round(_clip(mem[idx] + burst / 3), 2), round(net_in, 2), round(net_out, 2), round(disk, 2)]
                record = dict(zip(COLUMNS, row, strict=True))
                yield SimEvent(ts_ms, FEED, record, ",".join(str(v) for v in row))
            step += 1


# -- ``machinewatch simulate servers`` (the plugin registered under ``machinewatch.simulators``) -----------------

def _write(path: Path, events: Iterable[SimEvent]) -> None:
    write_lines(path, events, header=HEADER)


def run(config: FeedSimSettings, settings: Settings) -> int:
    sim = ServerSimulator(servers=config.devices, interval_ms=config.interval_ms, seed=config.seed,
                          anomalies=anomalies_of(config))
    return run_feed("servers", config, sim, settings, _write)


plugin = SimulatorPlugin(
    name="servers",
    summary="server metrics in the course CSV format (to Kafka through its mapping, a file, or a TCP listener)",
    description="Servers writing the course project's CSV rows (cpu, memory, network, disk), with injectable "
    "overheats, silences and spikes. Published to Kafka through the same mapping 'ingest' uses, written to "
    "--output (with the header), or sent to a TCP listener (--tcp-port).",
    settings_model=FeedSimSettings,
    run=run,
    add_arguments=add_feed_arguments,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
)

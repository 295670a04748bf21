"""Equipment temperature sensors in the original project's own JSON-line format.

Emits exactly the shape of ``dados_sensores.txt`` (id_sensor, id_equipamento, sensor, data_evento,
padrao.formato, padrao.leitura.temperatura): N sensors on N pieces of equipment, a random walk
around a base temperature, deterministic for a seed. ``simulators/temperature.py`` stays as the
direct canonical-Reading generator of the first slice.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
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

FEED = "equipment"


def _format_time(ts_us: int) -> str:
    moment = datetime.fromtimestamp(ts_us // 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_us % 1_000_000:06d}Z"


def render(sensor: str, equipment: str, slot: str, when: str, temperature: float) -> str:
    """One line exactly as the original producer wrote it (including its spacing)."""
    return (f'{{"id_sensor":"{sensor}","id_equipamento":"{equipment}","sensor":"{slot}", '
            f'"data_evento":"{when}", "padrao":{{"formato":"iot:leitura:sensor:temp", '
            f'"leitura":{{"temperatura":{temperature}}}}}}}')


@dataclass
class EquipmentSimulator:
    """``sensors`` sensors, one per piece of equipment, a reading each every ``interval_ms``."""

    sensors: int = 50
    interval_ms: int = 1000
    seed: int = 1
    base_c: float = 50.0
    spread_c: float = 20.0
    step_c: float = 0.7
    anomalies: Anomalies = field(default_factory=Anomalies)

    def __post_init__(self) -> None:
        rng = random.Random(f"ids-{self.seed}")
        self.ids: list[tuple[str, str, str]] = []
        taken: set[str] = set()
        while len(self.ids) < self.sensors:
            tag = f"{rng.randrange(1000):03d}{''.join(rng.choices(string.ascii_uppercase, k=2))}"
            if tag in taken:
                continue
            taken.add(tag)
            slot = f"sensor{len(self.ids) + 1:02d}"
            self.ids.append((f"Sensor-1503-{tag}", f"Equipament-0323XH-{tag}", slot))

    def stream(self, start: datetime) -> Iterator[SimEvent]:
        """Endless events from ``start``, in event-time order, sensors a few microseconds apart."""
        rng = random.Random(self.seed)
        bases = [self.base_c + rng.uniform(-self.spread_c, self.spread_c) for _ in range(self.sensors)]
        temps = list(bases)
        start_us = int(start.timestamp() * 1_000_000)
        step = 0
        while True:
            offset_ms = step * self.interval_ms
            for idx, (sensor, equipment, slot) in enumerate(self.ids):
                temps[idx] += rng.gauss(0, self.step_c) + (bases[idx] - temps[idx]) * 0.05
                value = round(temps[idx] + self.anomalies.extra(idx, offset_ms, rng), 1)
                if self.anomalies.silent(idx, offset_ms):
                    continue
                # The original's sensors report ~1 µs apart within a round.
                ts_us = start_us + offset_ms * 1000 + idx
                when = _format_time(ts_us)
                record = {"id_sensor": sensor, "id_equipamento": equipment, "sensor": slot, "data_evento": when,
                          "padrao": {"formato": "iot:leitura:sensor:temp", "leitura": {"temperatura": value}}}
                yield SimEvent(ts_us // 1000, FEED, record, render(sensor, equipment, slot, when, value))
            step += 1


# -- ``machinewatch simulate equipment`` (the plugin registered under ``machinewatch.simulators``) ---------------

def run(config: FeedSimSettings, settings: Settings) -> int:
    sim = EquipmentSimulator(sensors=config.devices, interval_ms=config.interval_ms, seed=config.seed,
                             anomalies=anomalies_of(config))
    return run_feed("equipment", config, sim, settings, write_lines)


plugin = SimulatorPlugin(
    name="equipment",
    summary="the equipment-sensor JSON lines (to Kafka through their mapping, a file, or a TCP listener)",
    description="Equipment temperature sensors writing the original project's JSON lines, with injectable "
    "overheats, silences and spikes. Published to Kafka through the same mapping 'ingest' uses, written to "
    "--output, or sent to a TCP listener (--tcp-port).",
    settings_model=FeedSimSettings,
    run=run,
    add_arguments=add_feed_arguments,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
)

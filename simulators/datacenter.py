"""Regional data centres, each in its own dialect: India CSV in °C, USA JSON lines in °F with load as a
fraction, Germany Parquet in Kelvin with power in watts.

Historical files (``write_history``) and a live JSON-line feed for the TCP listener (each line names
its mapping in ``feed``). ``humidity_from_step`` adds a humidity field part-way through, the
schema change the collectors must survive.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import Field

from machinewatch.config import Settings
from machinewatch.plugins import SimulatorPlugin
from simulators.feed import Anomalies, FeedSimSettings, SimEvent, add_feed_arguments, anomalies_of, run_feed

REGIONS = ("dc-india", "dc-usa", "dc-germany")
FILES = {"dc-india": "india.csv", "dc-usa": "usa.jsonl", "dc-germany": "germany.parquet"}
_IST = timezone(timedelta(hours=5, minutes=30))
_INDIA_COLUMNS = ["timestamp", "server_id", "temperature_c", "cpu_load_pct", "power_kw", "humidity_pct"]


@dataclass
class DatacenterSimulator:
    """``servers`` servers per region; device index = region index * servers + server index."""

    servers: int = 5
    interval_ms: int = 10_000
    seed: int = 1
    humidity_from_step: int | None = None
    anomalies: Anomalies = field(default_factory=Anomalies)

    def device_names(self) -> list[tuple[str, str]]:
        prefix = {"dc-india": "IN-MUM", "dc-usa": "us-va", "dc-germany": "DE-FRA"}
        return [(region, f"{prefix[region]}-{n + 1:03d}") for region in REGIONS for n in range(self.servers)]

    def stream(self, start: datetime) -> Iterator[SimEvent]:
        rng = random.Random(self.seed)
        devices = self.device_names()
        temp = [rng.uniform(35, 55) for _ in devices]
        load = [rng.uniform(0.2, 0.7) for _ in devices]
        base_t, base_l = list(temp), list(load)
        start_ms = int(start.timestamp() * 1000)
        step = 0
        while True:
            offset = step * self.interval_ms
            ts_ms = start_ms + offset
            for idx, (region, name) in enumerate(devices):
                load[idx] = min(1.0, max(0.0, load[idx] + rng.gauss(0, 0.03) + (base_l[idx] - load[idx]) * 0.1))
                temp[idx] += rng.gauss(0, 0.4) + (base_t[idx] + 20 * load[idx] - 10 - temp[idx]) * 0.1
                celsius = temp[idx] + self.anomalies.extra(idx, offset, rng)
                power_kw = 0.15 + 0.45 * load[idx]
                humidity = round(rng.uniform(30, 60), 1)
                if self.anomalies.silent(idx, offset):
                    continue
                with_humidity = self.humidity_from_step is not None and step >= self.humidity_from_step
                record = _record(region, name, ts_ms, celsius, load[idx], power_kw, humidity if with_humidity else None)
                yield SimEvent(ts_ms, region, record, json.dumps({**_jsonable(record), "feed": region}))
            step += 1


def _record(region: str, name: str, ts_ms: int, celsius: float, load: float, power_kw: float,
            humidity: float | None) -> dict[str, Any]:
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if region == "dc-india":
        rec: dict[str, Any] = {"timestamp": moment.astimezone(_IST).isoformat(timespec="milliseconds"),
                               "server_id": name, "temperature_c": round(celsius, 2),
                               "cpu_load_pct": round(load * 100, 2), "power_kw": round(power_kw, 3)}
        if humidity is not None:
            rec["humidity_pct"] = humidity
    elif region == "dc-usa":
        rec = {"time": ts_ms / 1000, "host": name, "temp_f": round(celsius * 9 / 5 + 32, 2),
               "load": round(load, 4), "power_kw": round(power_kw, 3)}
        if humidity is not None:
            rec["humidity_pct"] = humidity
    else:
        rec = {"zeit": moment, "rechner": name, "temperatur_k": round(celsius + 273.15, 2),
               "last_pct": round(load * 100, 2), "leistung_w": round(power_kw * 1000, 1)}
        if humidity is not None:
            rec["feuchte_pct"] = humidity
    return rec


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat(timespec="milliseconds") if isinstance(v, datetime) else v for k, v in record.items()}


def write_history(directory: Path, events: Iterable[SimEvent]) -> dict[str, Path]:
    """Write india.csv, usa.jsonl and germany.parquet into ``directory``; returns region -> path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    paths = {region: directory / name for region, name in FILES.items()}
    germany: list[dict[str, Any]] = []
    with paths["dc-india"].open("w", newline="") as india, paths["dc-usa"].open("w") as usa:
        writer = csv.DictWriter(india, fieldnames=_INDIA_COLUMNS, restval="")
        writer.writeheader()
        for event in events:
            if event.feed == "dc-india":
                writer.writerow(event.record)
            elif event.feed == "dc-usa":
                usa.write(json.dumps(event.record) + "\n")
            else:
                germany.append(event.record)
    schema = pa.schema([("zeit", pa.timestamp("ms", tz="UTC")), ("rechner", pa.string()),
                        ("temperatur_k", pa.float64()), ("last_pct", pa.float64()), ("leistung_w", pa.float64()),
                        ("feuchte_pct", pa.float64())])
    columns = {name: [row.get(name) for row in germany] for name in schema.names}
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), paths["dc-germany"])
    return paths


# -- ``machinewatch simulate datacenter`` (the plugin registered under ``machinewatch.simulators``) --------------

class DatacenterSimSettings(FeedSimSettings):
    """The source-format settings and when the humidity field appears."""

    humidity_from_step: int | None = Field(None, ge=0, description="add a humidity field from this step on")


def _add_arguments(p: argparse._ActionsContainer) -> None:
    add_feed_arguments(p)
    p.add_argument("--humidity-from-step", type=int, help="add a humidity field from this step on")


def _write(directory: Path, events: Iterable[SimEvent]) -> None:
    write_history(directory, events)


def run(config: DatacenterSimSettings, settings: Settings) -> int:
    sim = DatacenterSimulator(servers=config.devices, interval_ms=config.interval_ms, seed=config.seed,
                              humidity_from_step=config.humidity_from_step, anomalies=anomalies_of(config))
    return run_feed("datacenter", config, sim, settings, _write)


plugin = SimulatorPlugin(
    name="datacenter",
    summary="data-centre racks in three regions: India CSV/°C, USA JSON/°F, Germany Parquet/K+W",
    description="Servers in three regions, each writing its own format and units, with injectable overheats, "
    "silences and spikes. Published to Kafka through the regions' mappings, written as india.csv, usa.jsonl "
    "and germany.parquet into the --output directory, or sent to a TCP listener (--tcp-port).",
    settings_model=DatacenterSimSettings,
    run=run,
    add_arguments=_add_arguments,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
)

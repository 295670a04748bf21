"""The writer routes results by site to more than one InfluxDB (MW_INFLUX_SITES; issue 20, item 5).

The session stack's InfluxDB is the default instance; a second influxd of its own (the same stack code,
another state dir and port) stands for a plant's instance. Results of the listed site land only there,
all others only on the default one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from machinewatch import names, query
from machinewatch.config import InfluxSite, Settings
from machinewatch.stack import Stack
from machinewatch.stack.influxdb import InfluxDB
from machinewatch.stack.private import private_settings
from machinewatch.stack.watchdog import stop_watchdog
from sinks.influxdb_writer import InfluxWriter, window_line
from tests.stack_support import create_topics
from tests.waiting import poll

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plant_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = private_settings(Path(tmp_path_factory.mktemp("plant-influx")))
    influx = InfluxDB(settings)
    try:
        influx.up(timeout=180)
        yield settings
    finally:
        influx.proc.stop()
        stop_watchdog(settings.state_dir / "run")


def _window(run: str, site: str, device: int, end_ms: int) -> dict[str, object]:
    return {
        "device_id": f"st{run}-{device}", "metric": "temperature", "source": "sim", "region": "r", "site": site,
        "unit": "°C", "window_ms": 10000, "slide_ms": 10000, "window_start_ms": end_ms - 10000,
        "window_end_ms": end_ms, "avg_value": 50.0 + device, "min_value": 40.0, "max_value": 60.0, "count": 10,
    }


def _devices(settings: Settings, run: str, since: datetime) -> set[str]:
    flux = f'''
from(bucket: "{names.BUCKET_AGGREGATES}")
  |> range(start: {since.isoformat()})
  |> filter(fn: (r) => r._field == "count" and r.device_id =~ /^st{run}-/)
  |> group()'''
    frame = query.run_flux(settings, flux)
    return set() if frame.empty else set(frame.device_id)


def test_results_of_a_listed_site_go_to_its_own_influxdb(
    stack: Stack, settings: Settings, plant_influx: Settings,
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"mw.test-{run}.aggregates"
    create_topics(settings, [topic])
    end = int(datetime.now(tz=UTC).timestamp()) * 1000
    records = [_window(run, "plant-1", 0, end), _window(run, "", 1, end),
               _window(run, "plant-2", 2, end), _window(run, "plant-2", 3, end - 10000)]
    producer = KafkaProducer(**settings.kafka_client_config())
    for record in records:
        producer.send(topic, json.dumps(record).encode())
    producer.flush()
    producer.close()

    sites = {"plant-2": InfluxSite(url=plant_influx.influx, token_file=plant_influx.secrets_dir / "influx_write_token")}
    routed = settings.model_copy(update={"influx_sites": sites})
    writer = InfluxWriter(routed, group_id=f"w-{run}", routes={topic: (window_line, names.BUCKET_AGGREGATES)})
    counters = writer.run(idle_exit_s=5)
    assert writer.written == 4 and writer.rejected == 0, counters

    since = datetime.now(tz=UTC) - timedelta(hours=1)
    on_default = poll(lambda: _devices(settings, run, since), lambda d: len(d) >= 2, 60, "the default's points")
    on_plant = poll(lambda: _devices(plant_influx, run, since), lambda d: len(d) >= 2, 60, "the plant's points")
    assert on_default == {f"st{run}-0", f"st{run}-1"}
    assert on_plant == {f"st{run}-2", f"st{run}-3"}

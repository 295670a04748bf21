"""The local stack: real Kafka, Flink and InfluxDB (and, on request, mosquitto) as native processes."""

from __future__ import annotations

import time

from machinewatch.config import Settings
from machinewatch.stack import provision
from machinewatch.stack.mosquitto import Mosquitto
from machinewatch.stack.procs import ManagedProcess
from machinewatch.stack.services import Flink, InfluxDB, Kafka, ServiceStatus, StackError

__all__ = ["Stack", "StackError"]


class Stack:
    """Provision, start, check and stop the three servers with one set of settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = Kafka(settings)
        self.influxdb = InfluxDB(settings)
        self.flink = Flink(settings)
        # The MQTT broker: started by 'up(mqtt=True)' only; stopped and reported whenever it runs.
        self.mosquitto = Mosquitto(settings)
        # The Kafka -> InfluxDB result writer, when the demo or 'pipeline' started it.
        self.writer = ManagedProcess("influx-writer", settings.state_dir / "run", "sink influxdb",
                                     tied=settings.die_with_parent)
        # The demo's live simulator.
        self.simulator = ManagedProcess("simulator", settings.state_dir / "run", "simulate temperature",
                                        tied=settings.die_with_parent)

    @property
    def services(self) -> tuple[Kafka, InfluxDB, Flink]:
        return (self.kafka, self.influxdb, self.flink)

    def up(self, timeout: float = 240, mqtt: bool = False) -> None:
        start = time.monotonic()
        provision.require("java")
        # Provision everything first so a build failure does not leave half a stack running.
        provision.kafka_libs(self.settings)
        provision.flink_home(self.settings)
        provision.influxd_binary(self.settings)
        if mqtt:
            self.mosquitto.provision()
        for service in self.services:
            service.up(timeout)
        if mqtt:
            self.mosquitto.up(timeout)
        provision.say(f"stack ready in {time.monotonic() - start:.0f}s (state in {self.settings.state_dir})")

    def down(self) -> list[str]:
        stopped = [p.name for p in (self.simulator, self.writer) if p.stop()]
        stopped += self.flink.stop_all()
        for service in (self.mosquitto, self.influxdb, self.kafka):
            if service.proc.stop():
                stopped.append(service.name)
        if self.settings.die_with_parent:
            # Imported here: the watchdog runs as 'python -m machinewatch.stack.watchdog', which warns
            # when the package has imported it already.
            from machinewatch.stack.watchdog import stop_watchdog

            stop_watchdog(self.settings.state_dir / "run")
        return stopped

    def status(self) -> list[ServiceStatus]:
        rows = [service.status() for service in self.services]
        if self.mosquitto.proc.pid() is not None:
            rows.append(self.mosquitto.status())
        return rows

    def logs(self, name: str | None, lines: int) -> str:
        procs = [
            self.kafka.proc, self.influxdb.proc, self.flink.proc, self.flink.taskmanager, self.writer, self.simulator,
            self.mosquitto.proc,
        ]
        chosen = [p for p in procs if name is None or name in p.name]
        return "\n".join(f"==> {p.name} ({p.logfile}) <==\n{p.tail(lines)}" for p in chosen)

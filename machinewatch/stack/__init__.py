"""The local stack: real Kafka, Flink and InfluxDB (and, on request, mosquitto) as native processes."""

from __future__ import annotations

import json
import os
import time
from typing import NoReturn

from machinewatch.config import Settings
from machinewatch.stack import provision
from machinewatch.stack.flink import Flink
from machinewatch.stack.influxdb import InfluxDB
from machinewatch.stack.kafka_broker import Kafka
from machinewatch.stack.mosquitto import Mosquitto
from machinewatch.stack.procs import ManagedProcess
from machinewatch.stack.service import ServiceStatus, StackError

__all__ = ["SERVERS", "Stack", "StackError"]

# The servers 'stack serve' runs in the foreground (one per container in docker/compose.yaml).
SERVERS = ("kafka", "influxdb", "flink-jobmanager", "flink-taskmanager")
# How many nodes 'up' started, recorded in the state dir so that 'status', 'logs' and 'down' cover every
# node without being told again.
SHAPE_FIELDS = ("kafka_brokers", "kafka_node_ports", "flink_taskmanagers")


def with_recorded_shape(settings: Settings) -> Settings:
    """``settings`` with the node counts and ports the stack in its state dir was started with, where the
    caller did not set them."""
    try:
        recorded = json.loads((settings.state_dir / "stack.json").read_text())
    except (FileNotFoundError, ValueError):
        return settings
    update = {k: recorded[k] for k in SHAPE_FIELDS if k in recorded and k not in settings.model_fields_set}
    return settings.model_copy(update=update) if update else settings


class Stack:
    """Provision, start, check and stop the three servers with one set of settings."""

    def __init__(self, settings: Settings) -> None:
        settings = with_recorded_shape(settings)
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

    def _record_shape(self) -> None:
        """Refuse a node count other than the one the Kafka storage was made for; then record the shape."""
        path = self.settings.state_dir / "stack.json"
        try:
            made_for = int(json.loads(path.read_text())["kafka_brokers"])
        except (FileNotFoundError, ValueError, KeyError):
            # A state dir from before the record: its Kafka, if any, is a single node.
            made_for = 1
        if made_for != self.settings.kafka_brokers and (self.kafka.dir / "data" / "meta.properties").exists():
            msg = (f"the Kafka storage in {self.settings.state_dir} was made for {made_for} node(s), not "
                   f"MW_KAFKA_BROKERS={self.settings.kafka_brokers}: use another MW_STATE_DIR, or 'stack down' "
                   "and delete that one")
            raise StackError(msg)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kafka_brokers": self.settings.kafka_brokers,
                                    "kafka_node_ports": [p for node in self.settings.kafka_node_addresses()[1:]
                                                         for p in node],
                                    "flink_taskmanagers": self.settings.flink_taskmanagers}) + "\n")

    def up(self, timeout: float = 240, mqtt: bool = False) -> None:
        start = time.monotonic()
        self._record_shape()
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
        for service in (self.mosquitto, self.influxdb, *reversed(self.kafka.nodes)):
            if service.proc.stop():
                stopped.append(service.name)
        if self.settings.die_with_parent:
            # Imported here: the watchdog runs as 'python -m machinewatch.stack.watchdog', which warns
            # when the package has imported it already.
            from machinewatch.stack.watchdog import stop_watchdog

            stop_watchdog(self.settings.state_dir / "run")
        return stopped

    def service(self, name: str) -> Kafka | InfluxDB | Flink:
        """The service of a server name of SERVERS (both Flink processes belong to one service)."""
        services: dict[str, Kafka | InfluxDB | Flink] = {"kafka": self.kafka, "influxdb": self.influxdb,
                                                         "flink": self.flink}
        found = services.get(name.split("-")[0])
        if found is None:
            msg = f"unknown server '{name}'; known: {', '.join(SERVERS)}"
            raise StackError(msg)
        return found

    def provision(self, names: tuple[str, ...] = ()) -> None:
        """Provision the named services (default all) without starting anything, e.g. in an image build."""
        chosen = {type(self.service(n)) for n in names} if names else {Kafka, InfluxDB, Flink}
        if chosen & {Kafka, Flink}:
            provision.require("java")
        if Kafka in chosen:
            provision.kafka_libs(self.settings)
        if Flink in chosen:
            provision.flink_home(self.settings)
        if InfluxDB in chosen:
            provision.influxd_binary(self.settings)

    def serve(self, name: str) -> NoReturn:
        """Run one server in the foreground, in place of this process, with the command ``up`` would start.

        The compose demo's containers run this, so a server is configured and launched by one piece of code
        whether it runs natively or in Docker. Set-up that needs the server running is ``setup``'s.
        """
        if name not in SERVERS:
            msg = f"unknown server '{name}'; known: {', '.join(SERVERS)}"
            raise StackError(msg)
        service = self.service(name)
        service.provision()
        cmd, env = self.flink.taskmanager_command() if name == "flink-taskmanager" else service.command()
        provision.say(f"{name}: serving in the foreground at {service.address()}: {' '.join(cmd[:2])} ...")
        os.execvpe(cmd[0], cmd, {**os.environ, **env})  # noqa: S606 - the server's own command line

    def ready(self, name: str) -> bool:
        """True when the server answers as ready, wherever it runs (health checks of the compose demo)."""
        try:
            return self.service(name).serving()
        except StackError:
            raise
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    def setup(self, name: str, timeout: float = 240) -> None:
        """Wait until a server (running anywhere) is ready, then its idempotent set-up: topics; buckets and tokens."""
        service = self.service(name)
        deadline = time.monotonic() + timeout
        while not self.ready(name):
            if time.monotonic() > deadline:
                msg = f"{name} at {service.address()} not ready after {timeout:.0f}s"
                raise StackError(msg)
            time.sleep(1)
        service.after_ready()
        provision.say(f"{name}: set up at {service.address()}")

    def status(self) -> list[ServiceStatus]:
        rows = [service.status() for service in self.services]
        # Every node of a Kafka cluster has its row, after node 1's.
        rows[1:1] = [peer.status() for peer in self.kafka.peers]
        if self.mosquitto.proc.pid() is not None:
            rows.append(self.mosquitto.status())
        return rows

    def logs(self, name: str | None, lines: int) -> str:
        procs = [
            *(node.proc for node in self.kafka.nodes), self.influxdb.proc, self.flink.proc, *self.flink.taskmanagers,
            self.writer, self.simulator, self.mosquitto.proc,
        ]
        chosen = [p for p in procs if name is None or name in p.name]
        return "\n".join(f"==> {p.name} ({p.logfile}) <==\n{p.tail(lines)}" for p in chosen)

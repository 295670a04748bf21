"""The stack's MQTT broker without starting it: its config binds the bind host only and keeps sessions on disk,
and a machine without mosquitto gets a message saying how to install it."""

from __future__ import annotations

from pathlib import Path

import pytest

from machinewatch.stack import Stack, mosquitto
from machinewatch.stack.mosquitto import Mosquitto
from machinewatch.stack.private import private_settings
from machinewatch.stack.provision import ProvisionError


def test_the_config_listens_on_the_bind_host_only_and_persists_sessions(tmp_path: Path) -> None:
    settings = private_settings(tmp_path, die_with_parent=False)
    lines = Mosquitto(settings)._config().splitlines()
    assert [line for line in lines if line.startswith(("listener", "port", "bind_address"))] == [
        f"listener {settings.mosquitto_port} 127.0.0.1"]
    assert "persistence true" in lines
    assert f"persistence_location {tmp_path / 'mosquitto' / 'data'}/" in lines
    assert "allow_anonymous true" in lines


def test_private_stacks_get_a_free_broker_port_of_their_own(tmp_path: Path) -> None:
    a = private_settings(tmp_path / "a", die_with_parent=False)
    ports = {a.kafka_port, a.kafka_controller_port, a.flink_rest_port, a.flink_rpc_port, a.influx_port,
             a.mosquitto_port}
    assert len(ports) == 6
    assert a.mosquitto_port != 1883


def test_a_missing_broker_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mosquitto.shutil, "which", lambda _name: None)
    monkeypatch.setattr(mosquitto, "_CANDIDATES", ())
    with pytest.raises(ProvisionError, match="apt-get install -y mosquitto"):
        mosquitto.mosquitto_binary()


def test_the_broker_is_not_part_of_a_plain_stack_until_it_runs(tmp_path: Path) -> None:
    stack = Stack(private_settings(tmp_path, die_with_parent=False))
    assert [s.name for s in stack.services] == ["kafka", "influxdb", "flink-jobmanager"]
    assert stack.mosquitto.proc.pid() is None

"""The MQTT collector as the tests drive it: the real ``machinewatch ingest mqtt`` command as a child process, its
TOML file, and a QoS 1 sender on the broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from machinewatch.config import Settings


class Collector:
    """``machinewatch ingest mqtt`` as a child process, its log in a file; never outlives the test."""

    def __init__(self, settings: Settings, conf: Path, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "machinewatch", "ingest", "mqtt", "--config", str(conf),
                    "--duration", "600"]  # ends by itself even if the test process is killed
        self.env = {**os.environ, **settings.to_env()}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        wait_for("the collector's subscriptions", lambda: "acknowledged the subscriptions" in self.text(offset),
                 timeout=60, alive=self.proc)

    def text(self, offset: int = 0) -> str:
        return self.log.read_bytes()[offset:].decode(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_for(what: str, done: Callable[[], Any], timeout: float = 60,
             alive: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert alive is None or alive.poll() is None, f"the collector exited ({alive.returncode}) waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def write_conf(path: Path, settings: Settings, client_id: str, prefix: str, topic: str, protocol: str = "5",
               max_batch: int = 5000) -> Path:
    """The collector's TOML: one subscription ``<prefix>/{site}/{device_id}/{metric}``, JSON ``{value, ts}``."""
    path.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {settings.mosquitto_port}\nclient_id = "{client_id}"\n'
        f'protocol = "{protocol}"\ntopic = "{topic}"\nmax_payload_bytes = 4096\nreconnect_max_s = 2\n\n'
        f'[mqtt.runner]\nflush_interval_s = 0.1\nretry_max_s = 2.0\nmax_batch = {max_batch}\n\n'
        f'[[mqtt.subscription]]\ntopic = "{prefix}/{{site}}/{{device_id}}/{{metric}}"\ntime = "ts"\nunit = "°C"\n')
    return path


class Sender:
    """A QoS 1 publisher on the broker: each publish waits for the broker's PUBACK."""

    def __init__(self, settings: Settings) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"mw-test-sender-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", settings.mosquitto_port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=30)
        assert info.is_published(), f"the broker did not acknowledge {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

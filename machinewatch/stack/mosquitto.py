"""The local MQTT broker: Debian's ``mosquitto``, configured and started like the other servers of the stack.

It listens on ``MW_BIND_HOST:MW_MOSQUITTO_PORT`` only, keeps sessions and queued messages on disk
(``persistence``) so a collector that was away, or a broker restart, loses nothing acknowledged, and runs
as the user who started the stack (mosquitto would otherwise switch to a ``mosquitto`` user that cannot
write the state dir). Started by ``machinewatch stack up --mqtt`` and by the MQTT tests.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
from pathlib import Path

from machinewatch.stack import provision
from machinewatch.stack.service import Service

# Where Debian installs the broker; /usr/sbin is not on every user's PATH.
_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_binary() -> Path:
    """The installed ``mosquitto``, or ProvisionError saying how to install it."""
    found = shutil.which("mosquitto") or next((c for c in _CANDIDATES if Path(c).is_file()), None)
    if found is None:
        msg = ("missing prerequisites:\n  mosquitto: not found. Install: apt-get install -y mosquitto "
               "(./run does it as root)")
        raise provision.ProvisionError(msg)
    return Path(found)


def _connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session (the readiness probe leaves nothing behind)."""
    ident = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(ident).to_bytes(2, "big") + ident
    return b"\x10" + bytes([len(body)]) + body


class Mosquitto(Service):
    """Eclipse Mosquitto 2.x, one listener on the bind host."""

    name = "mosquitto"
    markers = ("mosquitto.conf",)

    def address(self) -> str:
        return f"{self.s.bind_host}:{self.s.mosquitto_port}"

    def config_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    def _config(self) -> str:
        data = self.dir / "data"
        return "\n".join([
            "# Written by machinewatch (machinewatch/stack/mosquitto.py) on every start.",
            f"listener {self.s.mosquitto_port} {self.s.bind_host}",
            "allow_anonymous true",
            # Sessions, subscriptions and queued QoS 1 messages survive a broker restart.
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 5",
            # A collector that is away (or behind) finds what was published meanwhile, up to this many per client.
            "max_queued_messages 100000",
            # Unacknowledged messages to an MQTT 3.1.1 client (MQTT 5 clients set their own Receive Maximum).
            "max_inflight_messages 1000",
            f"user {getpass.getuser()}",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "",
        ])

    def provision(self) -> None:
        mosquitto_binary()
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.config_path().write_text(self._config())

    def start(self) -> None:
        self.proc.start([str(mosquitto_binary()), "-c", str(self.config_path())])

    def ready(self) -> bool:
        """A CONNECT answered by a CONNACK that accepts it."""
        with socket.create_connection((self.s.bind_host, self.s.mosquitto_port), timeout=5) as sock:
            sock.sendall(_connect_packet(f"mw-ready-{self.s.mosquitto_port}"))
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    return False
                answer += chunk
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        return answer == b"\x20\x02\x00\x00"

    def version(self) -> str:
        out = subprocess.run([str(mosquitto_binary()), "-h"], capture_output=True, text=True, check=False)  # noqa: S603
        for line in (out.stdout + out.stderr).splitlines():
            if line.startswith("mosquitto version"):
                return line.split()[-1]
        return "?"

"""What every server of the local stack shares: the start / ready / set-up / status lifecycle and its errors."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from machinewatch.config import Settings
from machinewatch.stack import provision
from machinewatch.stack.procs import ManagedProcess


class StackError(RuntimeError):
    """A server failed to start or to become ready; the message carries its log tail."""


@dataclass
class ServiceStatus:
    name: str
    address: str
    pid: int | None
    ready: bool
    version: str
    detail: str = ""


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.chmod(path, 0o600)


def wait_for(check: Callable[[], bool], what: str, proc: ManagedProcess, timeout: float,
             others: Sequence[ManagedProcess] = ()) -> None:
    """Poll ``check`` until true; fail at once, with its log, when ``proc`` or one of ``others`` exits."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for each in (proc, *others):
            if each.pid() is None:
                msg = f"{each.name} exited while starting. Last log lines ({each.logfile}):\n{each.tail()}"
                raise StackError(msg)
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        time.sleep(0.5)
    msg = f"{what} not ready after {timeout:.0f}s (last error: {last}). Log {proc.logfile}:\n{proc.tail()}"
    raise StackError(msg)




class Service:
    name = ""
    markers: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.dir = settings.state_dir / self.name
        self.proc = ManagedProcess(self.name, settings.state_dir / "run", *self.markers, tied=settings.die_with_parent)

    def address(self) -> str:
        raise NotImplementedError

    def provision(self) -> None:
        raise NotImplementedError

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The server's command line and the environment it adds: the same for a background start and for
        ``serve`` (the compose demo runs each server in the foreground of its container)."""
        raise NotImplementedError

    def start(self) -> None:
        cmd, env = self.command()
        self.proc.start(cmd, env=env)

    def ready(self) -> bool:
        raise NotImplementedError

    def serving(self) -> bool:
        """Ready as seen from outside, without this machine's pid files (another container's server)."""
        return self.ready()

    def version(self) -> str:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        wait_for(self.ready, self.name, self.proc, timeout)

    def up(self, timeout: float = 180) -> None:
        if self.proc.pid() is not None:
            provision.say(f"{self.name}: already running (pid {self.proc.pid()}), checking readiness")
        else:
            self.provision()
            self.start()
        self.wait_ready(timeout)
        self.after_ready()
        provision.say(f"{self.name}: ready at {self.address()} (pid {self.proc.pid()})")

    def after_ready(self) -> None:
        """Idempotent set-up that needs the server running (topics, buckets, tokens)."""

    def status(self) -> ServiceStatus:
        pid = self.proc.pid()
        ready, version, detail = False, "", ""
        if pid is not None:
            try:
                ready = self.ready()
                version = self.version()
            except Exception as exc:  # noqa: BLE001 - status reports, never raises
                detail = str(exc).splitlines()[0][:120]
        return ServiceStatus(self.name, self.address(), pid, ready, version, detail)


"""Start, find and stop the stack's server processes by the pid files the stack itself wrote."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class ManagedProcess:
    """One long-running server process, tracked by a pid file and a log file in the state dir."""

    def __init__(self, name: str, run_dir: Path, *markers: str, tied: bool = False) -> None:
        self.name = name
        # Tied: the process dies with the one that started it, even if that one is SIGKILLed (watchdog.py).
        self.tied = tied
        self.run_dir = run_dir
        # A string that must appear in the command line, so a recycled pid is never taken for ours.
        self.markers = markers
        self.pidfile = run_dir / f"{name}.pid"
        self.logfile = run_dir / f"{name}.log"

    def pid(self) -> int | None:
        """The pid if our process is alive, else None (stale pid files are removed)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _alive(pid):
            self.pidfile.unlink(missing_ok=True)
            return None
        cmdline = _cmdline(pid)
        return pid if any(m in cmdline for m in self.markers) else None

    def start(
        self, cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.tied:
            from machinewatch.stack.watchdog import ensure_watchdog

            ensure_watchdog(self.run_dir)
        full_env = {**os.environ, **(env or {})}
        with open(self.logfile, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} start: {' '.join(cmd)}\n".encode())
            out.flush()
            # A new session: the server outlives the CLI and is stopped by pid, as a group.
            proc = subprocess.Popen(  # noqa: S603
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        self.pidfile.write_text(f"{proc.pid}\n")
        # Until the child has exec'd, /proc/<pid>/cmdline is still ours and no marker matches:
        # wait for the exec so that pid() never mistakes a starting server for a dead one.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            cmdline = _cmdline(proc.pid)
            if any(m in cmdline for m in self.markers):
                break
            time.sleep(0.01)
        log.info("%s started, pid %d, log %s", self.name, proc.pid, self.logfile)
        return proc.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``. True if it was running."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing", self.name, pid, timeout)
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pidfile.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            with open(self.logfile, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 256 * 1024))
                data = fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(data.splitlines()[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    """True if the pid runs and is not a zombie (a zombie is a dead server not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):  # reap it if it is our own child
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""

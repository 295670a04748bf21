"""A killed test run leaves no server behind: a private stack's servers die with the process that
started them, even when that process is SIGKILLed and never reaches its clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.process_support import family

pytestmark = pytest.mark.integration

# A stand-in for a test run: starts a private Kafka and a long-running "writer" child of its own, says
# their pids, then waits to be killed.
STARTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from machinewatch.stack import Stack
    from machinewatch.stack.private import private_settings

    stack = Stack(private_settings(Path(sys.argv[1])))
    stack.kafka.up(timeout=180)
    stack.writer.start([sys.executable, "-c", "import time; time.sleep(600)", "sink influxdb"])
    print(stack.kafka.proc.pid(), stack.writer.pid(), flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_servers_of_a_sigkilled_run_are_stopped(tmp_path: Path) -> None:
    starter = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", STARTER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert starter.stdout is not None
        line = starter.stdout.readline()
        assert line.strip(), f"the starter exited early ({starter.wait()}) without starting Kafka"
        kafka, writer = (int(p) for p in line.split())
        servers = family([kafka, writer])
        assert _alive(kafka) and _alive(writer)
        watchdog = int((tmp_path / "run" / "watchdog.pid").read_text())
        assert _alive(watchdog)
    finally:
        # What a CI timeout does to pytest: no finally, no atexit, no stack.down().
        starter.send_signal(signal.SIGKILL)
        starter.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in servers | {watchdog}):
        time.sleep(0.25)
    left = sorted(p for p in servers | {watchdog} if _alive(p))
    assert not left, f"still running 20 s after the starter was killed: {left}"
    log = (tmp_path / "run" / "watchdog.log").read_text()
    assert "stopped server process groups" in log, log

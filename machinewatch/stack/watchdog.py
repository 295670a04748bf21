"""Stops a private stack's servers when the process that started them dies, even by SIGKILL.

A test run or benchmark that is killed never reaches its ``finally: stack.down()``, and its servers
(each in a session of its own, so Ctrl-C does not reach them) would run on. So a private stack ties its
run directory to the starting process: the first server it starts also starts this watchdog, a small
process that polls its parent and, once the parent is gone, stops every process group named by a pid
file in that run directory (the servers and their children, e.g. PyFlink's Python workers), SIGTERM
first and SIGKILL after a grace period. ``stop_watchdog`` ends it quietly after a normal ``down``.

The dev stack of ``machinewatch stack up`` is not tied: it is meant to outlive the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

PIDFILE = "watchdog.pid"
# Processes of ours the watchdog started, per run dir, so one run dir gets one watchdog.
_started: dict[Path, subprocess.Popen[bytes]] = {}


def ensure_watchdog(run_dir: Path, grace_s: float = 5.0) -> int:
    """Start the watchdog for ``run_dir`` (once per process); returns its pid.

    ``grace_s``: how long the servers get between SIGTERM and SIGKILL once the parent is gone.
    """
    run_dir = run_dir.resolve()
    proc = _started.get(run_dir)
    if proc is not None and proc.poll() is None:
        return proc.pid
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "watchdog.log", "ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "machinewatch.stack.watchdog", "--parent", str(os.getpid()),
             "--run-dir", str(run_dir), "--grace", str(grace_s)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            # Its own session: a signal to the starter's process group (Ctrl-C) must not end it early.
            start_new_session=True,
        )
    _started[run_dir] = proc
    (run_dir / PIDFILE).write_text(f"{proc.pid}\n")
    return proc.pid


def stop_watchdog(run_dir: Path) -> None:
    """End the watchdog of ``run_dir`` without it touching anything (the stack was stopped normally)."""
    proc = _started.pop(run_dir.resolve(), None)
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    (run_dir / PIDFILE).unlink(missing_ok=True)


def _session_leader(pid: int) -> bool:
    """True if ``pid`` runs and leads its own session, as every server we start does (start_new_session).

    A pid file left from an earlier run could name a recycled pid: an unrelated process is almost never
    a session leader, so it is never signalled.
    """
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    state, session = fields[0], int(fields[3])
    return state != "Z" and session == pid


def _servers(run_dir: Path) -> list[int]:
    pids = []
    for pidfile in run_dir.glob("*.pid"):
        if pidfile.name == PIDFILE:
            continue
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().strip())
            if _session_leader(pid):
                pids.append(pid)
    return pids


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_servers(run_dir: Path, grace_s: float) -> list[int]:
    """SIGTERM every server group named in ``run_dir``; SIGKILL what is left after ``grace_s``."""
    pids = _servers(run_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    return pids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent", type=int, required=True, help="pid whose death stops the servers")
    parser.add_argument("--run-dir", type=Path, required=True, help="the stack's run dir (its *.pid files)")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between checks of the parent")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s watchdog: %(message)s")
    released = False

    def release(_signum: int, _frame: object) -> None:
        nonlocal released
        released = True

    signal.signal(signal.SIGUSR1, release)
    log.info("watching pid %d for %s", args.parent, args.run_dir)
    # The parent is gone once we were re-parented (to init or a subreaper).
    while not released and os.getppid() == args.parent:
        time.sleep(args.every)
    if released:
        log.info("released: the stack was stopped normally")
        return 0
    pids = stop_servers(args.run_dir, args.grace)
    log.info("pid %d is gone: stopped server process groups %s", args.parent, pids)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Managed processes: started in their own session, found by pid file and marker, stopped by pid."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from machinewatch.stack.procs import ManagedProcess


def test_start_find_stop(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", tmp_path, "mw-test-sleeper")
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(60)", "mw-test-sleeper"])
    assert proc.pid() == pid
    assert proc.stop(timeout=5)
    assert proc.pid() is None
    assert not proc.pidfile.exists()
    assert proc.stop() is False  # stopping twice is harmless


def test_a_recycled_pid_is_not_taken_for_ours(tmp_path: Path) -> None:
    proc = ManagedProcess("other", tmp_path, "a-marker-nobody-has")
    proc.pidfile.write_text("1\n")  # pid 1 is alive but is not our server
    assert proc.pid() is None


def test_dead_process_clears_pid_file(tmp_path: Path) -> None:
    proc = ManagedProcess("quick", tmp_path, "mw-test-quick")
    proc.start([sys.executable, "-c", "print('hello')", "mw-test-quick"])
    import time

    deadline = time.monotonic() + 10
    while proc.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.pid() is None
    assert "hello" in proc.tail()


def test_kafka_cluster_ids_never_look_like_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from machinewatch.stack import kafka_broker as services

    # 0xf8 base64-encodes to a leading "-": the first UUID drawn must be skipped.
    drawn = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(services.uuid, "uuid4", lambda: next(drawn))
    assert services.new_cluster_id() == "AQEBAQEBAQEBAQEBAQEBAQ"

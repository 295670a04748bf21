"""A real stack (Kafka, Flink, InfluxDB) for the integration tests: free ports, its own state dir.

Started once per session by the same ``Stack`` code as ``machinewatch stack up``, stopped at the end.
Set MW_TEST_KEEP_STACK=1 to leave it running for inspection, or MW_TEST_REUSE_STACK=1 to run the tests
against the stack your MW_* settings name (e.g. the one ``machinewatch stack up`` started), which is
then started if needed and left running. Tests keep to their own device ids, so they can share it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from machinewatch.config import Settings, load_settings
from machinewatch.stack import Stack
from machinewatch.stack.private import private_settings


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    if os.environ.get("MW_TEST_REUSE_STACK"):
        return load_settings()
    # Free ports, own state, and remote addresses/tokens from the caller's environment ignored: the tests
    # never reach a real remote system by accident; the servers die with this process (watchdog).
    keep = bool(os.environ.get("MW_TEST_KEEP_STACK"))
    return private_settings(Path(tmp_path_factory.mktemp("mw-state")), die_with_parent=not keep)


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack]:
    stack = Stack(settings)
    try:
        stack.up(timeout=300)
        yield stack
    finally:
        if not (os.environ.get("MW_TEST_KEEP_STACK") or os.environ.get("MW_TEST_REUSE_STACK")):
            stack.down()


def require_free_slot(settings: Settings, seconds: float = 60) -> None:
    """Fail clearly (instead of timing out later) when no Flink task slot is free for a test's own job."""
    import time

    import requests

    deadline = time.monotonic() + seconds
    available = 0
    while time.monotonic() < deadline:
        available = int(requests.get(f"{settings.flink_rest}/overview", timeout=10).json().get("slots-available", 0))
        if available > 0:
            return
        time.sleep(1)
    pytest.fail(f"no free Flink task slot for this test's job after {seconds:.0f}s: cancel other jobs "
                "('machinewatch jobs list' / 'jobs cancel --job-id ...') or use a private stack")

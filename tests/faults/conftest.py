"""A PRIVATE stack for the fault scenarios: free ports and a temporary state dir, always stopped at the end.

These tests kill and stop servers, so they never touch a stack they did not start themselves (there is
deliberately no "reuse" switch). Scenarios marked ``faults`` take minutes; they run with ``./run faults``
(or ``pytest -m faults tests/faults``, or MW_RUN_FAULTS=1) and are skipped by a plain ``pytest``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from machinewatch.config import Settings
from machinewatch.stack import Stack
from machinewatch.stack.private import private_settings


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: only this directory uses it.
    config.addinivalue_line("markers", "faults: fault-injection scenarios on a private stack (minutes; ./run faults)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MW_RUN_FAULTS") or "faults" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="fault scenarios take minutes: run them with ./run faults")
    for item in items:
        if item.get_closest_marker("faults") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fault_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return private_settings(Path(tmp_path_factory.mktemp("mw-faults")))


@pytest.fixture(scope="session")
def fault_stack(fault_settings: Settings) -> Iterator[Stack]:
    stack = Stack(fault_settings)
    try:
        stack.up(timeout=300)
        yield stack
    finally:
        if not os.environ.get("MW_FAULTS_KEEP_STACK"):
            stack.down()

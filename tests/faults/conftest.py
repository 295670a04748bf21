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

from machinewatch.config import Settings, load_settings
from machinewatch.stack import Stack
from tests.stack_support import free_ports


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


def private_settings(state: Path, **extra: object) -> Settings:
    """Settings of a private stack; remote addresses and given tokens from the environment are ignored."""
    kafka, controller, rest, rpc, influx = free_ports(5)
    return load_settings(
        state_dir=state, kafka_port=kafka, kafka_controller_port=controller, flink_rest_port=rest,
        flink_rpc_port=rpc, influx_port=influx, kafka_bootstrap=None, flink_rest_address=None, influx_url=None,
        influx_token=None, influx_write_token=None, influx_read_token=None, **extra,
    )


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

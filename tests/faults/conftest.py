"""A PRIVATE stack for the fault scenarios: free ports and a temporary state dir, stopped after the last
test of this directory (package scope: it does not idle beside the integration tests' stack).

These tests kill and stop servers, so they never touch a stack they did not start themselves (there is
deliberately no "reuse" switch). They run with every ``./run test`` (and so in CI); ``./run faults``
runs this directory alone. While the stack lives, every command line on the machine is sampled, so a
secret passed as an argument, even to a tool that runs for a second, is seen (test_security.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from machinewatch.config import Settings
from machinewatch.stack import Stack
from machinewatch.stack.private import private_settings
from tests.process_support import CmdlineSampler


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: only this directory uses it.
    config.addinivalue_line("markers", "faults: fault-injection scenarios on a private stack (minutes)")


@pytest.fixture(scope="package")
def fault_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # MW_FAULTS_KEEP_STACK=1 leaves the stack running for inspection (then it is not tied to this run).
    keep = bool(os.environ.get("MW_FAULTS_KEEP_STACK"))
    return private_settings(Path(tmp_path_factory.mktemp("mw-faults")), die_with_parent=not keep)


@pytest.fixture(scope="package")
def fault_cmdlines() -> Iterator[CmdlineSampler]:
    with CmdlineSampler() as sampler:
        yield sampler


@pytest.fixture(scope="package")
def fault_stack(fault_settings: Settings, fault_cmdlines: CmdlineSampler) -> Iterator[Stack]:
    stack = Stack(fault_settings)
    try:
        stack.up(timeout=300)
        yield stack
    finally:
        if not os.environ.get("MW_FAULTS_KEEP_STACK"):
            stack.down()

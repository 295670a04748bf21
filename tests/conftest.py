"""Suite-wide hooks: a failure is reported the moment it happens, not only in the final summary.

A CI run stopped by its time limit (or by hand) never reaches pytest's summary; without this, a red
dot is all that would be left of a failure in a long run (ci3 of issue 13 lost its reason that way).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

_HEAD = 6000  # characters of each failure written at once; the summary still has all of it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    terminal = item.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is None:
        return
    text = report.longreprtext
    if len(text) > _HEAD:
        text = "...\n" + text[-_HEAD:]
    terminal.write_line("")
    terminal.write_sep("!", f"FAILED ({report.when}) {item.nodeid}", red=True)
    terminal.write_line(text)
    terminal.write_sep("!", f"end of {item.nodeid}", red=True)

"""Waiting in tests: poll until a condition holds or an overall deadline passes.

One slow or failed answer (a query that timed out while the writer flushed, a server restarting)
must not fail a test that still has time left: errors inside the condition are logged and polling
goes on; only the deadline fails the test, naming what it waited for and the last error seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)


def wait_for(pred: Callable[[], object], seconds: float, what: str, every: float = 1.0) -> None:
    """Return as soon as ``pred()`` is truthy; AssertionError after ``seconds`` naming ``what``."""
    deadline = time.monotonic() + seconds
    last_error: Exception | None = None
    while True:
        try:
            if pred():
                return
        except Exception as exc:  # a busy or restarting server answers with errors: keep polling
            last_error = exc
            log.debug("waiting for %s: %s: %s", what, type(exc).__name__, exc)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(every, remaining))  # the last look is at the deadline itself
    msg = f"timed out after {seconds:.0f}s waiting for {what}"
    if last_error is not None:
        msg += f" (last error: {type(last_error).__name__}: {last_error})"
    raise AssertionError(msg)


T = TypeVar("T")


def poll(fetch: Callable[[], T], done: Callable[[T], bool], seconds: float, what: str, every: float = 1.0) -> T:
    """The first answer of ``fetch()`` that is ``done``, or at the deadline the last answer that came.

    The caller then asserts on the answer itself, with a message that says what is missing. Errors
    inside ``fetch`` are logged and polling goes on; only when no answer at all came before the
    deadline is that an AssertionError (naming ``what`` and the last error).
    """
    answers: list[T] = []

    def check() -> bool:
        answer = fetch()
        answers[:] = [answer]
        return done(answer)

    try:
        wait_for(check, seconds, what, every)
    except AssertionError:
        if not answers:
            raise
        log.warning("timed out after %.0fs waiting for %s; checking the last answer", seconds, what)
    return answers[0]


def wait_for_count(count: Callable[[], int], target: int, stall_s: float, what: str, every: float = 3.0) -> int:
    """Wait until ``count()`` reaches ``target`` for as long as it keeps growing; return the last count.

    A big result arrives at the speed of the machine: a loaded machine is slower, not wrong. So this
    fails only when the count has not grown for ``stall_s`` seconds (errors count as no progress),
    never because the whole wait took long. The caller then asserts on the full answer.
    """
    last, last_growth = -1, time.monotonic()
    last_error: Exception | None = None
    while True:
        try:
            now = count()
        except Exception as exc:  # a busy server may miss one answer: that alone is not a stall
            last_error = exc
            log.debug("counting %s: %s: %s", what, type(exc).__name__, exc)
        else:
            if now >= target:
                return now
            if now > last:
                if last >= 0:
                    log.info("%s: %d of %d", what, now, target)
                last, last_growth = now, time.monotonic()
        if time.monotonic() - last_growth >= stall_s:
            break
        time.sleep(every)
    msg = f"{what}: stuck at {max(last, 0)} of {target} for {stall_s:.0f}s"
    if last_error is not None:
        msg += f" (last error: {type(last_error).__name__}: {last_error})"
    raise AssertionError(msg)

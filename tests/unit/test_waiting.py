"""The tests' wait helper survives failed polls and fails at its deadline naming what and why."""

from __future__ import annotations

import pytest

from tests import waiting


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr(waiting.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(waiting.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    return now


def test_errors_inside_the_condition_do_not_end_the_wait(clock: list[float]) -> None:
    answers: list[object] = [TimeoutError("read timed out"), False, TimeoutError("again"), True]

    def pred() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    waiting.wait_for(pred, 10, "the windows", every=1)
    assert answers == [] and clock[0] == 3


def test_the_deadline_fails_naming_what_and_the_last_error(clock: list[float]) -> None:
    def pred() -> bool:
        msg = f"refused at {clock[0]:.0f}s"
        raise ConnectionError(msg)

    with pytest.raises(AssertionError) as info:
        waiting.wait_for(pred, 5, "the alerts", every=2)
    assert str(info.value) == "timed out after 5s waiting for the alerts (last error: ConnectionError: refused at 5s)"


def test_a_condition_that_never_holds_fails_without_an_error_note(clock: list[float]) -> None:
    with pytest.raises(AssertionError, match=r"^timed out after 3s waiting for nothing$"):
        waiting.wait_for(lambda: False, 3, "nothing")


def test_poll_returns_the_first_good_answer_past_errors(clock: list[float]) -> None:
    answers: list[object] = [[1], TimeoutError("slow"), [1, 2, 3], [1, 2, 3, 4]]

    def fetch() -> list[int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    assert waiting.poll(fetch, lambda rows: len(rows) >= 3, 10, "three rows") == [1, 2, 3]


def test_poll_at_the_deadline_returns_the_last_answer_for_the_caller_to_explain(clock: list[float]) -> None:
    answers: list[object] = [[1], [1, 2], TimeoutError("slow"), TimeoutError("slow")]

    def fetch() -> list[int]:
        answer = answers.pop(0) if answers else TimeoutError("slow")
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    assert waiting.poll(fetch, lambda rows: len(rows) >= 3, 5, "three rows") == [1, 2]


def test_poll_without_any_answer_fails_naming_the_last_error(clock: list[float]) -> None:
    def fetch() -> list[int]:
        msg = "InfluxDB did not answer"
        raise TimeoutError(msg)

    with pytest.raises(AssertionError, match=r"waiting for three rows \(last error: TimeoutError: InfluxDB did not"):
        waiting.poll(fetch, lambda rows: len(rows) >= 3, 5, "three rows")


def test_count_wait_goes_on_while_the_count_grows_however_long_it_takes(clock: list[float]) -> None:
    counts = iter(range(0, 1001, 10))  # 100 answers, each 3 s apart: 300 s in all, far past the stall limit

    assert waiting.wait_for_count(lambda: next(counts), 1000, 30, "windows", every=3) == 1000
    assert clock[0] >= 297


def test_count_wait_fails_when_the_count_stops_growing(clock: list[float]) -> None:
    answers: list[int | Exception] = [5, 8, TimeoutError("busy"), 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]

    def count() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(AssertionError, match=r"windows: stuck at 8 of 10 for 20s \(last error: TimeoutError: busy"):
        waiting.wait_for_count(count, 10, 20, "windows", every=3)
    assert 20 <= clock[0] <= 26


def test_count_wait_treats_errors_before_any_answer_as_no_progress(clock: list[float]) -> None:
    def count() -> int:
        msg = "down"
        raise TimeoutError(msg)

    with pytest.raises(AssertionError, match=r"stuck at 0 of 3 for 9s \(last error: TimeoutError: down"):
        waiting.wait_for_count(count, 3, 9, "rows", every=3)

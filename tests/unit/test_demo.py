"""The demo's verdict: it fails, saying which result is missing, unless windows and alerts arrived."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from machinewatch import demo, query
from machinewatch.config import load_settings

SETTINGS = load_settings(influx_read_token="x")
WINDOWS = pd.DataFrame({"_time": [datetime(2025, 1, 1, tzinfo=UTC)], "device_id": ["sensor-0001"], "avg": [40.0]})
ALERTS = pd.DataFrame({"_time": [datetime(2025, 1, 1, tzinfo=UTC)], "device_id": ["sensor-0003"], "state": ["opened"]})
EMPTY = pd.DataFrame()


def test_windows_and_an_alert_pass() -> None:
    assert demo.verdict(SETTINGS, demo.Seen(WINDOWS, ALERTS), 100, True, "w.log") is None


def test_no_window_fails_naming_the_bucket_and_where_to_look() -> None:
    why = demo.verdict(SETTINGS, demo.Seen(EMPTY, EMPTY), 100, True, "/run/influx-writer.log")
    assert why is not None
    assert why.startswith("no window result reached InfluxDB in 100s (bucket 'aggregates'")
    assert "machinewatch jobs list" in why and "/run/influx-writer.log" in why


def test_windows_without_an_alert_fail_naming_the_overheat_job() -> None:
    why = demo.verdict(SETTINGS, demo.Seen(WINDOWS, EMPTY), 100, True, "w.log")
    assert why is not None
    assert why.startswith("window results arrived, but no overheat alert transition reached InfluxDB (bucket 'alerts'")
    assert "sustained-overheat job" in why


def test_a_watch_too_short_for_the_first_alert_says_so() -> None:
    why = demo.verdict(SETTINGS, demo.Seen(WINDOWS, EMPTY), 30, True, "w.log")
    assert why is not None
    assert "opens about 70s after the simulator starts" in why and "--duration" in why


def test_watch_survives_a_failed_poll_and_returns_the_final_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    answers: list[Any] = [query.QueryError("InfluxDB at x did not answer within 60 s"), WINDOWS, WINDOWS, WINDOWS]

    def window_aggregates(*_args: Any, **_kwargs: Any) -> pd.DataFrame:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(demo.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(demo.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(demo.query, "window_aggregates", window_aggregates)
    monkeypatch.setattr(demo.query, "run_flux", lambda *_a, **_k: ALERTS)
    started = datetime(2025, 1, 1, tzinfo=UTC)
    seen = demo.watch(SETTINGS, started, started, duration=30)
    assert answers == [] and clock[0] == 30  # polls at 10, 20 (the first failed), 30 and the final one
    assert seen.windows is WINDOWS and seen.alerts is ALERTS


@pytest.mark.parametrize(("seen", "code", "said"), [
    (demo.Seen(EMPTY, EMPTY), 1, "demo failed: no window result"),
    (demo.Seen(WINDOWS, EMPTY), 1, "demo failed: window results arrived, but no overheat alert"),
    (demo.Seen(WINDOWS, ALERTS), 0, "everything keeps running"),
])
def test_run_exits_non_zero_and_says_why(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         seen: demo.Seen, code: int, said: str) -> None:
    class FakeStack:
        def __init__(self, _settings: object) -> None:
            self.writer = type("Writer", (), {"logfile": "w.log"})()

        def up(self) -> None:
            pass

    monkeypatch.setattr(demo, "Stack", FakeStack)
    monkeypatch.setattr(demo, "ensure_pipeline", lambda *_a: None)
    monkeypatch.setattr(demo, "ensure_simulator", lambda *_a: True)
    monkeypatch.setattr(demo, "watch", lambda *_a: seen)
    assert demo.run(SETTINGS, duration=100, devices=10) == code
    assert said in capsys.readouterr().err

"""Every HTTP answer a user waits on is bounded by a named setting, and the message names it.

No servers: a local socket that accepts connections and never answers stands in for a busy
InfluxDB or JobManager, so the timeout fires with a small setting.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from dashboards.streamlit import data
from machinewatch import jobs, query
from machinewatch.cli import main
from machinewatch.config import Settings, load_settings

# The queries here never get an answer; influxdb-client's advice about pivot() is noise.
pytestmark = pytest.mark.filterwarnings("ignore::influxdb_client.client.warnings.MissingPivotFunction")


@pytest.fixture
def silent_url() -> Iterator[str]:
    """http://127.0.0.1:PORT of a server that accepts every connection and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def closed_url() -> str:
    """http://127.0.0.1:PORT where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _settings(**overrides: object) -> Settings:
    return load_settings(influx_read_token="not-a-real-token", **overrides)


def test_query_times_out_after_the_setting_and_names_it(silent_url: str) -> None:
    settings = _settings(influx_url=silent_url, query_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(query.QueryError) as info:
        query.window_aggregates(settings, datetime.now(tz=UTC) - timedelta(minutes=5))
    assert time.monotonic() - started < 5
    assert str(info.value) == (
        f"InfluxDB at {silent_url} did not answer within 0.5 s; raise MW_QUERY_TIMEOUT_S (now 0.5) "
        "if it is busy, e.g. while the writer flushes or a backfill runs"
    )


def test_query_to_nothing_listening_says_where_it_looked(closed_url: str) -> None:
    with pytest.raises(query.QueryError, match=f"cannot connect to InfluxDB at {closed_url}"):
        query.run_flux(_settings(influx_url=closed_url), "buckets()")


def test_query_timeout_default_is_a_minute() -> None:
    assert Settings.model_fields["query_timeout_s"].default == 60.0


def test_flink_rest_call_times_out_after_the_setting_and_names_it(silent_url: str) -> None:
    settings = _settings(flink_rest_address=silent_url, flink_rest_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(requests.Timeout, match=r"did not answer GET /jobs/overview within 0\.5 s; "
                                               r"raise MW_FLINK_REST_TIMEOUT_S \(now 0\.5\)"):
        jobs.list_jobs(settings)
    assert time.monotonic() - started < 5


def test_flink_rest_unreachable_names_the_address(closed_url: str) -> None:
    with pytest.raises(requests.ConnectionError, match=f"cannot reach the Flink JobManager at {closed_url}"):
        jobs.cancel(_settings(flink_rest_address=closed_url), "0" * 32)


def test_dashboard_query_times_out_after_its_setting_and_names_it(silent_url: str) -> None:
    dash = data.Dashboard.from_settings(_settings(influx_url=silent_url, dashboard_timeout_s=0.5))
    with pytest.raises(data.InfluxUnavailable, match=r"did not answer within 0\.5 s; raise MW_DASHBOARD_TIMEOUT_S"):
        dash.data_volume(data.last(timedelta(minutes=5)))


@pytest.mark.parametrize(("argv", "env", "setting"), [
    (["query", "--last", "5m"], {"MW_QUERY_TIMEOUT_S": "0.5"}, "MW_QUERY_TIMEOUT_S"),
    (["jobs", "list"], {"MW_FLINK_REST_TIMEOUT_S": "0.5"}, "MW_FLINK_REST_TIMEOUT_S"),
])
def test_cli_prints_one_line_naming_the_setting_and_exits_non_zero(
    silent_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str], env: dict[str, str], setting: str,
) -> None:
    monkeypatch.setenv("MW_INFLUX_URL", silent_url)
    monkeypatch.setenv("MW_FLINK_REST_ADDRESS", silent_url)
    monkeypatch.setenv("MW_INFLUX_READ_TOKEN", "not-a-real-token")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("machinewatch: error: ") and setting in err and "within 0.5 s" in err


def test_cli_names_a_bad_setting_value(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MW_QUERY_TIMEOUT_S", "soon")
    assert main(["query"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "invalid setting MW_QUERY_TIMEOUT_S='soon'" in err

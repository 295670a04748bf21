"""The Flux workbench against the real InfluxDB: every preset runs, Flux errors carry their position, and
the page in headless Chromium runs a preset (rows, chart, query time, CSV download) and shows a broken
query's line and column.

A small data set with known numbers is written under a device prefix unique to the run.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS

from dashboards.streamlit import headless, workbench
from machinewatch import names
from machinewatch.config import Settings
from machinewatch.query import QueryError, run_flux
from machinewatch.stack import Stack
from tests.influx_points import to_point

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
# device suffix -> peak temperature of its window averages
PEAKS = {"a": 61.5, "b": 48.0, "c": 73.25}
WINDOWS = 6
BROKEN = 'from(bucket: "aggregates")\n    |> range(start: -1h)\n    |> fliter(fn: (r) => true)\n'


@dataclass
class Known:
    prefix: str
    now: datetime


@pytest.fixture(scope="module")
def known(stack: Stack, settings: Settings) -> Known:
    prefix = f"wb-{uuid.uuid4().hex[:6]}"
    now = datetime.now(tz=UTC)
    last_end_ms = (int(now.timestamp() * 1000) // 10_000) * 10_000 - 30_000
    docs = []
    for suffix, peak in PEAKS.items():
        for k in range(WINDOWS):
            avg = peak - k  # the newest window is the hottest
            docs.append({"device_id": f"{prefix}-{suffix}", "metric": "temperature", "source": "wb", "region": "r1",
                         "site": "s1", "unit": "°C", "window_ms": 10_000,
                         "window_end_ms": last_end_ms - k * 10_000, "avg_value": avg, "min_value": avg - 1,
                         "max_value": avg + 1, "count": 10})
    with InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(names.BUCKET_AGGREGATES, record=[to_point(d) for d in docs])
    return Known(prefix, now)


def test_every_preset_runs_with_its_form_defaults(known: Known, settings: Settings) -> None:
    """The form's defaults are values InfluxDB accepts for every library file: each documented input is bound
    and of the right type (an undocumented one would be an undefined identifier)."""
    for name, preset in workbench.presets().items():
        given = {"devicePrefix": known.prefix}
        values = workbench.option_values(preset.inputs, given, datetime.now(tz=UTC))
        try:
            run_flux(settings, preset.text, values)
        except QueryError as exc:
            pytest.fail(f"preset {name} failed with its defaults: {exc}")
    hottest = workbench.presets()["hottest_devices"]
    values = workbench.option_values(hottest.inputs, {"devicePrefix": known.prefix}, datetime.now(tz=UTC))
    rows = run_flux(settings, hottest.text, values)
    assert dict(zip(rows["device_id"], rows["peak_avg"], strict=True)) == {f"{known.prefix}-{s}": p
                                                                          for s, p in PEAKS.items()}


def test_a_compile_error_names_its_line_and_column(settings: Settings) -> None:
    with pytest.raises(QueryError) as info:
        run_flux(settings, BROKEN, {"start": datetime.now(tz=UTC) - timedelta(hours=1)})
    errors = workbench.flux_errors(info.value.server_message)
    assert [(e.line, e.column) for e in errors] == [(3, 8)], info.value.server_message
    assert "fliter" in errors[0].message
    # a parse error, too
    with pytest.raises(QueryError) as info:
        run_flux(settings, 'from(bucket: "aggregates")\n  |> range(start: -1h\n', {})
    [err] = workbench.flux_errors(info.value.server_message)[:1]
    assert err.line is not None and err.column is not None, info.value.server_message


def test_a_runtime_error_is_reported_not_raised_raw(settings: Settings) -> None:
    """An error InfluxDB finds while it streams the answer (no such bucket) is a QueryError with its words."""
    with pytest.raises(QueryError) as info:
        run_flux(settings, 'from(bucket: "no-such-bucket-here") |> range(start: -1m)', {})
    assert "no-such-bucket-here" in info.value.server_message


# --- the page in headless Chromium -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url(known: Known, settings: Settings) -> Iterator[str]:
    with headless.dashboard(settings) as base:
        yield base


class Page:
    def __init__(self, browser: headless.Chromium) -> None:
        self.browser = browser

    def text(self) -> str:
        return re.sub(r"\s+", " ", self.browser.evaluate("document.body ? document.body.innerText : ''") or "")

    def running(self) -> bool:
        return bool(self.browser.evaluate(
            "!!document.querySelector('[data-testid=\"stStatusWidget\"]')"
            " && document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')"))

    def wait(self, condition: Any, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition() and not self.running():
                return
            time.sleep(0.5)
        pytest.fail(f"{what} did not show within {timeout:.0f}s; the page says: {self.text()[:3000]!r}")

    def count(self, testid: str) -> int:
        return int(self.browser.evaluate(f"document.querySelectorAll('[data-testid=\"{testid}\"]').length") or 0)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = self.browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (ARTIFACTS / name).write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
def page() -> Iterator[Page]:
    with tempfile.TemporaryDirectory(prefix="mw-chromium-", ignore_cleanup_errors=True) as profile:
        browser = headless.Chromium(profile)
        try:
            yield Page(browser)
        finally:
            browser.close()


def test_workbench_runs_a_preset_and_offers_its_csv_in_chromium(known: Known, base_url: str, page: Page) -> None:
    url = f"{base_url}flux_workbench?preset=hottest_devices&devicePrefix={known.prefix}&run=1"
    page.browser.call("Page.navigate", url=url)
    # the table and the chart load their code lazily: wait for them, not only for the caption
    page.wait(lambda: "query time" in page.text() and page.count("stVegaLiteChart") >= 1
              and page.count("stDataFrame") >= 1, "the preset's result")
    time.sleep(2)  # let the table draw its cells
    text = page.text()
    dom = page.browser.evaluate("document.documentElement.outerHTML") or ""
    page.screenshot("workbench.png")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "workbench.html").write_text(dom)
    assert "Flux workbench" in text and "Which devices ran hottest?" in text
    assert page.count("stException") == 0, "the page shows an exception box"
    assert re.search(r"\b3 rows · \d+ columns · query time [\d,]+ ms", text), text[:3000]
    assert page.count("stDataFrame") == 1
    cells = page.browser.evaluate("Array.from(document.querySelectorAll('[data-testid^=\"glide-cell\"]'))"
                                  ".map(c => c.innerText)") or []
    assert {f"{known.prefix}-{s}" for s in PEAKS} <= set(cells), cells
    assert "Download CSV" in text
    # the download: what a user clicks is what the result held
    with tempfile.TemporaryDirectory(prefix="mw-download-") as downloads:
        page.browser.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=downloads)
        page.browser.evaluate("document.querySelector('[data-testid=\"stDownloadButton\"] button').click()")
        target = Path(downloads) / "hottest_devices.csv"
        deadline = time.monotonic() + 30
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert target.exists(), f"no CSV downloaded: {list(Path(downloads).iterdir())}"
        rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert {r["device_id"]: float(r["peak_avg"]) for r in rows} == {f"{known.prefix}-{s}": p for s, p in PEAKS.items()}


def test_workbench_shows_a_broken_querys_line_and_column_in_chromium(base_url: str, page: Page) -> None:
    page.browser.call("Page.navigate", url=f"{base_url}flux_workbench?preset=window_aggregates")
    page.wait(lambda: page.count("stTextArea") == 1 and "Run query" in page.text(), "the form")
    # free editing: replace the preset's text as a user would, then run it
    page.browser.evaluate("(() => { const t = document.querySelector('[data-testid=\"stTextArea\"] textarea');"
                          " t.focus(); t.select(); })()")
    page.browser.call("Input.insertText", text=BROKEN)
    page.browser.evaluate("document.querySelector('[data-testid=\"stFormSubmitButton\"] button').click()")
    page.wait(lambda: "did not run the query" in page.text() and page.count("stCode") >= 1, "the error")
    text = page.text()
    page.screenshot("workbench-error.png")
    assert "line 3, column 8" in text, text[:3000]
    assert "undefined identifier fliter" in text or "fliter" in text
    assert "|> fliter(fn: (r) => true)" in text  # the line it names, with a caret under the column
    assert page.count("stException") == 0, "the page shows an exception box"

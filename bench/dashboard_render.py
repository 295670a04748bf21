"""Benchmark: first render of the Streamlit dashboard in headless Chromium, cold and warm, with data loaded.

    python -m bench.dashboard_render [--devices 100 --hours 6 --runs 5 --out FILE]

Writes the data set of bench/dashboard_queries.py (10 s windows, the app's window, in a region unique to the
run) into the stack's aggregates bucket, and its 1-minute and hourly roll-ups with their fleet rows into the
roll-up buckets (as the window job writes them beside the windows), starts ``machinewatch dashboard`` on a
free port, and opens the first page filtered to that region: what the whole fleet's page reads, the fleet rows
included (a device prefix would make the page read every device's rows instead). Each run starts
Chromium with a new empty profile (cold: no HTTP cache, new Streamlit session) and then reloads the page once
in the same browser (warm).
A render counts from navigation start until Streamlit's script run has finished *and* every chart
has drawn its data; the first load after the server start is reported apart (module imports, first
connection to InfluxDB). The windows and roll-ups are deleted again at the end.

``--floor`` times, the same way, ``bench/render_floor_app.py``: the page's layout with no queries and three
points per chart, served by the dashboard's own Streamlit command. It needs no stack; no render of the
dashboard can be faster than it on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from influxdb_client import InfluxDBClient

from bench.dashboard_queries import ROLLUP_EVERY_S, fleet_lines, lines, load, p95, rollup_lines
from dashboards.streamlit import headless
from machinewatch import names, rollups
from machinewatch.cli import streamlit_command
from machinewatch.config import Settings, load_settings

FLOOR_APP = Path(__file__).resolve().parent / "render_floor_app.py"
FLOOR_POINTS = 3  # points per series in each of the floor app's charts (it reads them from here)

# The first page with data draws four Vega-Lite charts: per device, per region, histogram, events/s per source.
CHARTS = 4
# The app's time ranges (dashboards/streamlit/app.py RANGES) in hours; the page shows the smallest that
# covers the data set.
RANGE_HOURS = {"1h": 1, "6h": 6, "24h": 24, "7d": 168}
# The app only offers 10 s windows (tumbling, or 30 s sliding every 10 s), so that is what is written.
STEP_S = 10
# DevTools errors of a Runtime.evaluate that met a navigation in progress
NAVIGATING = ("navigated or closed", "Cannot find context", "context was destroyed")

# Runs in the page from its first script on: checks on every animation frame whether the first page is
# complete and stores performance.now() (ms since navigation start) then, so the browser's own clock times
# the render and polling over DevTools adds nothing to it. Complete means: the script run that started
# has ended (the app root's data-test-script-state, which Streamlit keeps for its own e2e tests), the
# expected number of charts exist, and each chart has drawn its data: Vega's SVG renderer puts lines and
# bars in role-mark groups apart from axes and legends, so a drawn path there is data on screen. (Should
# Streamlit switch to Vega's canvas renderer: coloured pixels, since axes and gridlines are grey.)
DETECTOR = """
(() => {
  const expected = %(charts)d;
  const mw = window.__mw = {};
  const drawn = new WeakSet();
  const coloured = (c) => {
    if (!c.width || !c.height) return false;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 128 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) {
        return true;
      }
    }
    return false;
  };
  const check = () => {
    const app = document.querySelector('[data-testid="stApp"]');
    const state = app && app.getAttribute('data-test-script-state');
    if (state === 'running' && mw.started === undefined) mw.started = performance.now();
    if (mw.started !== undefined && state === 'notRunning' && mw.scriptDone === undefined) {
      mw.scriptDone = performance.now();
    }
    const broken = document.querySelector('[data-testid="stException"], [data-testid="stAlertContentError"]');
    if (broken) { mw.error = broken.innerText.slice(0, 500); return; }
    if (mw.scriptDone !== undefined) {
      const charts = document.querySelectorAll('[data-testid="stVegaLiteChart"]');
      mw.charts = charts.length;
      let all = charts.length === expected;
      for (const chart of charts) {
        if (drawn.has(chart)) continue;
        const path = chart.querySelector('svg g.role-mark:is(.mark-line, .mark-rect, .mark-area) path[d]');
        const canvas = chart.querySelector('canvas');
        if ((path && path.getAttribute('d').length > 4) || (canvas && coloured(canvas))) drawn.add(chart);
        else all = false;
      }
      if (all) {
        mw.rendered = performance.now();
        mw.tables = document.querySelectorAll('[data-testid="stTable"]').length;
        mw.metrics = document.querySelectorAll('[data-testid="stMetric"]').length;
        return;
      }
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})();
"""


class PageError(RuntimeError):
    """The page showed an error box instead of the panels."""


def range_key(hours: int) -> str:
    for key, h in RANGE_HOURS.items():
        if hours <= h:
            return key
    msg = f"--hours {hours}: the dashboard's longest range is {max(RANGE_HOURS.values())} h"
    raise ValueError(msg)


def _wait_render(browser: headless.Chromium, timeout: float) -> dict[str, Any]:
    """The detector's result in the current document (one not marked as the previous one)."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            found = browser.evaluate("window.__mwOld ? null : JSON.stringify(window.__mw || null)")
        except RuntimeError as exc:
            # asked while the reload swaps documents: ask the new one
            if not any(m in str(exc) for m in NAVIGATING):
                raise
            found = None
        state = json.loads(found or "null") or {}
        if "error" in state or "rendered" in state:
            return state
        time.sleep(0.2)
    text = browser.evaluate("document.body ? document.body.innerText.slice(0, 800) : ''")
    msg = f"the dashboard did not finish rendering within {timeout:.0f}s (detector {state}); page: {text!r}"
    raise RuntimeError(msg)


def browser_session(url: str, reloads: int, timeout: float) -> list[dict[str, Any]]:
    """One Chromium with a new empty profile: the first load, then ``reloads`` reloads; the detector results."""
    # chromium may still flush its profile while exiting: cleanup errors are not benchmark failures
    with tempfile.TemporaryDirectory(prefix="mw-chromium-", ignore_cleanup_errors=True) as profile:
        browser = headless.Chromium(profile)
        try:
            browser.call("Page.addScriptToEvaluateOnNewDocument", source=DETECTOR % {"charts": CHARTS})
            browser.call("Page.navigate", url=url)
            out = [_wait_render(browser, timeout)]
            for _ in range(reloads):
                browser.evaluate("window.__mwOld = true")
                browser.call("Page.reload")
                out.append(_wait_render(browser, timeout))
            for sample in out:
                print(f"  load: {sample.get('rendered', sample.get('error'))}", file=sys.stderr, flush=True)
            return out
        finally:
            browser.close()


def _delete(client: InfluxDBClient, settings: Settings, region: str, start: datetime, stop: datetime) -> None:
    """The run's windows, roll-ups and fleet rows: everything in its region."""
    api = client.delete_api()
    for bucket in (names.BUCKET_AGGREGATES, *(r.bucket for r in rollups.ROLLUPS)):
        api.delete(start, stop, f'region="{region}"', bucket=bucket, org=settings.influx_org)


def _stats(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Median and p95 over the loads that rendered; loads that showed an error box are counted apart."""
    ms = [s[key] for s in samples if "rendered" in s]
    errors = [s["error"] for s in samples if "error" in s]
    if not ms:
        msg = f"no load rendered; the page showed: {errors[0]}"
        raise PageError(msg)
    return {"ms": [round(v, 1) for v in ms], "median_ms": statistics.median(ms), "p95_ms": p95(ms),
            "errors": len(errors), "error": errors[0] if errors else ""}


def _loads(url: str, runs: int, timeout: float) -> dict[str, Any]:
    """The first load after the server start, then ``runs`` browser sessions of a cold load and one reload."""
    first = browser_session(url, 0, timeout)
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    for _ in range(runs):
        session = browser_session(url, 1, timeout)
        cold.append(session[0])
        warm.extend(session[1:])
    return {
        "runs": runs, "first_load": _stats(first, "rendered"),
        "cold": _stats(cold, "rendered"), "warm": _stats(warm, "rendered"),
        # when the script run ended in the browser: the rest of a render is the browser drawing charts
        "cold_script_done": _stats(cold, "scriptDone"), "warm_script_done": _stats(warm, "scriptDone"),
        # when Streamlit's script run began: before it, the browser loads and compiles the app's JavaScript
        # and opens its session (the part a cold browser pays and a reload mostly does not)
        "cold_script_started": _stats(cold, "started"), "warm_script_started": _stats(warm, "started"),
    }


def measure_floor(runs: int = 5, timeout: float = 120) -> dict[str, Any]:
    """The floor app's cold loads and warm reloads, served by the dashboard's command and timed as ``measure``
    times the dashboard's."""
    port = headless.free_port()
    with headless.serve(streamlit_command(FLOOR_APP, "127.0.0.1", port), dict(os.environ), port) as url:
        return _loads(url, runs, timeout)


def measure(settings: Settings, devices: int = 100, hours: int = 6, runs: int = 5,
            timeout: float = 120) -> dict[str, Any]:
    """Load the data set, time ``runs`` cold loads and as many warm reloads; medians and p95 in ms.

    ``settings`` must give the operator token (to write and delete the windows) and the read token (the app's).
    """
    key = range_key(hours)
    region = f"render-{uuid.uuid4().hex[:6]}"
    stop = datetime.now(tz=UTC).replace(second=0, microsecond=0)
    start = stop - timedelta(hours=hours)
    with InfluxDBClient(url=settings.influx, token=settings.operator_token(), org=settings.influx_org,
                        timeout=120_000) as client:
        t0 = time.perf_counter()
        windows = load(client, names.BUCKET_AGGREGATES, lines(devices, start, hours, STEP_S, region=region))
        for rollup in rollups.ROLLUPS:
            every_s = ROLLUP_EVERY_S[rollup.label]
            load(client, rollup.bucket, rollup_lines(devices, start, hours, STEP_S, every_s, rollup.label,
                                                     region=region))
            load(client, rollup.bucket, fleet_lines(devices, start, hours, STEP_S, every_s, rollup.label,
                                                    region=region))
        load_s = time.perf_counter() - t0
        try:
            with headless.dashboard(settings) as base:
                loads = _loads(f"{base}?range={key}&region={region}&refresh=off", runs, timeout)
        finally:
            # an hourly roll-up row is stamped at its hour's end, up to an hour after the data
            _delete(client, settings, region, start - timedelta(minutes=1), stop + timedelta(hours=1))
    return {"devices": devices, "hours": hours, "step_s": STEP_S, "windows": windows, "load_s": round(load_s, 1),
            "range": key, **loads}


def markdown(r: dict[str, Any]) -> list[str]:
    return [
        f"\n### {datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC — dashboard first render in headless Chromium, "
        f"{r['devices']} devices × {r['hours']} h of {r['step_s']} s windows ({r['windows']:,} windows), "
        f"range {r['range']}, {r['runs']} runs\n",
        *_load_rows(r),
        f"| first load after server start (1 run) | {r['first_load']['median_ms']:.0f} | | | |",
        *([f"\nLoads that showed an error box instead of the panels: {r['cold']['errors']} cold, "
           f"{r['warm']['errors']} warm, e.g. `{(r['cold']['error'] or r['warm']['error'])[:200]}`"]
          if r["cold"]["errors"] or r["warm"]["errors"] else []),
    ]


def _load_rows(r: dict[str, Any]) -> list[str]:
    """The table's header and its cold and warm rows, for the dashboard's loads and the floor's alike."""
    return [
        "| load | median ms | p95 ms | script run started, median ms | script run done, median ms |",
        "|---|---:|---:|---:|---:|",
        *(f"| {label} | {r[k]['median_ms']:.0f} | {r[k]['p95_ms']:.0f} | {r[k + '_script_started']['median_ms']:.0f}"
          f" | {r[k + '_script_done']['median_ms']:.0f} |"
          for k, label in (("cold", "cold (new browser profile)"), ("warm", "warm (reload)"))),
    ]


def floor_markdown(r: dict[str, Any]) -> list[str]:
    return [
        f"\n### {datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC — floor: the page's layout, no queries, {FLOOR_POINTS} "
        f"points per chart (bench/render_floor_app.py), {r['runs']} runs\n",
        *_load_rows(r),
    ]


def _print_loads(r: dict[str, Any], prefix: str = "") -> None:
    for name in ("cold", "warm"):
        x = r[name]
        failed = f"   {x['errors']} loads showed an error: {x['error'][:200]}" if x["errors"] else ""
        print(f"{prefix}{name:<5} median {x['median_ms']:7.0f} ms   p95 {x['p95_ms']:7.0f} ms   "
              f"(script run started / done: median {r[name + '_script_started']['median_ms']:.0f} / "
              f"{r[name + '_script_done']['median_ms']:.0f} ms)   {x['ms']}{failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--hours", type=int, default=6, help="hours of data, and the smallest range showing them")
    parser.add_argument("--runs", type=int, default=5, help="cold loads, each followed by one warm reload")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one render may take")
    parser.add_argument("--out", type=Path, help="append the Markdown table here")
    parser.add_argument("--floor", action="store_true",
                        help="time the no-query floor app instead (needs no stack; --devices/--hours unused)")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped: still stop the app and delete the data
    if args.floor:
        f = measure_floor(args.runs, args.timeout)
        _print_loads(f, "floor ")
        if args.out:
            with args.out.open("a") as out:
                out.write("\n".join(floor_markdown(f)) + "\n")
        return
    r = measure(load_settings(), args.devices, args.hours, args.runs, args.timeout)
    print(f"wrote {r['windows']:,} windows in {r['load_s']:.0f} s")
    _print_loads(r)
    print(f"first load after server start: {r['first_load']['median_ms']:.0f} ms")
    if args.out:
        with args.out.open("a") as out:
            out.write("\n".join(markdown(r)) + "\n")


if __name__ == "__main__":
    main()

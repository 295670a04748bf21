"""The dashboard's queries and transforms, free of Streamlit so tests can call them directly.

Every panel reads pre-aggregated data through one file of the Flux library (``dashboards/flux/``),
with the read-only token; the helpers here turn the rows into what a panel shows.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
from influxdb_client import InfluxDBClient
from influxdb_client.client.warnings import MissingPivotFunction
from influxdb_client.rest import ApiException

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.query import FLUX_DIR, QueryError, transport_problem

# The library's queries shape their own rows; influxdb-client's advice to add pivot() does not apply.
warnings.filterwarnings("ignore", category=MissingPivotFunction)

# A chart never asks for more points than this; a browser stays responsive well below it.
MAX_POINTS = 2000
# Points a chart needs across its width: one per 2 px of a half-page chart (~700 px). A chart reads the
# coarsest roll-up that still gives it that many; shorter ranges read the 10 s windows.
CHART_POINTS = 350
# Series a per-device chart shows when the user picked none: the hottest ones.
DEFAULT_DEVICE_SERIES = 8
# Rows of the page's hottest-devices table.
HOTTEST = 10
# "Average CPU" mixes the course servers' cpu_pct and the data centres' load: both are % busy.
CPU_METRICS = ("cpu_pct", "load")
TEMPERATURE = "temperature"
POWER = "power"
KPI_METRICS = (TEMPERATURE, *CPU_METRICS, POWER)
ACTIVE_STATES = ("opened", "escalated", "silent")
PENDING = "pending"
# Alerts open for longer than this before the chosen range are not looked for.
ALERT_LOOKBACK = timedelta(days=7)
# The Events/s KPI is a current rate: readings in the newest minute of data, counted from the tumbling
# windows (a sliding window counts each reading several times, whichever shape the charts show).
RATE_SPAN = timedelta(minutes=1)
TUMBLING = "10s"
# The tags a chart may split the fleet by from the fleet roll-ups (fleet_series.flux) instead of every device's rows.
FLEET_TAGS = ("region", "source", "site")


class InfluxUnavailable(RuntimeError):
    """InfluxDB could not be reached (down, wrong URL, timeout); the message says where it was looked for."""


def _memo_key(name: str, params: dict[str, Any]) -> str:
    """A page render's key for one query: the library file and its parameters."""
    return f"{name}:{sorted(params.items())!r}"


def flux_text(name: str) -> str:
    """The text of one library file, e.g. ``flux_text("hottest_devices")``."""
    return (FLUX_DIR / f"{name}.flux").read_text()


def library_files() -> list[Path]:
    return sorted(FLUX_DIR.glob("*.flux"))


@dataclass(frozen=True)
class Filters:
    """What the sidebar selects; "" means all."""

    start: datetime
    stop: datetime
    region: str = ""
    site: str = ""
    device_prefix: str = ""
    devices: tuple[str, ...] = ()
    metric: str = TEMPERATURE
    window: str = "10s"

    def common(self) -> dict[str, Any]:
        return {"start": self.start, "stop": self.stop, "devicePrefix": self.device_prefix,
                "region": self.region, "site": self.site, "window": self.window}


def last(duration: timedelta, now: datetime | None = None, **kwargs: Any) -> Filters:
    """Filters for the range ending now (a minute ahead, so the newest window end is inside)."""
    now = now or datetime.now(tz=UTC)
    return Filters(start=now - duration, stop=now + timedelta(minutes=1), **kwargs)


@dataclass
class Dashboard:
    """Runs library queries for the panels on one reused client (the read-only token)."""

    url: str
    token: str
    org: str
    timeout_ms: int = 10_000
    # Named in the message when a query times out (the setting timeout_ms came from, if any).
    timeout_setting: str = ""
    aggregates_bucket: str = names.BUCKET_AGGREGATES
    alerts_bucket: str = names.BUCKET_ALERTS
    # The roll-up buckets the charts may read (machinewatch.rollups); "" = none, the charts read the windows.
    rollup_1m_bucket: str = ""
    rollup_1h_bucket: str = ""
    _client: InfluxDBClient | None = field(default=None, repr=False)
    # While a page renders: query results by (file, params), so each panel's query runs once, up front.
    _memo: dict[str, pd.DataFrame] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, timeout_ms: int | None = None) -> Dashboard:
        """A dashboard on the settings' InfluxDB; each query waits at most MW_DASHBOARD_TIMEOUT_S."""
        if timeout_ms is None:
            return cls(url=settings.influx, token=settings.read_token(), org=settings.influx_org,
                       timeout_ms=round(settings.dashboard_timeout_s * 1000), timeout_setting="MW_DASHBOARD_TIMEOUT_S",
                       rollup_1m_bucket=names.BUCKET_ROLLUP_1M, rollup_1h_bucket=names.BUCKET_ROLLUP_1H)
        return cls(url=settings.influx, token=settings.read_token(), org=settings.influx_org, timeout_ms=timeout_ms,
                   rollup_1m_bucket=names.BUCKET_ROLLUP_1M, rollup_1h_bucket=names.BUCKET_ROLLUP_1H)

    @property
    def client(self) -> InfluxDBClient:
        if self._client is None:
            self._client = InfluxDBClient(url=self.url, token=self.token, org=self.org, timeout=self.timeout_ms)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @contextlib.contextmanager
    def render(self, f: Filters, now: datetime, workers: int = 4,
               choices: pd.DataFrame | None = None) -> Iterator[Dashboard]:
        """A view of this dashboard for one page render, whose panel queries for ``f`` have already run.

        A page asks some twenty queries one after another; InfluxDB answers several at once about as fast
        as one, so the page waits for the slowest instead of the sum (``workers`` at a time). The view
        shares this one's client and keeps the results for the render only (the app's Dashboard is shared
        by every browser session). A query that failed here runs again when its panel asks, and raises there.
        ``choices``: the filter choices the sidebar read a moment before for the same range; the page takes
        them instead of asking InfluxDB again (one query fewer on each full page load).
        """
        page = self.view(f, choices)
        # One task per query (the KPIs' six included), the ones that wait for another query first: the
        # per-device chart needs the hottest devices, the histogram the latest values.
        calls: list[Callable[[], object]] = [
            lambda: (page.hottest(f, HOTTEST, f.metric), page.series(f, "device_id", page.chart_devices(f))),
            lambda: page.histogram(f),
            lambda: page.choices(f), lambda: page.series(f, "region"), lambda: page.events_per_source(f),
            lambda: page.alert_states(f, now), lambda: page.time_in_alarm(f, now), lambda: page.threshold_alerts(f),
            *page.kpi_queries(f),
            lambda: page.data_volume(f), lambda: page.late_events(f),
        ]
        with ThreadPoolExecutor(workers, thread_name_prefix="flux") as pool:
            for future in [pool.submit(call) for call in calls]:
                future.exception()  # wait; the panel's own call reports errors
        yield page

    def view(self, f: Filters, choices: pd.DataFrame | None = None) -> Dashboard:
        """A view of this dashboard sharing its client, that keeps each result for its own life, holding ``choices``
        as the filter choices for ``f`` when given (what the sidebar read before the page's panels run)."""
        page = replace(self, _client=self.client, _memo={})
        if choices is not None and page._memo is not None:
            page._memo[_memo_key(*page._choices_query(f))] = choices
        return page

    def run(self, name: str, params: dict[str, Any]) -> pd.DataFrame:
        """One library file with ``params`` as Flux options; an empty frame when nothing matched."""
        memo = self._memo
        key = _memo_key(name, params)
        if memo is not None and key in memo:
            return memo[key]
        frame = self._query(name, params)
        if memo is not None:
            memo[key] = frame
        return frame

    def _query(self, name: str, params: dict[str, Any]) -> pd.DataFrame:
        try:
            frames = self.client.query_api().query_data_frame(flux_text(name), params=params)
        except ApiException as exc:
            if exc.status in (None, 0) or (exc.status and exc.status >= 500 and not exc.body):
                msg = f"InfluxDB at {self.url} did not answer: {exc.reason}"
                raise InfluxUnavailable(msg) from exc
            msg = f"InfluxDB rejected {name}.flux: HTTP {exc.status}: {exc.body!r}"
            raise QueryError(msg) from exc
        except Exception as exc:
            problem = transport_problem(exc, self.url, self.timeout_ms / 1000,
                                        self.timeout_setting or f"the dashboard's timeout_ms={self.timeout_ms}")
            if problem is None:
                raise
            raise InfluxUnavailable(problem) from exc
        if isinstance(frames, list):
            frames = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return frames.drop(columns=[c for c in ("result", "table") if c in frames.columns])

    # --- panels -------------------------------------------------------------------------------

    def chart_devices(self, f: Filters) -> tuple[str, ...]:
        """The devices the per-device chart shows: the chosen ones, or the hottest few."""
        if f.devices:
            return f.devices
        # the first of the hottest table's ten (one query for both, where the page shows both)
        top = self.hottest(f, n=max(HOTTEST, DEFAULT_DEVICE_SERIES), metric=f.metric).head(DEFAULT_DEVICE_SERIES)
        return tuple(top["device_id"]) if not top.empty else ()

    def summary_source(self, f: Filters) -> dict[str, str]:
        """The bucket and window tag the per-device summaries (hottest, fleet summary, histogram) read: the
        charts' choice, so over 6 h and more they read minute or hour roll-ups (a device's mean over roll-ups
        equals its mean over windows up to the edges; its peak is then the highest 1-minute/1-hour average)."""
        bucket, window, _ = self.chart_source(f)
        return {"bucket": bucket, "window": window}

    def hottest(self, f: Filters, n: int = 10, metric: str = TEMPERATURE) -> pd.DataFrame:
        params = {**f.common(), **self.summary_source(f), "metric": metric, "n": n}
        frame = self.run("hottest_devices", params)
        return frame.sort_values("peak_avg", ascending=False, ignore_index=True) if not frame.empty else frame

    def fleet_summary(self, f: Filters, metrics: tuple[str, ...] = KPI_METRICS) -> pd.DataFrame:
        """Per metric, the fleet's mean and how many devices it covers (metric, unit, devices, mean)."""
        means = self.fleet_means(f)
        if means is not None:
            return means[means["metric"].isin(metrics)].reset_index(drop=True)
        # One query per metric: a single metric is a tag comparison InfluxDB pushes down to storage,
        # while a set of them goes through contains() row by row (100x slower over 24 h of 1,000 devices).
        frames = [self.run("fleet_summary", {**f.common(), **self.summary_source(f), "metrics": [m]})
                  for m in metrics]
        frames = [fr for fr in frames if not fr.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def fleet_means(self, f: Filters) -> pd.DataFrame | None:
        """Every metric's fleet mean from the fleet rows over ``f`` (fleet_mean.flux), or None where they do not
        serve it: a range the windows serve, a device filter, or no fleet rows in the range (an older release, an
        allowed lateness). Over 1,000 devices x 24 h: ~30 ms, against ~200 ms a metric over every device's rows.
        The panels that read fleet rows ask this first, so they fall back together (one query, shared)."""
        fleet = self.fleet_source(f)
        if fleet is None:
            return None
        frame = self.run("fleet_mean", {"bucket": fleet[0], "window": fleet[1], "start": f.start, "stop": f.stop,
                                        "metrics": [], "region": f.region, "site": f.site})
        return frame if not frame.empty else None

    def latest(self, f: Filters, metrics: tuple[str, ...] = KPI_METRICS) -> pd.DataFrame:
        return self.run("latest_per_device", {**f.common(), "bucket": self.aggregates_bucket,
                                              "metrics": list(metrics)})

    def kpi_queries(self, f: Filters) -> list[Callable[[], object]]:
        """The queries behind ``kpis``, one call each, so a page render can run them side by side first."""
        # every device's summaries one metric at a time, side by side; the fleet rows' in one query
        summaries: list[Callable[[], object]] = [lambda: self.fleet_means(f)]
        if self.fleet_source(f) is None:
            summaries = [partial(self.fleet_summary, f, (m,)) for m in KPI_METRICS]
        return [*summaries, lambda: self.latest(f, (POWER,)), lambda: self.events_rate(f)]

    def kpis(self, f: Filters) -> Kpis:
        return compute_kpis(self.fleet_summary(f), self.latest(f, (POWER,)), self.events_rate(f))

    def chart_source(self, f: Filters) -> tuple[str, str, int]:
        """(bucket, window tag, seconds per row) a chart over ``f`` reads: the coarsest roll-up that still
        gives CHART_POINTS points over the range, else the windows ``f`` selects."""
        for seconds, bucket, window in ((3600, self.rollup_1h_bucket, "1h"), (60, self.rollup_1m_bucket, "1m")):
            if bucket and (f.stop - f.start).total_seconds() / seconds >= CHART_POINTS:
                return bucket, window, seconds
        return self.aggregates_bucket, f.window, window_seconds(f.window)

    def fleet_source(self, f: Filters) -> tuple[str, str, int] | None:
        """(bucket, window tag, seconds per row) of the fleet roll-ups a fleet-wide chart over ``f`` reads instead
        of every device's rows, or None: a range the windows serve, or a device filter (fleet rows have no devices)."""
        source = self.chart_source(f)
        if source[0] == self.aggregates_bucket or f.device_prefix:
            return None
        return source

    def series(self, f: Filters, by: str, devices: tuple[str, ...] = ()) -> pd.DataFrame:
        bucket, window, step_s = self.chart_source(f)
        every = chart_every(f.start, f.stop, series=max(1, len(devices)) if by == "device_id" else 8,
                            window_s=step_s)
        fleet = self.fleet_source(f) if by in FLEET_TAGS and not devices else None
        if fleet is not None:
            # A few series per source, region and site instead of one per device: the same means (fleet_series.flux).
            # Empty where the job made no fleet rows (an older release, an allowed lateness): then every device's.
            frame = self.run("fleet_series", {**f.common(), "bucket": fleet[0], "window": fleet[1],
                                              "metric": f.metric, "by": by, "every": every})
            if not frame.empty:
                return frame
        params = {**f.common(), "bucket": bucket, "window": window, "metric": f.metric, "by": by,
                  "every": every, "devices": list(devices)}
        return self.run("chart_series", params)

    def events_per_source(self, f: Filters) -> pd.DataFrame:
        """Readings per second per source: counts from the tumbling windows or their roll-ups, never the sliding
        windows the other charts may show (those count each reading several times)."""
        bucket, window, step_s = self.chart_source(f)
        if bucket == self.aggregates_bucket:
            window, step_s = TUMBLING, window_seconds(TUMBLING)
        every = chart_every(f.start, f.stop, series=4, window_s=step_s)
        if self.fleet_source(f) is not None:
            # the fleet roll-ups' counts (fleet_events_per_source.flux); every device's where there are none
            frame = self.run("fleet_events_per_source", {"bucket": bucket, "start": f.start, "stop": f.stop,
                                                         "window": window, "every": every, "region": f.region,
                                                         "site": f.site})
            if not frame.empty:
                return frame
        return self.run("events_per_source", {**f.common(), "bucket": bucket, "window": window, "every": every})

    def events_rate(self, f: Filters) -> float:
        """Readings per second in the newest minute of data in the range (all sources), from the window counts;
        over the ranges the roll-ups serve, from the fleet roll-ups' newest whole minute (a few series instead of
        one per device: 1,000 devices x 24 h ~170 -> ~20 ms), the windows' where the job wrote none."""
        params = {**f.common(), "span": RATE_SPAN}
        if self.fleet_source(f) is not None and self.rollup_1m_bucket:
            minutes = self.run("ingest_rate", {**params, "bucket": self.rollup_1m_bucket, "window": "1m",
                                               "measurement": names.MEASUREMENT_FLEET})
            if not minutes.empty:
                return current_rate(minutes, 60, RATE_SPAN)
        windows = self.run("ingest_rate", {**params, "bucket": self.aggregates_bucket, "window": TUMBLING,
                                           "measurement": names.MEASUREMENT_WINDOW})
        return current_rate(windows, window_seconds(TUMBLING), RATE_SPAN)

    def data_volume(self, f: Filters) -> pd.DataFrame:
        """Readings and devices per source from the tumbling windows (the 30s@10s windows the charts may show
        count each reading three times); over the ranges whose charts read roll-ups, the whole minutes and
        hours surely written come from the roll-up rows (data_volume.flux), the edges from the windows.

        Where the fleet rows serve the range, the roll-up rows read are theirs (a few series per source instead
        of one per device), and the devices per source come from the filter choices the page has already read
        (each device's latest row in the range): 1,000 devices x 24 h, five reads of every device's series -> two.
        """
        long = self.chart_source(f)[0] != self.aggregates_bucket
        fleet = long and self.fleet_means(f) is not None
        volume = self.run("data_volume", {
            **f.common(), "bucket": self.aggregates_bucket, "window": TUMBLING,
            "rollup1m": self.rollup_1m_bucket if long else "", "rollup1h": self.rollup_1h_bucket if long else "",
            "measurement": names.MEASUREMENT_FLEET if fleet else names.MEASUREMENT_WINDOW})
        if not fleet or volume.empty:
            return volume
        # the tumbling windows' devices: the page's choices when it shows them, else one query more
        seen = self.choices(replace(f, window=TUMBLING))
        if f.region:
            seen = seen[seen["region"] == f.region]
        if f.site:
            seen = seen[seen["site"] == f.site]
        devices = seen.groupby("source")["device_id"].nunique()
        volume = volume.assign(devices=[int(devices.get(s, 0)) for s in volume["source"]])
        return volume[["source", "devices", "readings"]]

    def late_events(self, f: Filters) -> pd.DataFrame:
        return self.run("late_events_per_source", {"bucket": self.aggregates_bucket, "start": f.start,
                                                   "stop": f.stop, "devicePrefix": f.device_prefix})

    def histogram(self, f: Filters, bins: int = 12) -> pd.DataFrame:
        """Devices per bin of their mean ``f.metric``; the bins span the means."""
        # One query for the devices' means (device_means.flux), binned here: InfluxDB's histogram() needs its
        # bins before it sees the means, which took a second query for each device's latest value to place
        # them (1,000 devices x 24 h: ~290 -> ~120 ms for both).
        means = self.run("device_means", {**f.common(), **self.summary_source(f), "metric": f.metric})
        return bins_from_means(means["mean"] if not means.empty else pd.Series(dtype=float), bins)

    def alert_states(self, f: Filters, now: datetime | None = None) -> pd.DataFrame:
        now = now or datetime.now(tz=UTC)
        params = {"bucket": self.alerts_bucket, "start": min(f.start, now - ALERT_LOOKBACK),
                  "stop": max(f.stop, now + timedelta(minutes=1)), "devicePrefix": f.device_prefix}
        return self.run("alert_states", params)

    def time_in_alarm(self, f: Filters, now: datetime | None = None) -> pd.DataFrame:
        now = now or datetime.now(tz=UTC)
        params = {"bucket": self.alerts_bucket, "start": f.start, "stop": min(f.stop, now),
                  "devicePrefix": f.device_prefix}
        return self.run("time_in_alarm", params)

    def threshold_alerts(self, f: Filters) -> pd.DataFrame:
        params = {"bucket": self.alerts_bucket, "start": f.start, "stop": f.stop,
                  "devicePrefix": f.device_prefix, "region": f.region, "site": f.site}
        return self.run("threshold_alerts", params)

    def choices(self, f: Filters) -> pd.DataFrame:
        """Region/site/device/metric combinations present in the range, for the filter widgets."""
        return self.run(*self._choices_query(f))

    def _choices_query(self, f: Filters) -> tuple[str, dict[str, Any]]:
        """``choices``' library file and parameters: every metric's latest row per device, region and site
        left open (the widgets offer them)."""
        scope = Filters(start=f.start, stop=f.stop, window=f.window, device_prefix=f.device_prefix)
        return "latest_per_device", {**scope.common(), "bucket": self.aggregates_bucket, "metrics": []}


# --- pure transforms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Kpis:
    avg_temperature: float | None
    temperature_devices: int
    avg_cpu: float | None
    cpu_devices: int
    power_kw: float | None
    power_devices: int
    events_per_s: float


def compute_kpis(summary: pd.DataFrame, latest_power: pd.DataFrame, events_per_s: float) -> Kpis:
    """The KPI row: fleet means (each device once), current power (sum of latest averages, kW)."""

    def mean_of(metrics: tuple[str, ...]) -> tuple[float | None, int]:
        if summary.empty:
            return None, 0
        rows = summary[summary["metric"].isin(metrics)]
        devices = int(rows["devices"].sum())
        if not devices:
            return None, 0
        # device-weighted: each metric's mean counts as many devices as report it
        return float((rows["mean"] * rows["devices"]).sum() / devices), devices

    temp, temp_n = mean_of((TEMPERATURE,))
    cpu, cpu_n = mean_of(CPU_METRICS)
    power: float | None = None
    power_n = 0
    if not latest_power.empty:
        kw = latest_power[latest_power["unit"] == "kW"]
        power_n = int(kw["device_id"].nunique())
        power = float(kw["value"].sum()) if power_n else None
    return Kpis(temp, temp_n, cpu, cpu_n, power, power_n, events_per_s)


def current_rate(per_window: pd.DataFrame, window_s: int, span: timedelta = RATE_SPAN) -> float:
    """Readings per second over the newest ``span`` of data, from readings per window end (_time, readings).

    Only windows that end within ``span`` of the newest window end count, divided by the time they cover:
    all of ``span``, or less when the data began later (never the time before it began, nor the range's
    empty tail). 0.0 without data.
    """
    if per_window.empty:
        return 0.0
    ends = pd.to_datetime(per_window["_time"], utc=True)
    newest = ends.max()
    recent = ends > newest - span
    covered = min(span.total_seconds(), (newest - ends[recent].min()).total_seconds() + window_s)
    return float(per_window.loc[recent, "readings"].sum()) / covered


def window_seconds(window: str) -> int:
    """'10s' -> 10, '30s@10s' -> 10 (the slide: how often a new point appears)."""
    text = window.split("@")[-1] if window else "10s"
    try:
        return max(1, int(text.rstrip("s")))
    except ValueError:
        return 10


def chart_every(start: datetime, stop: datetime, series: int, window_s: int = 10,
                max_points: int = MAX_POINTS) -> timedelta:
    """The bucket length that keeps ``series`` lines over [start, stop) within ``max_points`` points.

    Never finer than the window itself, and rounded up to whole seconds (then whole minutes) so the
    buckets line up with window ends.
    """
    span = max(1.0, (stop - start).total_seconds())
    per_series = max(1, max_points // max(1, series))
    seconds = max(window_s, math.ceil(span / per_series))
    seconds = math.ceil(seconds / window_s) * window_s
    if seconds > 600:
        seconds = math.ceil(seconds / 60) * 60
    return timedelta(seconds=seconds)


def histogram_bins(lo: float, hi: float, bins: int) -> tuple[float, float]:
    """(start, width) of ``bins`` equal bins on whole or half degrees covering [lo, hi]."""
    width = max(0.5, math.ceil((hi - lo) / bins * 2) / 2)
    return float(math.floor(lo)), float(width)


def bins_from_means(means: pd.Series, bins: int) -> pd.DataFrame:
    """Devices per bin (bin_start, bin_end, devices) of ``bins`` equal bins over the means' span, empty bins kept:
    a mean on an edge counts in the bin it ends, as in InfluxDB's histogram (upper bounds inclusive)."""
    if means.empty:
        return pd.DataFrame(columns=["bin_start", "bin_end", "devices"])
    lo, hi = float(means.min()), float(means.max())
    start, width = histogram_bins(lo, hi, bins)
    # whole or half degrees: floor(lo) may leave hi just past the last edge, and the bins grow to cover it
    count = max(bins, math.ceil((hi - start) / width))
    edges = [start + i * width for i in range(count + 1)]
    index = [min(count - 1, max(0, math.ceil((m - start) / width) - 1)) for m in means]
    per_bin = pd.Series(index).value_counts()
    return pd.DataFrame({"bin_start": edges[:-1], "bin_end": edges[1:],
                         "devices": [int(per_bin.get(i, 0)) for i in range(count)]})


def bins_from_cumulative(frame: pd.DataFrame) -> pd.DataFrame:
    """InfluxDB's cumulative histogram rows (le, devices) as per-bin counts (bin_start, bin_end, devices)."""
    if frame.empty:
        return pd.DataFrame(columns=["bin_start", "bin_end", "devices"])
    rows = frame.sort_values("le", ignore_index=True)
    counts = rows["devices"].diff().fillna(rows["devices"]).astype(int)
    starts = rows["le"].shift(1).fillna(-math.inf)
    out = pd.DataFrame({"bin_start": starts, "bin_end": rows["le"], "devices": counts})
    # The first bin (everything below binStart) and +Inf are kept only when they hold devices.
    edge = (out["bin_start"] == -math.inf) | (out["bin_end"] == math.inf)
    return out[~edge | (out["devices"] > 0)].reset_index(drop=True)


def histogram_bars(hist: pd.DataFrame) -> pd.DataFrame:
    """The bins as bars (bin label, devices), lowest bin first; the open edge bins read "< lo" and "≥ hi"."""
    rows = hist.sort_values(["bin_start", "bin_end"], ignore_index=True)
    labels = [f"< {hi:g}" if lo == -math.inf else f"≥ {lo:g}" if hi == math.inf else f"{lo:g}–{hi:g}"
              for lo, hi in zip(rows["bin_start"], rows["bin_end"], strict=True)]
    return pd.DataFrame({"bin": labels, "devices": rows["devices"].astype(int).to_numpy()})


def histogram_chart(hist: pd.DataFrame, metric: str, height: int = 260) -> alt.Chart:
    """A bar per bin, left to right in the order of the bins' values.

    The x axis is the bins' labels. Vega-Lite sorts labels alphabetically ("10–11" before "9–10"), and
    with no sort at all (st.bar_chart's sort=False) the page still showed "50–51" after "61–62" (issue 19):
    the bars' numeric order is given to the axis as its explicit sort.
    """
    bars = histogram_bars(hist)
    return alt.Chart(bars).mark_bar().encode(
        x=alt.X("bin:O", sort=list(bars["bin"]), title=f"mean {metric} per device", axis=alt.Axis(labelAngle=-45)),
        y=alt.Y("devices:Q", title="devices", axis=alt.Axis(tickMinStep=1)),
        tooltip=[alt.Tooltip("bin:O", title=f"mean {metric}"), alt.Tooltip("devices:Q")],
    ).properties(height=height)


def split_alerts(states: pd.DataFrame, now: datetime) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(active, pending, resolved) from the latest state of every alert, with the times a panel shows.

    active: open_for_s (since the alert opened); pending: fires_in_s (until fires_at_ms, never below 0);
    resolved: duration_s (the record's duration_ms, else resolution time minus start).
    """
    empty = pd.DataFrame(columns=["alert_id", "device_id", "severity", "state", "kind"])
    if states.empty:
        return empty, empty.copy(), empty.copy()
    frame = states.copy()
    for col in ("started_ms", "duration_ms", "fires_at_ms", "severity", "kind"):
        if col not in frame.columns:
            frame[col] = None
    now_ms = now.timestamp() * 1000
    frame["last_change"] = pd.to_datetime(frame["_time"], utc=True)
    active = frame[frame["state"].isin(ACTIVE_STATES)].copy()
    active["open_for_s"] = ((now_ms - active["started_ms"].astype(float)) / 1000).clip(lower=0)
    pending = frame[frame["state"] == PENDING].copy()
    pending["fires_in_s"] = ((pending["fires_at_ms"].astype(float) - now_ms) / 1000).clip(lower=0)
    resolved = frame[frame["state"] == "resolved"].copy()
    ends_ms = resolved["last_change"].map(lambda t: t.timestamp() * 1000)
    fallback = (ends_ms - resolved["started_ms"].astype(float)) / 1000
    resolved["duration_s"] = (resolved["duration_ms"].astype(float) / 1000).fillna(fallback)
    severity_rank = {"critical": 0, "warning": 1, "info": 2}
    active = active.assign(_rank=active["severity"].map(severity_rank).fillna(3)).sort_values(
        ["_rank", "open_for_s"], ascending=[True, False]).drop(columns="_rank")
    return (active.reset_index(drop=True), pending.sort_values("fires_in_s").reset_index(drop=True),
            resolved.sort_values("last_change", ascending=False).reset_index(drop=True))


def alerts_by_device(active: pd.DataFrame) -> pd.DataFrame:
    """Active alerts counted per device (the KPI counts devices, not alert records)."""
    if active.empty:
        return pd.DataFrame(columns=["device_id", "alerts", "worst"])
    rank = {"critical": 0, "warning": 1, "info": 2}
    grouped = active.groupby("device_id")
    out = pd.DataFrame({
        "alerts": grouped.size(),
        "worst": grouped["severity"].agg(lambda s: min(s, key=lambda v: rank.get(v, 3))),
    }).reset_index()
    return out.sort_values(["alerts", "device_id"], ascending=[False, True], ignore_index=True)


def humanize_seconds(seconds: float) -> str:
    """3725 -> '1h 2m', 65 -> '1m 5s', 4 -> '4s'."""
    s = round(max(0.0, float(seconds)))
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m {s % 60}s"
    return f"{s}s"


def line_spec(x: str, y: str, color: str, height: int, y_title: str | None = None) -> dict[str, Any]:
    """A Vega-Lite line chart of long rows (x time, y value, one line per ``color``), for st.vega_lite_chart.

    A plain spec instead of st.line_chart: that one pivots the rows, builds an Altair layer chart, validates
    it against the JSON schema and hashes its data through the DataFrame's repr on every script run (about
    2.5 s of a 6 s page run for three charts in the profile of issue 19); the browser draws the same lines.
    """
    return {
        "mark": {"type": "line", "tooltip": True},
        "encoding": {
            "x": {"field": x, "type": "temporal", "title": None},
            "y": {"field": y, "type": "quantitative", "title": y_title},
            "color": {"field": color, "type": "nominal", "title": None},
        },
        "height": height,
    }


def pivot_series(frame: pd.DataFrame) -> pd.DataFrame:
    """Chart rows (_time, series, value) as a wide frame: one column per series, indexed by time."""
    if frame.empty:
        return pd.DataFrame()
    return frame.pivot_table(index="_time", columns="series", values="value", aggfunc="mean").sort_index()

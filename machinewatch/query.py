"""Read results back from InfluxDB with Flux (the dashboards' read-only token)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import urllib3
from influxdb_client import InfluxDBClient
from influxdb_client.client.flux_csv_parser import FluxQueryException
from influxdb_client.rest import ApiException

from machinewatch import names
from machinewatch.config import Settings


class QueryError(RuntimeError):
    """InfluxDB refused or failed a query; carries the server's own message.

    ``server_message`` is InfluxDB's message alone (e.g. ``error @3:5-3:8: undefined identifier foo``),
    empty when the query never reached the server.
    """

    def __init__(self, message: str, server_message: str = "") -> None:
        super().__init__(message)
        self.server_message = server_message


def server_message(body: object) -> str:
    """InfluxDB's own message from an error response body (JSON ``{"code", "message"}``), else the body as text."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    return str(doc.get("message", text)) if isinstance(doc, dict) else text


FLUX_DIR = Path(__file__).resolve().parent.parent / "dashboards" / "flux"


def transport_problem(exc: BaseException, url: str, timeout_s: float, setting: str) -> str | None:
    """What went wrong on the way to InfluxDB at ``url``, or None when ``exc`` is not a transport failure.

    A timeout names the setting that bounds it, so the reader knows what to raise.
    """
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # NewConnectionError derives from ConnectTimeoutError, yet it means nothing listens there.
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        return f"cannot connect to InfluxDB at {url}: {exc} (is it running? 'machinewatch stack status')"
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return (f"InfluxDB at {url} did not answer within {timeout_s:g} s; raise {setting} (now {timeout_s:g}) "
                "if it is busy, e.g. while the writer flushes or a backfill runs")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return f"the connection to InfluxDB at {url} failed: {exc}"
    return None


def run_flux(settings: Settings, flux: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run a Flux query; each of ``params`` is injected as a Flux option of the same name.

    Waits at most ``settings.query_timeout_s`` (MW_QUERY_TIMEOUT_S) for the answer, then raises QueryError.
    """
    timeout_ms = round(settings.query_timeout_s * 1000)
    with InfluxDBClient(url=settings.influx, token=settings.read_token(), org=settings.influx_org,
                        timeout=timeout_ms) as client:
        try:
            frames = client.query_api().query_data_frame(flux, params=params or {})
        except ApiException as exc:
            message = server_message(exc.body)
            msg = f"InfluxDB rejected the query: HTTP {exc.status}: {message}"
            raise QueryError(msg, message) from exc
        except FluxQueryException as exc:  # failed while the answer streamed: an error table in the CSV
            msg = f"the query failed in InfluxDB: {exc.message}"
            raise QueryError(msg, str(exc.message)) from exc
        except Exception as exc:
            problem = transport_problem(exc, settings.influx, settings.query_timeout_s, "MW_QUERY_TIMEOUT_S")
            if problem is None:
                raise
            raise QueryError(problem) from exc
    if isinstance(frames, list):
        frames = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frames.drop(columns=[c for c in ("result", "table") if c in frames.columns])


def window_aggregates(
    settings: Settings, start: datetime, stop: datetime | None = None,
    device_prefix: str = "", site: str = "", window: str = "", bucket: str = names.BUCKET_AGGREGATES,
) -> pd.DataFrame:
    """Window aggregates as one row per (device, metric, window end) with avg/min/max/count."""
    flux = (FLUX_DIR / "window_aggregates.flux").read_text()
    params = {
        "bucket": bucket, "start": start,
        "stop": stop or datetime.now(tz=UTC) + timedelta(minutes=1),
        "devicePrefix": device_prefix, "site": site, "window": window,
    }
    return run_flux(settings, flux, params)


def threshold_alerts(
    settings: Settings, start: datetime, stop: datetime | None = None, device_prefix: str = "", site: str = "",
    bucket: str = names.BUCKET_ALERTS,
) -> pd.DataFrame:
    """Threshold rules that fired: one row per (device, rule group, severity, label) with a count and the last time."""
    params = {"bucket": bucket, "start": start, "stop": stop or datetime.now(tz=UTC) + timedelta(minutes=1),
              "devicePrefix": device_prefix, "region": "", "site": site}
    return run_flux(settings, (FLUX_DIR / "threshold_alerts.flux").read_text(), params)


def device_alerts(
    settings: Settings, start: datetime, stop: datetime | None = None, device_prefix: str = "",
    bucket: str = names.BUCKET_ALERTS,
) -> pd.DataFrame:
    """The latest state of every device alert (sustained overheat, MTConnect), newest first."""
    params = {"bucket": bucket, "start": start, "stop": stop or datetime.now(tz=UTC) + timedelta(minutes=1),
              "devicePrefix": device_prefix}
    return run_flux(settings, (FLUX_DIR / "alert_states.flux").read_text(), params)

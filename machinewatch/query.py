"""Read results back from InfluxDB with Flux (the dashboards' read-only token)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from influxdb_client import InfluxDBClient
from influxdb_client.rest import ApiException

from machinewatch import names
from machinewatch.config import Settings


class QueryError(RuntimeError):
    """InfluxDB refused or failed a query; carries the server's own message."""


FLUX_DIR = Path(__file__).resolve().parent.parent / "dashboards" / "flux"


def run_flux(settings: Settings, flux: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run a Flux query; each of ``params`` is injected as a Flux option of the same name."""
    with InfluxDBClient(url=settings.influx, token=settings.read_token(), org=settings.influx_org) as client:
        try:
            frames = client.query_api().query_data_frame(flux, params=params or {})
        except ApiException as exc:
            msg = f"InfluxDB rejected the query: HTTP {exc.status}: {exc.body!r}"
            raise QueryError(msg) from exc
    if isinstance(frames, list):
        frames = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frames.drop(columns=[c for c in ("result", "table") if c in frames.columns])


def window_aggregates(
    settings: Settings, start: datetime, stop: datetime | None = None,
    device_prefix: str = "", site: str = "", window: str = "",
) -> pd.DataFrame:
    """Window aggregates as one row per (device, metric, window end) with avg/min/max/count."""
    flux = (FLUX_DIR / "window_aggregates.flux").read_text()
    params = {
        "bucket": names.BUCKET_AGGREGATES, "start": start,
        "stop": stop or datetime.now(tz=UTC) + timedelta(minutes=1),
        "devicePrefix": device_prefix, "site": site, "window": window,
    }
    return run_flux(settings, flux, params)

"""Roll-ups: 1-minute and hourly window aggregates, produced continuously by InfluxDB tasks into their own buckets.

Dashboards over long ranges read these instead of the 10 s windows. Each task re-rolls a few of its last
buckets on every run, so windows that arrive late (up to ``lookback``) are included; rows have fixed
timestamps (bucket end) and tags, so a re-run overwrites instead of duplicating.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from machinewatch import names
from machinewatch.query import FLUX_DIR


@dataclass(frozen=True)
class Rollup:
    label: str  # the window tag of the rows made, e.g. "1m"
    bucket: str  # where they go
    source_bucket: str
    source_window: str  # the window tag of the rows rolled up
    every: timedelta
    lookback: timedelta  # re-rolled on every run: how late a window may arrive and still count
    offset: timedelta  # after the boundary, so the writer has flushed the windows ending on it

    @property
    def task_name(self) -> str:
        return f"machinewatch rollup {self.label}"


def flux_duration(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


ROLLUP_1M = Rollup("1m", names.BUCKET_ROLLUP_1M, names.BUCKET_AGGREGATES, "10s", timedelta(minutes=1),
                   lookback=timedelta(minutes=5), offset=timedelta(seconds=20))
# Hours from minutes: 60 rows per series and hour instead of 360.
ROLLUP_1H = Rollup("1h", names.BUCKET_ROLLUP_1H, names.BUCKET_ROLLUP_1M, "1m", timedelta(hours=1),
                   lookback=timedelta(hours=3), offset=timedelta(minutes=2))
ROLLUPS = (ROLLUP_1M, ROLLUP_1H)


def task_flux(rollup: Rollup, org: str | None) -> str:
    """The task's Flux: the library's rollup.flux with its inputs bound, written to the roll-up's bucket.

    The range is whole buckets: from ``lookback`` before the last boundary up to that boundary (the bucket
    still filling is left for the next run). ``org`` None writes to the task's own organisation (the
    InfluxDB template, applied into whichever org the user picks).
    """
    every, lookback = flux_duration(rollup.every), flux_duration(rollup.lookback)
    text = (FLUX_DIR / "rollup.flux").read_text()
    body = [ln for ln in text.splitlines() if not ln.startswith("//") and not ln.startswith("import ")]
    options = [
        f'option task = {{name: "{rollup.task_name}", every: {every}, offset: {flux_duration(rollup.offset)}}}',
        "",
        f'bucket = "{rollup.source_bucket}"',
        f"stop = date.truncate(t: now(), unit: {every})",
        f"start = date.sub(d: {lookback}, from: stop)",
        f'window = "{rollup.source_window}"',
        f"every = {every}",
        f'label = "{rollup.label}"',
    ]
    return "\n".join(['import "date"', "", *options, *body]).rstrip() + (
        f'\n    |> to(bucket: "{rollup.bucket}", org: "{org}")\n' if org is not None
        else f'\n    |> to(bucket: "{rollup.bucket}")\n')

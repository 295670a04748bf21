"""Roll-ups: 1-minute and hourly window aggregates in their own buckets, which long dashboard ranges read.

The window job makes them (``MW_ROLLUPS``, on by default): its tumbling windows rolled up into tumbling 1-minute
windows, those into hours, in the same Flink job (flink_jobs/window_aggregates.py); the writer sends a window
result whose shape is a roll-up's to that roll-up's bucket, tagged ``window = label``. The point's time is the
window end and its tags are fixed, so a replay overwrites instead of duplicating.

They were InfluxDB tasks (dashboards/flux/rollup.flux) until measured: at 10,000 devices the 1-minute task cost
influxd 19 CPU-s per fleet-minute, the Flink roll-up under 1 (bench/results/rollup-cost.md). ``task_flux`` keeps
the task way for that comparison (bench/rollup_cost.py); ``stack up`` removes the tasks an older release made
(``task_name``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from machinewatch import names
from machinewatch.line_protocol import duration_text
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
    def window_s(self) -> int:
        """The roll-up's window: tumbling, this many seconds (``window_ms`` = ``slide_ms`` = this x 1000)."""
        return int(self.every.total_seconds())

    @property
    def task_name(self) -> str:
        """The name of the InfluxDB task that made this roll-up before the window job did (removed by ``stack up``)."""
        return f"machinewatch rollup {self.label}"


def flux_duration(d: timedelta) -> str:
    return duration_text(int(d.total_seconds()))


ROLLUP_1M = Rollup("1m", names.BUCKET_ROLLUP_1M, names.BUCKET_AGGREGATES, "10s", timedelta(minutes=1),
                   lookback=timedelta(minutes=5), offset=timedelta(seconds=20))
# Hours from minutes: 60 rows per series and hour instead of 360.
ROLLUP_1H = Rollup("1h", names.BUCKET_ROLLUP_1H, names.BUCKET_ROLLUP_1M, "1m", timedelta(hours=1),
                   lookback=timedelta(hours=3), offset=timedelta(minutes=2))
ROLLUPS = (ROLLUP_1M, ROLLUP_1H)


def by_label() -> dict[str, str]:
    """The roll-up buckets by the ``window`` tag of their rows ("1m" -> rollup_1m, "1h" -> rollup_1h)."""
    return {r.label: r.bucket for r in ROLLUPS}


def task_flux(rollup: Rollup, org: str | None) -> str:
    """The roll-up as an InfluxDB task's Flux (the way measured against the window job's roll-ups): the library's
    rollup.flux with its inputs bound, written to the roll-up's bucket.

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

"""The first slice end to end on the real stack.

Simulated readings (out of order) -> Kafka -> Flink SQL tumbling windows -> Kafka -> writer ->
InfluxDB; the windows InfluxDB holds must equal a pandas recomputation of the same readings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from machinewatch import jobs, query
from machinewatch.config import Settings
from machinewatch.demo import ensure_pipeline
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack
from simulators.temperature import TemperatureSimulator
from sinks.influxdb_writer import InfluxWriter
from tests.waiting import poll, wait_for

pytestmark = pytest.mark.integration

DEVICES = 12
STEPS = 95


@pytest.fixture(scope="module")
def pipeline(stack: Stack, settings: Settings) -> Iterator[None]:
    ensure_pipeline(settings, stack)
    wait_for(lambda: jobs.running(settings, "machinewatch-window-aggregates"), 120, "the window job to be RUNNING")
    yield
    for job in jobs.running(settings, "machinewatch-window-aggregates"):
        jobs.cancel(settings, job["jid"])
    stack.writer.stop()


def oracle(readings: pd.DataFrame, window_ms: int) -> pd.DataFrame:
    """Tumbling windows aligned to the epoch, as Flink's TUMBLE computes them."""
    df = readings.assign(window_end_ms=(readings.ts // window_ms + 1) * window_ms)
    return (
        df.groupby(["device_id", "window_end_ms"])["value"]
        .agg(avg="mean", min="min", max="max", count="count")
        .reset_index()
    )


def fetch(settings: Settings, prefix: str, since: datetime) -> pd.DataFrame:
    frame = query.window_aggregates(
        settings, since - timedelta(minutes=5), device_prefix=prefix, window=f"{settings.window_size_s}s"
    )
    if frame.empty:
        return frame
    frame["window_end_ms"] = frame["_time"].map(lambda t: int(t.timestamp() * 1000))
    return frame


def test_influx_windows_equal_pandas_recomputation(stack: Stack, settings: Settings, pipeline: None) -> None:
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    window_ms = settings.window_size_s * 1000
    now = datetime.now(tz=UTC)
    # Start mid-window so the first window is partial, as in a live stream.
    start = now - timedelta(seconds=STEPS + 3.5)
    sim = TemperatureSimulator(
        devices=DEVICES, seed=42, device_prefix=prefix, max_disorder_ms=1500,
        overheats=[(2, 20_000, 30_000, 35.0)],
    )
    readings = sim.readings(start, STEPS)
    with Publisher(settings) as pub:
        futures = [(r, pub.send(r)) for r in readings]
        pub.flush()
    rows = [{**r.to_dict(), "partition": f.get(timeout=30).partition} for r, f in futures]
    sent = pd.DataFrame(rows)
    assert len(sent) == DEVICES * STEPS

    # Windows that must have closed: the watermark passed them on every partition with data.
    horizon = int(sent.groupby("partition").ts.max().min()) - settings.watermark_delay_ms
    expected_all = oracle(sent, window_ms)
    expected = expected_all[expected_all.window_end_ms <= horizon]
    assert len(expected) >= DEVICES * 8

    got = poll(lambda: fetch(settings, prefix, start), lambda frame: len(frame) >= len(expected), 180,
               f"{len(expected)} closed windows in InfluxDB", every=2)

    merged = expected_all.merge(got, on=["device_id", "window_end_ms"], how="right", suffixes=("_exp", ""),
                                indicator=True)
    assert (merged["_merge"] == "both").all(), "InfluxDB holds a window no reading belongs to"
    keys = set(zip(got.device_id, got.window_end_ms, strict=True))
    missing = [k for k in zip(expected.device_id, expected.window_end_ms, strict=True) if k not in keys]
    assert not missing, f"{len(missing)} closed windows never reached InfluxDB, e.g. {missing[:3]}"
    assert (merged["count"] == merged["count_exp"]).all(), "window counts differ"
    for col in ("avg", "min", "max"):
        diff = (merged[col] - merged[f"{col}_exp"]).abs().max()
        assert diff <= 1e-9, f"{col} differs by {diff}"
    assert got.duplicated(["device_id", "window_end_ms"]).sum() == 0
    assert set(got.unit) == {"°C"} and set(got["window"]) == {f"{settings.window_size_s}s"}
    # The overheat episode is visible in the windows of device 2 only.
    hot = got[got.device_id == sim.device_id(2)]["max"].max()
    others = got[got.device_id != sim.device_id(2)]["max"].max()
    assert hot > others + 15

    # Replaying every result through a second writer overwrites points instead of adding any.
    before = fetch(settings, prefix, start)
    replay = InfluxWriter(settings, group_id=f"replay-{prefix}")
    replay.run(idle_exit_s=5)
    assert replay.written >= len(before)
    after = fetch(settings, prefix, start)
    pd.testing.assert_frame_equal(
        before.sort_values(["device_id", "window_end_ms"]).reset_index(drop=True),
        after.sort_values(["device_id", "window_end_ms"]).reset_index(drop=True),
    )

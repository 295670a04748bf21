"""MQTT to InfluxDB through the whole pipeline, with the collector SIGKILLed mid-stream.

A real mosquitto, the real ``machinewatch ingest mqtt`` command, Kafka, the window job on Flink and the
InfluxDB writer. Checked: every message the sender got a PUBACK for reaches the readings topic (no loss
across the crash), and InfluxDB holds exactly the windows that the readings topic gives, computed here
with pandas, count, min, max and avg. Repeats of an unacknowledged batch keep their event ids and are
counted by the window job like any reading (README, "What does not hold"); the oracle counts them too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from machinewatch import query
from machinewatch.config import Settings
from machinewatch.record import make_event_id
from machinewatch.stack import Stack
from machinewatch.stack.mosquitto import Mosquitto
from tests.integration.pipeline_support import WindowPipeline, hop_windows
from tests.mqtt_support import Collector, Sender, wait_for, write_conf
from tests.stack_support import read_topic
from tests.waiting import poll

pytestmark = pytest.mark.integration

STEP_MS = 20  # event time between messages: a batch repeated after the kill stays within the watermark delay
MAX_BATCH = 20  # the collector's batches, so one unacknowledged batch spans at most 0.4 s of event time


@pytest.fixture(scope="module")
def broker(stack: Stack, settings: Settings) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(settings)
    try:
        mosquitto.up(timeout=60)
        yield mosquitto
    finally:
        mosquitto.proc.stop()


def test_mqtt_readings_reach_influxdb_exactly_across_a_collector_crash(
        stack: Stack, settings: Settings, broker: Mosquitto, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    prefix = f"mq{run}"
    base = int((datetime.now(tz=UTC) - timedelta(days=2)).replace(second=0, microsecond=0).timestamp() * 1000)

    pipeline = WindowPipeline(settings, run, "mqtt")
    topics = pipeline.topics
    collector = Collector(settings, write_conf(tmp_path / "mqtt.conf", settings, f"mw-pipe-{run}", prefix,
                                               topics["readings"], max_batch=MAX_BATCH), tmp_path / "collector.log")
    sender = Sender(settings)
    sent: set[str] = set()
    stop_sending = threading.Event()

    def publish(total: int) -> None:
        for n in range(total):
            if stop_sending.is_set():
                return
            device, ts = f"{prefix}-d{n % 3}", base + n * STEP_MS
            sender.send(f"{prefix}/plant/{device}/temperature", b'{"value": %.2f, "ts": %d}' % (40 + (n % 97) / 4, ts))
            sent.add(make_event_id("mqtt", device, ts, "temperature"))
            time.sleep(0.002)

    total = 4000  # 80 s of event time: several 30 s windows per device
    stream = threading.Thread(target=publish, args=(total,), daemon=True)
    try:
        collector.start()
        stream.start()
        wait_for("the first messages", lambda: len(sent) >= 600, timeout=120, alive=collector.proc)
        collector.kill()  # mid-stream, a batch between Kafka's ack and the PUBACKs
        killed_at = len(sent)
        time.sleep(1.0)
        collector.start()
        stream.join(600)
        assert not stream.is_alive() and len(sent) == total
        assert killed_at < total, "nothing was published while the collector was down"
        wait_for("every message on the readings topic",
                 lambda: {r["event_id"] for r in read_topic(settings, topics["readings"])} >= sent,
                 timeout=300, alive=collector.proc)
        assert collector.terminate() == 0, collector.text()[-3000:]

        readings = pd.DataFrame(read_topic(settings, topics["readings"]))
        assert set(readings.event_id) == sent, "a message is missing or foreign"
        size_ms, slide_ms = settings.hop_size_s * 1000, settings.hop_slide_s * 1000
        horizon = int(readings.groupby("device_id").ts.max().min()) - settings.watermark_delay_ms
        want = hop_windows(readings, size_ms, slide_ms)
        want = want[want.window_end_ms <= horizon]
        start = datetime.fromtimestamp(base / 1000, tz=UTC)
        got = poll(lambda: query.window_aggregates(
            settings, start - timedelta(minutes=5), start + timedelta(hours=1), device_prefix=f"{prefix}-",
            window=f"{settings.hop_size_s}s@{settings.hop_slide_s}s",
        ), lambda frame: len(frame) >= len(want), 300, f"{len(want)} MQTT windows in InfluxDB", every=3)
    finally:
        stop_sending.set()
        sender.close()
        collector.close()
        pipeline.stop()

    got["window_end_ms"] = got["_time"].map(lambda t: int(t.timestamp() * 1000))
    merged = want.merge(got, on=["device_id", "metric", "window_end_ms"], how="left", suffixes=("", "_got"))
    assert merged["count_got"].notna().all(), f"{merged['count_got'].isna().sum()} windows missing in InfluxDB"
    assert (merged["count"] == merged["count_got"]).all(), merged[merged["count"] != merged["count_got"]].head()
    for col in ("avg", "min", "max"):
        assert (merged[col] - merged[f"{col}_got"]).abs().max() <= 1e-9, col
    assert read_topic(settings, topics["late"]) == [], "a repeated batch fell behind the watermark"
    repeats = len(readings) - readings.event_id.nunique()
    print(f"\nMQTT -> InfluxDB: {total} messages, collector killed after {killed_at}, "  # noqa: T201
          f"{repeats} repeated with identical ids, {len(want)} windows checked")

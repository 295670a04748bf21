"""Backfill: the window job in batch mode over a topic's history gives the streaming run's results."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from kafka import KafkaConsumer

from machinewatch import jobs, rollups
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack
from simulators.temperature import TemperatureSimulator
from tests.integration.conftest import require_free_slot
from tests.stack_support import create_topics
from tests.waiting import poll

pytestmark = pytest.mark.integration

KEY = ["device_id", "metric", "window_ms", "slide_ms", "window_end_ms"]
ROLLUP_S = {r.window_s for r in rollups.ROLLUPS}


def results(settings: Settings, topic: str) -> pd.DataFrame:
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    rows = [json.loads(m.value) for m in consumer if m.value]
    consumer.close()
    return pd.DataFrame(rows)


def test_batch_backfill_equals_the_streaming_run(stack: Stack, settings: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    names_ = ["readings", "agg_stream", "agg_batch", "late", "alerts_stream", "alerts_batch"]
    topics = {k: f"mw.test-{run}.{k}" for k in names_}
    create_topics(settings, topics.values())
    start = datetime.now(tz=UTC) - timedelta(seconds=150)
    sim = TemperatureSimulator(devices=8, seed=9, device_prefix=f"bf{run}", max_disorder_ms=1500)
    with Publisher(settings, topic=topics["readings"]) as pub:
        pub.send_many(sim.readings(start, 120))

    common = ["--readings-topic", topics["readings"], "--late-topic", topics["late"]]
    require_free_slot(settings)
    stream_name = f"mw-bf-stream-{run}"
    jobs.submit(settings, "window-aggregates", [*common, "--aggregates-topic", topics["agg_stream"],
                                                "--alerts-topic", topics["alerts_stream"],
                                                "--group-id", f"g-{run}", "--job-name", stream_name])
    try:
        # every device's tumbling windows up to the last complete one, plus the sliding ones
        streamed = poll(lambda: results(settings, topics["agg_stream"]), lambda frame: len(frame) >= 8 * 11 * 2,
                        180, "the streaming run's windows")
        assert len(streamed) >= 8 * 11 * 2, f"streaming run produced {len(streamed)} windows"
    finally:
        for job in jobs.running(settings, stream_name):
            jobs.cancel(settings, job["jid"])

    require_free_slot(settings)
    batch_id = jobs.submit(settings, "window-aggregates", [*common, "--aggregates-topic", topics["agg_batch"],
                                                           "--alerts-topic", topics["alerts_batch"], "--batch",
                                                           "--job-name", f"mw-bf-batch-{run}"])
    state = poll(lambda: str(jobs.job_detail(settings, batch_id).get("state")),
                 lambda state: state in ("FINISHED", "FAILED", "CANCELED"), 240, "the backfill job to end", every=2)
    assert state == "FINISHED", f"backfill ended as {state}"
    streamed = results(settings, topics["agg_stream"]).drop_duplicates(KEY)  # at-least-once: repeats allowed
    # A backfill makes no roll-ups (README, Roll-ups): the streaming run's are not compared.
    rolled = streamed.apply(lambda r: r["window_ms"] == r["slide_ms"] and r["window_ms"] // 1000 in ROLLUP_S, axis=1)
    assert rolled.any(), "the streaming run made its minute roll-ups"
    streamed = streamed[~rolled]
    batch = results(settings, topics["agg_batch"])
    assert not batch.apply(lambda r: r["window_ms"] // 1000 in ROLLUP_S, axis=1).any()
    assert not batch.duplicated(KEY).any()
    merged = streamed.merge(batch, on=KEY, how="left", suffixes=("", "_b"))
    assert merged["count_b"].notna().all(), "a window of the streaming run is missing from the backfill"
    assert (merged["count"] == merged["count_b"]).all()
    for col in ("avg_value", "min_value", "max_value"):
        assert (merged[col] - merged[f"{col}_b"]).abs().max() <= 1e-9, col
    # The backfill also closes the windows at the end that the stream's watermark never passed.
    assert len(batch) >= len(streamed)

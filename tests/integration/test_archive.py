"""Cold path: readings archived to hour-partitioned Parquet and replayed, nothing lost or changed."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from kafka import KafkaConsumer

from ingest.archive import replay_archive
from machinewatch.archive import read_archive
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack
from simulators.temperature import TemperatureSimulator
from sinks.archiver import Archiver
from tests.stack_support import create_topics

pytestmark = pytest.mark.integration


def test_archive_holds_every_reading_by_hour_and_replays_them(stack: Stack, settings: Settings, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {"in": f"mw.test-{run}.in", "replay": f"mw.test-{run}.replay"}
    create_topics(settings, topics.values())
    # 3 devices, one reading every 20 s over 3 hours: crosses hour boundaries
    start = (datetime.now(tz=UTC) - timedelta(hours=4)).replace(minute=30, second=0, microsecond=0)
    readings = TemperatureSimulator(devices=3, seed=4, interval_ms=20_000, device_prefix=f"ar{run}").readings(
        start, 540)
    with Publisher(settings, topic=topics["in"]) as pub:
        pub.send_many(readings)
        pub.send_json("bad", b'{"not": "a reading"}', topic=topics["in"])  # must be dead-lettered, not archived

    root = tmp_path / "archive"
    archiver = Archiver(settings, root, topic=topics["in"], group_id=f"a-{run}", max_rows=500, max_age_s=2)
    thread = threading.Thread(target=archiver.run, kwargs={"idle_exit_s": 8}, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert archiver.rejected == 1

    archived = pd.DataFrame([r.to_dict() for r in read_archive(root)])
    sent = pd.DataFrame([r.to_dict() for r in readings])
    assert len(archived) == len(sent) and set(archived.event_id) == set(sent.event_id)
    merged = sent.merge(archived, on="event_id", suffixes=("", "_a"))
    assert (merged.value == merged.value_a).all() and (merged.ts == merged.ts_a).all()
    # every file sits in the folder of its readings' event hour
    for path in root.rglob("*.parquet"):
        hours = {datetime.fromtimestamp(r.ts / 1000, tz=UTC).strftime("date=%Y-%m-%d/hour=%H")
                 for r in read_archive(path.parent)}
        assert hours == {f"{path.parent.parent.name}/{path.parent.name}"}
    assert len({p.parent for p in root.rglob("*.parquet")}) >= 3

    assert replay_archive(settings, root, topics["replay"]) == len(sent)
    consumer = KafkaConsumer(topics["replay"], bootstrap_servers=settings.kafka_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    replayed = {json.loads(m.value)["event_id"] for m in consumer}
    consumer.close()
    assert replayed == set(sent.event_id)

"""The multi-node stack: a 3-node KRaft cluster and 2 TaskManagers, and the window job on it at parallelism 4.

One cluster is started for this module (``stack up --kafka-brokers 3 --taskmanagers 2`` in a private state
dir). The same slice of the course dataset goes through the single-node session stack (1 partition,
parallelism 1) and through the cluster (6 partitions, parallelism 4): both must give exactly the windows
and threshold alerts pandas computes, hence the same as each other. Event time makes that deterministic:
every partition ends at the slice's last time, so each stack's watermark stops at the same point.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.partitioner.default import murmur2

from machinewatch import names, rollups
from machinewatch.config import Settings
from machinewatch.kafka_io import _topic_config_values, ensure_topics
from machinewatch.stack import Stack
from machinewatch.stack.private import private_settings
from tests.integration.pipeline_support import WindowPipeline, hop_windows
from tests.integration.test_course_dataset import DATA, course_readings, expected_alerts, publish_course
from tests.realdata import realdata_file
from tests.stack_support import read_topic, running_stack
from tests.waiting import wait_for_count

pytestmark = pytest.mark.integration

BROKERS, TASKMANAGERS, PARTITIONS, PARALLELISM = 3, 2, 6, 4
# The jobs of both runs mark a partition idle only after 5 min without records (default 30 s). At
# parallelism 4 a source subtask reads two of the six partitions, and Flink counts the time its thread
# spends in the chained operators on one partition's records as the other's silence (FLINK-40234): on
# a busy machine the other partition was taken for idle and its readings came late. Every partition of
# this test has data to the end (see course_slice), so no window waits for the timeout. The README says
# how to run in production (one partition per source subtask).
IDLE_TIMEOUT_MS = 300_000
# The first ten minutes of the course dataset: 20 servers x 5 metrics x 120 times.
SLICE_S = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = private_settings(
        Path(tmp_path_factory.mktemp("mw-cluster")), kafka_brokers=BROKERS, flink_taskmanagers=TASKMANAGERS,
        kafka_partitions=PARTITIONS, flink_parallelism=PARALLELISM, flink_taskmanager_slots=PARALLELISM // TASKMANAGERS,
    )
    with running_stack(settings) as stack:
        yield stack


def test_cluster_nodes_and_topics(cluster: Stack) -> None:
    """Every node runs and is reported; the project's topics have 3 replicas, min.insync.replicas 2."""
    s = cluster.settings
    rows = {row.name: row for row in cluster.status()}
    assert {"kafka", "kafka-2", "kafka-3"} <= set(rows)
    assert all(rows[n].ready and rows[n].pid for n in ("kafka", "kafka-2", "kafka-3", "flink-jobmanager"))
    assert len({rows[n].address for n in ("kafka", "kafka-2", "kafka-3")}) == BROKERS
    assert f"{TASKMANAGERS} taskmanagers" in rows["flink-jobmanager"].detail
    assert cluster.flink.overview()["taskmanagers"] == TASKMANAGERS
    assert all(node.dir.is_dir() and (node.dir / "data" / "meta.properties").exists() for node in cluster.kafka.nodes)
    logs = cluster.logs(None, 5)
    for name in ("kafka", "kafka-2", "kafka-3", "flink-taskmanager", "flink-taskmanager-2"):
        assert f"==> {name} (" in logs

    admin = KafkaAdminClient(**s.kafka_client_config())
    try:
        described = {t["name"]: t for t in admin.describe_topics([names.TOPIC_READINGS, names.TOPIC_ALERTS])}
        for topic in (names.TOPIC_READINGS, names.TOPIC_ALERTS):
            parts = described[topic]["partitions"]
            assert len(parts) == PARTITIONS
            assert all(len(p["replica_nodes"]) == BROKERS for p in parts), topic
            # Leaders spread over the nodes: losing one node is a real failover for some partitions only.
            assert len({p["leader_id"] for p in parts}) == BROKERS
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in names.ALL_TOPICS])
        min_isr = {t: _topic_config_values(configs, t).get("min.insync.replicas") for t in names.ALL_TOPICS}
        assert min_isr == dict.fromkeys(names.ALL_TOPICS, "2")
        # Idempotent on a cluster too: nothing new.
        assert ensure_topics(admin, s.kafka_partitions, replication=s.kafka_replication_factor) == []
    finally:
        admin.close()


def _run(settings: Settings, df: pd.DataFrame, run: str, expected_windows: int, expected_alerts_n: int,
         stall_s: float = 300) -> tuple[dict[tuple[Any, ...], tuple[Any, ...]], set[tuple[Any, ...]]]:
    """Feed ``df`` to a private window pipeline on ``settings``' stack; its windows and alerts, read from Kafka."""
    # The input is in Kafka before the job starts: every partition has data from the job's first fetch, so
    # only the idleness of IDLE_TIMEOUT_MS (above) can take one for idle.
    pipeline = WindowPipeline(settings, run, "cluster",
                              before_job=lambda topics: publish_course(settings, topics["readings"], df))
    topics = pipeline.topics
    try:
        def windows() -> dict[tuple[Any, ...], tuple[Any, ...]]:
            # At least once: a repeat is the same record, so the last one of a key stands for all.
            return {(r["device_id"], r["metric"], r["window_ms"], r["window_end_ms"]):
                    (r["count"], r["avg_value"], r["min_value"], r["max_value"])
                    for r in read_topic(settings, topics["aggregates"])
                    if "devices" not in r}  # a device's windows; fleet roll-ups are checked in test_rollups_stack

        def alerts() -> set[tuple[Any, ...]]:
            return {(r["device_id"], r["window_end_ms"], r["rule_group"], r["label"], r["severity"])
                    for r in read_topic(settings, topics["alerts"])}

        wait_for_count(lambda: len(windows()), expected_windows, stall_s, f"{expected_windows} windows on {run}")
        wait_for_count(lambda: len(alerts()), expected_alerts_n, stall_s, f"{expected_alerts_n} alerts on {run}")
        late = read_topic(settings, topics["late"])
        assert not late, f"{len(late)} readings came behind the watermark on {run}, e.g. {late[:2]}"
        return windows(), alerts()
    finally:
        pipeline.stop()


def course_slice(run: str) -> pd.DataFrame:
    """The first SLICE_S seconds of the course dataset, two days ago, with device ids of this run.

    The ids' prefix is chosen so that the servers land in every one of the PARTITIONS partitions (the
    publisher's murmur2 partitioner): a partition without data would hold the watermark back until it is
    taken for idle."""
    base = (datetime.now(tz=UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    df = course_readings(realdata_file(DATA), base)
    df = df[df.ts < df.ts.min() + SLICE_S * 1000].copy()
    servers = sorted(df["device_id"].astype(str).unique())
    for n in range(1000):
        prefix = f"k{run}{n}-"
        if len({(murmur2(f"{prefix}{s}".encode()) & 0x7FFFFFFF) % PARTITIONS for s in servers}) == PARTITIONS:
            break
    df["device_id"] = prefix + df["device_id"].astype(str)
    return df


def reference(settings: Settings, df: pd.DataFrame) -> tuple[pd.DataFrame, set[tuple[Any, ...]]]:
    """pandas: the tumbling and sliding windows and the roll-ups (minutes, hours: windows of the readings, as the
    job's roll-ups of its windows must equal) up to where the watermark stops, and the threshold alerts."""
    horizon = int(df.ts.max()) - settings.watermark_delay_ms
    size_ms, slide_ms = settings.hop_size_s * 1000, settings.hop_slide_s * 1000
    tumbling_ms = settings.window_size_s * 1000
    sliding = hop_windows(df, size_ms, slide_ms)
    sliding = sliding[sliding.window_end_ms <= horizon]
    tumbling = hop_windows(df, tumbling_ms, tumbling_ms).assign(window_ms=tumbling_ms)
    rolled = [hop_windows(df, r.window_s * 1000, r.window_s * 1000).assign(window_ms=r.window_s * 1000)
              for r in rollups.ROLLUPS if settings.rollups]
    windows = pd.concat([tumbling, sliding.assign(window_ms=size_ms), *rolled])
    windows = windows[windows.window_end_ms <= horizon]
    alerts = expected_alerts(sliding)
    return windows, set(zip(alerts.device_id, alerts.window_end_ms, alerts.label, strict=True))


def check(windows: pd.DataFrame, want_alerts: set[tuple[Any, ...]], got: dict[tuple[Any, ...], tuple[Any, ...]],
          got_alerts: set[tuple[Any, ...]]) -> None:
    """Exactly the reference's windows (no more, no fewer, same values) and alerts."""
    want_keys = set(zip(windows.device_id, windows.metric, windows.window_ms, windows.window_end_ms, strict=True))
    assert set(got) == want_keys, (f"missing {sorted(want_keys - set(got))[:3]}, "
                                   f"unexpected {sorted(set(got) - want_keys)[:3]}")
    for row in windows.itertuples(index=False):
        count, avg, low, high = got[(row.device_id, row.metric, row.window_ms, row.window_end_ms)]
        assert count == row.count, (row, count)
        assert abs(avg - row.avg) <= 1e-9 and abs(low - row.min) <= 1e-9 and abs(high - row.max) <= 1e-9, row
    assert {(d, e, label) for d, e, _, label, _ in got_alerts} == want_alerts


def test_parallel_cluster_equals_single_node(stack: Stack, settings: Settings, cluster: Stack) -> None:
    """6 partitions read by 4 subtasks on 2 TaskManagers give what 1 partition read by 1 subtask gives."""
    cs = cluster.settings
    assert (cs.kafka_partitions, cs.flink_parallelism) == (PARTITIONS, PARALLELISM) != (
        settings.kafka_partitions, settings.flink_parallelism)
    run = uuid.uuid4().hex[:8]
    df = course_slice(run)
    windows, want_alerts = reference(settings, df)
    assert want_alerts, "the slice holds alerts; an empty expectation would prove nothing"

    idle = {"source_idle_timeout_ms": IDLE_TIMEOUT_MS}
    single_windows, single_alerts = _run(settings.model_copy(update=idle), df, f"{run}s", len(windows),
                                         len(want_alerts))
    cluster_windows, cluster_alerts = _run(cs.model_copy(update=idle), df, f"{run}c", len(windows), len(want_alerts))

    check(windows, want_alerts, single_windows, single_alerts)
    check(windows, want_alerts, cluster_windows, cluster_alerts)
    # Same windows with the same counts (the values: both equal pandas' within 1e-9 above).
    assert {k: v[0] for k, v in cluster_windows.items()} == {k: v[0] for k, v in single_windows.items()}
    assert cluster_alerts == single_alerts

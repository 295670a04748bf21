"""A test's own instance of the window pipeline, and the pandas reference of its sliding windows.

``WindowPipeline`` gives a test private topics, the window job on Flink reading them and an InfluxDB writer
thread for its results; ``stop()`` ends both. ``hop_windows`` is what the job's HOP windows must hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pandas as pd
from kafka import KafkaConsumer, TopicPartition

from machinewatch import jobs, names, rollups
from machinewatch.config import Settings
from sinks.influxdb_writer import ByWindow, InfluxWriter, aggregate_line, alert_line
from tests.integration.conftest import require_free_slot
from tests.stack_support import create_topics


class WindowPipeline:
    """Topics ``mw.test-<run>.{readings,aggregates,late,alerts}``, the window job on them, the writer running."""

    def __init__(self, settings: Settings, run: str, name: str,
                 before_job: Callable[[dict[str, str]], None] | None = None) -> None:
        self.settings = settings
        self.topics = {k: f"mw.test-{run}.{k}" for k in ("readings", "aggregates", "late", "alerts")}
        create_topics(settings, self.topics.values())
        if before_job is not None:
            # E.g. the whole input published before the job starts, so that the job finds every partition
            # with data from its first fetch.
            before_job(self.topics)
        self.run = run
        self.job_name = f"mw-{name}-{run}"
        require_free_slot(settings)
        jobs.submit(settings, "window-aggregates", [
            "--readings-topic", self.topics["readings"], "--aggregates-topic", self.topics["aggregates"],
            "--late-topic", self.topics["late"], "--alerts-topic", self.topics["alerts"],
            "--group-id", f"g-{run}", "--job-name", self.job_name,
        ])
        self.writer = InfluxWriter(settings, group_id=f"w-{run}", routes={
            # as the writer routes them: the roll-ups to their buckets
            self.topics["aggregates"]: (aggregate_line, ByWindow(names.BUCKET_AGGREGATES, rollups.by_label())),
            self.topics["alerts"]: (alert_line, names.BUCKET_ALERTS),
        })
        self.thread = threading.Thread(target=self.writer.run, daemon=True)
        self.thread.start()

    def state(self) -> str:
        """Where the records are, for a failure message: each topic's end offset, the writer's group offsets,
        the writer thread and what it wrote."""
        consumer = KafkaConsumer(**self.settings.kafka_client_config(), group_id=f"w-{self.run}",
                                 enable_auto_commit=False)
        try:
            parts = [TopicPartition(t, p) for t in self.topics.values()
                     for p in sorted(consumer.partitions_for_topic(t) or ())]
            ends = consumer.end_offsets(parts)
            committed = {tp: consumer.committed(tp) for tp in parts}
        finally:
            consumer.close()
        offsets = ", ".join(f"{tp.topic.rsplit('.', 1)[-1]}[{tp.partition}] end {ends[tp]} committed {committed[tp]}"
                            for tp in parts)
        return (f"topics: {offsets}; writer thread alive: {self.thread.is_alive()}, written {self.writer.written}, "
                f"rejected {self.writer.rejected}")

    def stop(self) -> None:
        """Stop the writer (after its last flush) and cancel the job."""
        self.writer.stop_event.set()
        self.thread.join(timeout=30)
        for job in jobs.running(self.settings, self.job_name):
            jobs.cancel(self.settings, job["jid"])


def hop_windows(df: pd.DataFrame, size_ms: int, slide_ms: int) -> pd.DataFrame:
    """avg/min/max/count per (device, metric, window end) of ``size_ms`` windows every ``slide_ms``."""
    parts = [df.assign(window_end_ms=(df.ts // slide_ms) * slide_ms - k * slide_ms + size_ms)
             for k in range(size_ms // slide_ms)]
    return pd.concat(parts).groupby(["device_id", "metric", "window_end_ms"])["value"].agg(
        avg="mean", min="min", max="max", count="count").reset_index()

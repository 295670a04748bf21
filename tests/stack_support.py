"""Helpers for tests that start a real stack of their own (free loopback ports)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from machinewatch.config import Settings
from machinewatch.stack import Stack


@contextlib.contextmanager
def running_stack(settings: Settings, timeout: float = 300) -> Iterator[Stack]:
    """A stack of ``settings`` up for the block and down after it, also when it failed half way up."""
    stack = Stack(settings)
    try:
        stack.up(timeout=timeout)
        yield stack
    finally:
        stack.down()


def create_topics(settings: Settings, topics: Iterable[str]) -> None:
    """A test's own topics, so its event times never meet another test's watermark (replicated as the
    stack's own topics are: on a cluster, a lost broker must not lose them)."""
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        admin.create_topics([NewTopic(t, settings.kafka_partitions, settings.kafka_replication_factor,
                                      topic_configs={"min.insync.replicas": "2"}
                                      if settings.kafka_replication_factor >= 3 else {})
                             for t in topics])
    finally:
        admin.close()


def read_messages(settings: Settings, topic: str) -> list[Any]:
    """Every message of ``topic`` from the beginning (all partitions), without joining a group."""
    consumer = KafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return list(consumer)
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """The JSON records of ``topic`` from the beginning (tombstones left out)."""
    return [json.loads(m.value) for m in read_messages(settings, topic) if m.value is not None]


def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The end offset of every partition of ``topics``: where a test starts reading what it causes."""
    consumer = KafkaConsumer(**settings.kafka_client_config(), group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        return dict(consumer.end_offsets(tps))
    finally:
        consumer.close()


def read_since(settings: Settings, starts: dict[TopicPartition, int], timeout_s: float = 60
               ) -> dict[str, list[dict[str, Any]]]:
    """Every JSON record written to the partitions of ``starts`` after those offsets, up to now, by topic."""
    consumer = KafkaConsumer(**settings.kafka_client_config(), group_id=None, enable_auto_commit=False)
    out: dict[str, list[dict[str, Any]]] = {tp.topic: [] for tp in starts}
    try:
        consumer.assign(list(starts))
        ends = consumer.end_offsets(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        todo = {tp for tp in starts if ends[tp] > starts[tp]}
        deadline = time.monotonic() + timeout_s
        while todo:
            assert time.monotonic() < deadline, f"could not read the topics back within {timeout_s:g} s"
            for tp, records in consumer.poll(timeout_ms=500).items():
                out[tp.topic] += [json.loads(r.value) for r in records if r.offset < ends[tp]]
            todo = {tp for tp in todo if consumer.position(tp) < ends[tp]}
    finally:
        consumer.close()
    return out


class WebhookReceiver:
    """A webhook target on 127.0.0.1: records every delivery as {"key": Idempotency-Key, **body}."""

    def __init__(self) -> None:
        self.deliveries: list[dict[str, Any]] = []
        deliveries = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server interface
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                deliveries.append({"key": self.headers.get("Idempotency-Key") or "", **json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

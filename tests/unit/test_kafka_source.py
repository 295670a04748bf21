"""The Kafka consumer source of the runner, without a broker: batches of messages with their offsets as the
checkpoint, commits only of what was flushed, broker failures retried by the runner, rebalanced commits dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pytest
from kafka.errors import CommitFailedError, KafkaConnectionError
from kafka.future import Future
from kafka.structs import OffsetAndMetadata, TopicPartition

from machinewatch import kafka_io, names
from machinewatch.config import Settings
from machinewatch.runtime import Rejected, RunOptions, TransientError
from tests.unit.test_publisher_guards import FakeProducer

FAST = RunOptions(flush_interval_s=0.01, poll_timeout_s=0.01, retry_min_s=0.001, retry_max_s=0.004,
                  stop_timeout_s=0.2, stats_interval_s=0.05)


class Msg(NamedTuple):
    """What kafka-python's ConsumerRecord has and the sinks read."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class FakeConsumer:
    """Hands out scripted polls (a dict of messages by partition, or an exception), then nothing; records commits.

    ``commit_failures`` are raised by the first commits, in order; ``on_commit`` is called before each commit
    is made. Every call is logged in ``events``."""

    def __init__(self, polls: list[dict[TopicPartition, list[Msg]] | Exception],
                 commit_failures: Sequence[Exception] = (), assigned: set[TopicPartition] | None = None) -> None:
        self.polls = list(polls)
        self.commit_failures = list(commit_failures)
        self.assigned = assigned
        self.topics: tuple[str, ...] = ()
        self.config: dict[str, Any] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.events: list[str] = []
        self.highwaters: dict[TopicPartition, int] = {}
        self.on_commit: Callable[[], None] | None = None
        self.closed = False

    def __call__(self, *topics: str, **config: Any) -> FakeConsumer:  # stands in for the KafkaConsumer class
        self.topics, self.config = topics, config
        return self

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Msg]]:
        if not self.polls:
            time.sleep(timeout_ms / 1000)
            return {}
        item = self.polls.pop(0)
        if isinstance(item, Exception):
            self.events.append("poll failed")
            raise item
        self.events.append("poll")
        return item

    def assignment(self) -> set[TopicPartition]:
        if self.assigned is not None:
            return self.assigned
        return {TopicPartition(t, p) for t in self.topics for p in range(4)}

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        assert all(isinstance(o, OffsetAndMetadata) for o in offsets.values())
        if self.commit_failures:
            self.events.append("commit failed")
            raise self.commit_failures.pop(0)
        if self.on_commit is not None:
            self.on_commit()
        self.events.append("commit")
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    def close(self) -> None:
        self.closed = True


class AckingProducer(FakeProducer):
    """Every send is acknowledged at once."""

    def send(self, topic: str, key: bytes, value: bytes) -> Future:
        future = super().send(topic, key, value)
        future.success(None)
        return future

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class ListSink:
    """Takes the messages' values; refuses values starting with b"bad"."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.values: list[bytes | None] = []

    def write(self, records: Sequence[Msg]) -> list[Rejected]:
        self.values += [r.value for r in records]
        return [Rejected(r.value or b"", "bad", kafka_io.message_origin(r))
                for r in records if (r.value or b"").startswith(b"bad")]

    def flush(self) -> None:
        self.events.append("flush")

    def close(self) -> None:
        pass


def tp(partition: int, topic: str = "t") -> TopicPartition:
    return TopicPartition(topic, partition)


def msgs(partition: int, first: int, *values: bytes) -> list[Msg]:
    return [Msg("t", partition, first + n, v) for n, v in enumerate(values)]


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(state_dir=tmp_path)


def source_on(monkeypatch: pytest.MonkeyPatch, settings: Settings, consumer: FakeConsumer) -> kafka_io.KafkaSource:
    monkeypatch.setattr(kafka_io, "KafkaConsumer", consumer)
    source = kafka_io.KafkaSource(settings, ["t"], "g", name="unit")
    source.open()
    return source


def test_batches_carry_the_messages_and_the_offsets_after_them(monkeypatch: pytest.MonkeyPatch,
                                                               settings: Settings) -> None:
    consumer = FakeConsumer([{tp(0): msgs(0, 10, b"a", b"b"), tp(1): msgs(1, 5, b"c")}, {tp(0): msgs(0, 12, b"d")}])
    source = source_on(monkeypatch, settings, consumer)
    assert consumer.config["group_id"] == "g" and consumer.config["enable_auto_commit"] is False
    assert consumer.config["auto_offset_reset"] == "earliest" and consumer.config["client_id"] == "machinewatch-unit"
    first = source.poll(0.01)
    assert [m.value for m in first.records] == [b"a", b"b", b"c"]
    assert first.checkpoint == {tp(0): 12, tp(1): 6}
    second = source.poll(0.01)
    assert second.checkpoint == {tp(0): 13, tp(1): 6}  # every partition polled so far, not only this batch's
    assert source.poll(0.01).checkpoint is None  # nothing new: nothing to commit
    source.commit(first.checkpoint)
    assert consumer.commits == [{tp(0): 12, tp(1): 6}]
    source.close()
    assert consumer.closed


def test_only_assigned_partitions_are_committed_and_a_rebalanced_commit_is_dropped(
        monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    consumer = FakeConsumer([], commit_failures=[CommitFailedError("rebalanced")], assigned={tp(1)})
    source = source_on(monkeypatch, settings, consumer)
    source.commit({tp(0): 3, tp(1): 7})  # refused for a rebalance: logged, not raised (the new owner repeats them)
    source.commit({tp(0): 3, tp(1): 8})
    assert consumer.commits == [{tp(1): 8}]
    source.commit({tp(0): 4})  # nothing of ours: no request at all
    assert consumer.events == ["commit failed", "commit"]


def test_broker_failures_are_transient(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    consumer = FakeConsumer([KafkaConnectionError("111 ECONNREFUSED")],
                            commit_failures=[KafkaConnectionError("111 ECONNREFUSED")])
    source = source_on(monkeypatch, settings, consumer)
    with pytest.raises(TransientError, match="kafka poll failed: KafkaConnectionError"):
        source.poll(0.01)
    with pytest.raises(TransientError, match="kafka commit failed"):
        source.commit({tp(0): 1})


def test_lag_is_what_the_partitions_hold_after_the_last_message_polled(monkeypatch: pytest.MonkeyPatch,
                                                                       settings: Settings) -> None:
    consumer = FakeConsumer([{tp(0): msgs(0, 0, b"a", b"b")}])
    source = source_on(monkeypatch, settings, consumer)
    assert source.lag() is None
    source.poll(0.01)
    consumer.highwaters = {tp(0): 10, tp(1): 4}  # partition 1: nothing polled yet, so not known
    assert source.lag() == 8


def test_on_the_runner_broker_outages_are_retried_and_a_failed_commit_is_retried_before_the_next_poll(
        monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    # What kafka-python 3 does while the group coordinator is away: poll and commit raise.
    down = KafkaConnectionError("111 ECONNREFUSED")
    consumer = FakeConsumer([down, down, {tp(0): msgs(0, 0, b"a", b"bad", b"c")}, {tp(0): msgs(0, 3, b"d")}],
                            commit_failures=[down])
    monkeypatch.setattr(kafka_io, "KafkaConsumer", consumer)
    monkeypatch.setattr(kafka_io, "KafkaProducer", AckingProducer)
    sink = ListSink(consumer.events)
    source = kafka_io.KafkaSource(settings, ["t"], "g", name="unit")
    stop = threading.Event()
    options = FAST.model_copy(update={"max_batch": 3})  # the first batch is flushed on its own
    thread = threading.Thread(target=kafka_io.run_consumer, args=(source, sink, settings, options),
                              kwargs={"stop_event": stop}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while consumer.commits != [{tp(0): 3}, {tp(0): 4}] and time.monotonic() < deadline:
        time.sleep(0.005)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert consumer.commits == [{tp(0): 3}, {tp(0): 4}]
    assert sink.values == [b"a", b"bad", b"c", b"d"]
    failed_commit = consumer.events.index("commit failed")
    # Nothing is polled between the failed commit and its retry (the flush-then-commit is retried first).
    assert consumer.events[failed_commit + 1:failed_commit + 3] == ["flush", "commit"], consumer.events
    assert consumer.events[:2] == ["poll failed", "poll failed"]
    assert consumer.closed


def test_on_the_runner_rejects_go_to_the_dead_letter_topic_with_their_bytes_before_the_commit(
        monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    consumer = FakeConsumer([{tp(2): msgs(2, 40, b"ok", b"bad \xff bytes")}])
    monkeypatch.setattr(kafka_io, "KafkaConsumer", consumer)
    producers: list[AckingProducer] = []

    def producer(**config: Any) -> AckingProducer:
        producers.append(AckingProducer(**config))
        return producers[-1]

    monkeypatch.setattr(kafka_io, "KafkaProducer", producer)
    source = kafka_io.KafkaSource(settings, ["t"], "g", name="unit-sink")
    counters = kafka_io.run_consumer(source, ListSink(consumer.events), settings, FAST, idle_exit_s=0.3)
    assert consumer.commits == [{tp(2): 42}]
    [letter] = [doc for topic, doc in producers[0].sent if topic == names.TOPIC_DEAD_LETTER]
    assert letter["source"] == "unit-sink" and letter["origin"] == "t/2@41" and letter["reason"] == "bad"
    assert letter["raw_encoding"] == "base64"  # not valid UTF-8: kept exactly
    assert (counters.received, counters.written, counters.rejected, counters.checkpoints) == (2, 1, 1, 1)

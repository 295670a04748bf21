"""Kafka I/O of the core: the one publisher every simulator and collector uses, the dead-letter path, and the
consumer source the sinks run on (``KafkaSource``, ``run_consumer``).

acks=all with the idempotent producer, batching and compression; a failed send is counted and
raised by ``flush()``, never dropped silently.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.structs import OffsetAndMetadata

from machinewatch import names, quality
from machinewatch.config import Settings
from machinewatch.device_events import DeviceEvent
from machinewatch.record import Reading
from machinewatch.runtime import Batch, Counters, Rejected, Runner, RunOptions, Sink, TransientError

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """At least one record was not acknowledged by the broker after the producer's retries."""


class KeyHashCachePartitioner(DefaultPartitioner):
    """kafka-python's default partitioner (murmur2 of the key, as the Java client and Flink do), with each key's
    hash remembered: a publisher sends few distinct device ids many times, and the pure-Python murmur2 was a tenth
    of the CPU per record.

    Only the hash is cached, never the partition: the partition is taken from the producer's current metadata on
    every call, exactly as the default partitioner does, so a change in the partition count is followed at once.
    """

    def __init__(self, max_keys: int = 65_536) -> None:
        super().__init__()
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys
        self._layouts: dict[str, tuple[set[int], list[int]]] = {}

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                  serialized_value: bytes | None, cluster: Any) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            # Keyless records and unknown topics: the default's own behaviour (random choice, or its error).
            return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()  # bounded memory; hashes are cheap to recompute
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        layout = self._layouts.get(topic)
        if layout is None or layout[0] != partitions:
            # One tuple per topic, replaced whole, so another thread never sees a set and list that disagree.
            layout = self._layouts[topic] = (partitions, sorted(partitions))
        ordered = layout[1]
        return ordered[hashed % len(ordered)]


def make_producer(settings: Settings, config: dict[str, Any]) -> Any:
    """The producer of ``settings.kafka_client`` with kafka-python's options ``config``: kafka-python's own, or the
    librdkafka backend behind the same interface (``machinewatch.kafka_confluent``)."""
    if settings.kafka_client == "confluent-kafka":
        from machinewatch.kafka_confluent import ConfluentProducer

        return ConfluentProducer(config)
    return KafkaProducer(**config)


def make_consumer(settings: Settings, topics: Sequence[str], config: dict[str, Any]) -> Any:
    """The consumer of ``settings.kafka_client``, as ``make_producer`` picks the producer: kafka-python's own, or the
    librdkafka backend behind the calls ``KafkaSource`` makes."""
    if settings.kafka_client == "confluent-kafka":
        from machinewatch.kafka_confluent import ConfluentConsumer

        return ConfluentConsumer(list(topics), config)
    return KafkaConsumer(*topics, **config)


class Publisher:
    """Serialises canonical readings to the readings topic, keyed by device id."""

    def __init__(self, settings: Settings, topic: str = names.TOPIC_READINGS, **overrides: Any) -> None:
        self.topic = topic
        config: dict[str, Any] = {
            **settings.kafka_client_config(),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 20,
            "batch_size": 256 * 1024,
            "compression_type": "zstd",
            "retries": 2**31 - 1,
            "delivery_timeout_ms": 120_000,
            "client_id": "machinewatch-publisher",
            "partitioner": KeyHashCachePartitioner(),
        }
        config.update(overrides)
        self._producer = make_producer(settings, config)
        self.max_future_ms = round(settings.max_future_skew_s * 1000)
        self._recent_ids: OrderedDict[str, None] = OrderedDict()
        self._recent_max = settings.dedup_recent_ids
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.dead_lettered = 0
        self.notes = 0
        self._errors: list[str] = []
        # Acks are counted by a C-level callback, next(count, metadata), atomic under the GIL: a Python callback
        # taking a lock, run by the producer's I/O thread for every record, cost about a tenth of the CPU per record.
        self._acks = itertools.count()
        self._ack_reads = 0
        self._on_ok = functools.partial(next, self._acks)
        # A producer that counts its acknowledgements itself (the librdkafka backend, in its delivery report)
        # saves a callback per record.
        self._producer_counts_acks = isinstance(getattr(self._producer, "acks", None), itertools.count)
        if self._producer_counts_acks:
            self._acks = self._producer.acks
        self._on_error_forget_cb = self._on_error_forget  # bound once, not per record
        # A producer with one failure hook for all records (the librdkafka backend) saves an errback per record:
        # each record's failure reaches _on_error_forget with the event id the record was sent with (or None).
        self._producer_reports_failures = hasattr(self._producer, "on_failure")
        if self._producer_reports_failures:
            self._producer.on_failure = self._on_error_forget

    @property
    def acked(self) -> int:
        """Records the broker has acknowledged so far."""
        with self._lock:
            # Reading the count advances it as well: take the earlier reads off.
            value = next(self._acks) - self._ack_reads
            self._ack_reads += 1
        return value

    def _on_error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if len(self._errors) < 10:
                self._errors.append(repr(exc))
        log.error("kafka send failed: %r", exc)

    def _on_error_forget(self, event_id: str | None, exc: BaseException) -> None:
        # kafka's Future binds errback arguments before the exception (functools.partial).
        if event_id is not None:
            self._forget(event_id)
        self._on_error(exc)

    def send(self, reading: Reading) -> Any:
        """Queue one reading; returns the producer future (its metadata names the partition).

        A reading stamped more than ``max_future_skew_s`` ahead of this clock goes to the dead-letter
        topic instead (the returned future is then the dead letter's): a clock that is wrong by a day
        would otherwise move the jobs' watermarks a day ahead and make every correct reading late.
        So does an event id this publisher sent among its last ``dedup_recent_ids`` (``refusal``).
        """
        reason = self.refusal(reading)
        if reason is not None:
            return self.dead_letter(reading.source, reading.to_json(), reason, reading.device_id)
        return self.send_accepted(reading)

    def refusal(self, reading: Reading) -> str | None:
        """Why ``send`` would dead-letter this reading instead of publishing it; None: it is accepted, and its
        event id is remembered from now on (``send_accepted`` then queues it)."""
        ahead_ms = reading.ts - time.time() * 1000
        if ahead_ms > self.max_future_ms:
            return (
                f"event time {reading.time.isoformat()} is {ahead_ms / 1000:.0f} s in the future "
                f"(max_future_skew_s={self.max_future_ms / 1000:g}); it would push the watermark ahead"
            )
        if self._recent_max:
            with self._lock:
                repeat = reading.event_id in self._recent_ids
                if not repeat:
                    self._recent_ids[reading.event_id] = None
                    if len(self._recent_ids) > self._recent_max:
                        self._recent_ids.popitem(last=False)
            if repeat:
                return f"duplicate event_id {reading.event_id}: this collector already sent it"
        return None

    def send_accepted(self, reading: Reading) -> Any:
        """Queue a reading ``refusal`` accepted (its checks are not repeated); returns the producer future."""
        key, value = reading.device_id.encode(), reading.to_json()
        try:
            # A producer that reports failures to the publisher's hook takes the event id as the record's tag.
            future = (self._producer.send(self.topic, key=key, value=value, tag=reading.event_id)
                      if self._producer_reports_failures else self._producer.send(self.topic, key=key, value=value))
        except BaseException:
            # Not queued at all (e.g. no metadata within max_block_ms): the caller's retry is not a duplicate.
            self._forget(reading.event_id)
            raise
        self._watch(future, reading.event_id)
        self.sent += 1
        return future

    def _watch(self, future: Any, event_id: str | None = None) -> None:
        """Count the record's acknowledgement (unless the producer does) and its failure, forgetting its event id
        (a send that failed may be retried by the caller: it is not a duplicate then), unless the producer reports
        failures to the publisher's hook. The id rides as the errback's argument, no closure."""
        if not self._producer_counts_acks:
            future.add_callback(self._on_ok)
        if not self._producer_reports_failures:
            future.add_errback(self._on_error_forget_cb, event_id)

    def _forget(self, event_id: str) -> None:
        with self._lock:
            self._recent_ids.pop(event_id, None)

    def send_many(self, readings: Iterable[Reading]) -> int:
        count = 0
        for reading in readings:
            self.send(reading)
            count += 1
        return count

    def send_json(self, key: str, value: bytes, topic: str | None = None) -> Any:
        """Queue an already serialised record (e.g. a DeviceEvent) keyed by ``key``; default topic is ours.

        Same producer, acks and failure accounting as ``send``, so ``flush()`` covers both.
        """
        future = self._producer.send(topic or self.topic, key=key.encode(), value=value)
        self._watch(future)
        self.sent += 1
        return future

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "", size: int | None = None) -> Any:
        """Send input whose values did not become records, with the reason and its exact bytes, to the
        dead-letter topic (``machinewatch.quality``); ``size`` is the original's length when ``raw`` is
        only its head. Returns the producer future."""
        doc = quality.letter(source, raw, reason, origin, size=size)
        future = self._producer.send(names.TOPIC_DEAD_LETTER, key=source.encode(), value=json.dumps(doc).encode())
        self._watch(future)
        self.sent += 1
        self.dead_lettered += 1
        log.warning("dead-lettered a %s record from %s: %s", source, origin or "?", reason)
        return future

    def note(self, source: str, kind: str, raw: bytes | str, reason: str, origin: str = "", note_id: str = "") -> Any:
        """Send a data-quality note (values were published, their envelope was repaired or is suspect) to
        ``mw.quality``, with the exact bytes it is about; returns the producer future."""
        doc = quality.letter(source, raw, reason, origin, kind=kind, note_id=note_id)
        future = self._producer.send(names.TOPIC_QUALITY, key=source.encode(), value=json.dumps(doc).encode())
        self._watch(future)
        self.sent += 1
        self.notes += 1
        log.info("data-quality note (%s) on %s from %s: %s", kind, source, origin or "?", reason)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued record; raise PublishError if any was not acknowledged."""
        self._producer.flush(timeout=timeout)
        with self._lock:
            if self.failed:
                msg = f"{self.failed} of {self.sent} records were not acknowledged: {self._errors}"
                raise PublishError(msg)

    def drain(self, timeout: float | None = None) -> None:
        """Wait for every queued record to be acknowledged or to fail, raising nothing: callers that track their
        own futures (``PublisherSink``) judge them one by one; ``flush()`` counts every failure since the start."""
        self._producer.flush(timeout=timeout)

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.flush()
        finally:
            self.close()


@dataclass(frozen=True, slots=True)
class QualityNote:
    """A data-quality note as a record (``Publisher.note``: to ``mw.quality``): the values were published, their
    envelope was repaired or is suspect; ``raw`` is the exact bytes it is about, ``note_id`` stable per cause."""

    source: str
    kind: str
    raw: bytes | str
    reason: str
    origin: str = ""
    note_id: str = ""

    def to_json(self) -> bytes:
        return json.dumps(quality.letter(self.source, self.raw, self.reason, self.origin, kind=self.kind,
                                         note_id=self.note_id)).encode()


class PublisherSink:
    """``machinewatch.runtime.Sink`` on a Publisher, routing each record by its kind: a ``Reading`` to the
    publisher's topic (what the publisher refuses, a time too far ahead or an event id it sent already, comes
    back as ``Rejected`` for the runner's dead letters), a ``DeviceEvent`` to ``device_events_topic`` (keyed by
    its device, so one device's events stay in order), a ``QualityNote`` to the quality topic.

    Each record's future is kept until ``flush``: one the broker did not acknowledge after the producer's own
    retries, or that could not even be queued, is sent again by the next ``flush`` (which raises
    ``TransientError`` until every record written so far is acknowledged). Closing closes the publisher.
    """

    def __init__(self, publisher: Publisher, flush_timeout_s: float | None = None,
                 device_events_topic: str = names.TOPIC_DEVICE_EVENTS) -> None:
        self.publisher = publisher
        self.flush_timeout_s = flush_timeout_s
        self.device_events_topic = device_events_topic
        self._inflight: list[tuple[Reading | QualityNote | DeviceEvent, Any]] = []
        self._unsent: list[Reading | QualityNote | DeviceEvent] = []
        self._last_error = ""

    def write(self, records: Sequence[Any]) -> list[Rejected]:
        refused: list[Rejected] = []
        for record in records:
            if isinstance(record, QualityNote | DeviceEvent):
                self._send(record)
                continue
            if not isinstance(record, Reading):
                msg = f"PublisherSink writes DeviceEvent, Reading and QualityNote records, got {type(record).__name__}"
                raise TypeError(msg)
            reason = self.publisher.refusal(record)
            if reason is not None:
                refused.append(Rejected(record.to_json(), reason, origin=record.device_id))
            else:
                self._send(record)
        return refused

    def _send(self, record: Reading | QualityNote | DeviceEvent) -> None:
        try:
            if isinstance(record, DeviceEvent):
                future = self.publisher.send_json(record.device_id, record.to_json(), self.device_events_topic)
            elif isinstance(record, QualityNote):
                future = self.publisher.note(record.source, record.kind, record.raw, record.reason, record.origin,
                                             record.note_id)
            else:
                future = self.publisher.send_accepted(record)
            self._inflight.append((record, future))
        except Exception as exc:  # noqa: BLE001 - e.g. no metadata within max_block_ms: sent again at flush
            self._last_error = repr(exc)
            self._unsent.append(record)

    def flush(self) -> None:
        retry, self._unsent = self._unsent, []
        for record in retry:
            self._send(record)
        self.publisher.drain(self.flush_timeout_s)
        failed = [(record, future) for record, future in self._inflight if not future.succeeded()]
        total = len(self._inflight) + len(self._unsent)
        self._inflight = []
        if failed or self._unsent:
            self._unsent.extend(record for record, _ in failed)
            errors = {repr(future.exception) for _, future in failed if future.is_done and future.exception}
            msg = (f"{len(self._unsent)} of {total} records were not acknowledged by Kafka "
                   f"({', '.join(sorted(errors))[:300] or self._last_error or 'timed out'}); they are sent again")
            raise TransientError(msg)

    def close(self) -> None:
        self.publisher.close()


class KafkaDeadLetters:
    """``machinewatch.runtime.DeadLetterOutput`` on a Publisher: the dead-letter topic, each letter with its
    reason and exact bytes (``machinewatch.quality``); ``flush`` raises ``TransientError`` until every letter sent
    so far is acknowledged, sending the unacknowledged ones again."""

    def __init__(self, publisher: Publisher, flush_timeout_s: float | None = None) -> None:
        self.publisher = publisher
        self.flush_timeout_s = flush_timeout_s
        self._inflight: list[tuple[str, Rejected, Any]] = []
        self._unsent: list[tuple[str, Rejected]] = []

    def send(self, source: str, rejected: Rejected) -> None:
        try:
            future = self.publisher.dead_letter(source, rejected.raw, rejected.reason, rejected.origin,
                                                size=rejected.size)
        except Exception:  # noqa: BLE001 - not queued (no metadata): sent again at flush
            self._unsent.append((source, rejected))
            return
        self._inflight.append((source, rejected, future))

    def flush(self) -> None:
        retry, self._unsent = self._unsent, []
        for source, rejected in retry:
            self.send(source, rejected)
        self.publisher.drain(self.flush_timeout_s)
        failed = [(source, rejected) for source, rejected, future in self._inflight if not future.succeeded()]
        total = len(self._inflight) + len(self._unsent)
        self._inflight = []
        if failed or self._unsent:
            self._unsent.extend(failed)
            msg = f"{len(self._unsent)} of {total} dead letters were not acknowledged by Kafka; they are sent again"
            raise TransientError(msg)


class KafkaMessage(Protocol):
    """One consumed record as the consumer sinks get it (kafka-python's ``ConsumerRecord`` is one, unchanged):
    where it came from and its exact bytes; ``value`` None is a tombstone."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


def message_origin(message: KafkaMessage) -> str:
    """``topic/partition@offset``: where a dead letter of a consumed record came from."""
    return f"{message.topic}/{message.partition}@{message.offset}"


class KafkaSource:
    """``machinewatch.runtime.Source`` on a Kafka consumer group: batches of consumed messages (``KafkaMessage``),
    the group's offsets as the checkpoint.

    Auto-commit is off: ``commit(checkpoint)`` commits the offsets after the last message polled up to that
    batch, and the runner calls it only once the sink flushed those messages, so a crash repeats messages and
    never skips one. A new group starts at the earliest offset. Poll and commit failures of the broker (kafka-
    python 3 raises when the group coordinator cannot be reached) become ``TransientError``: the runner backs off
    and retries instead of ending. A commit refused because the group rebalanced is not retried: the partition's
    new owner gets those messages again (at least once still holds). ``MW_KAFKA_CLIENT=confluent-kafka`` consumes
    with librdkafka behind the same calls (``kafka_confluent.ConfluentConsumer``).
    """

    def __init__(self, settings: Settings, topics: Sequence[str], group_id: str, *, name: str, client_id: str = "",
                 max_poll_records: int = 5000, **overrides: Any) -> None:
        self.name = name
        self.topics = list(topics)
        self.group_id = group_id
        self.settings = settings
        self.config: dict[str, Any] = {
            **settings.kafka_client_config(),
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": max_poll_records,
            "client_id": client_id or f"machinewatch-{name}",
            **overrides,
        }
        self.consumer: Any = None
        self._positions: dict[Any, int] = {}  # TopicPartition -> the offset after the last message polled

    def open(self) -> None:
        self.consumer = make_consumer(self.settings, self.topics, self.config)

    def poll(self, timeout_s: float) -> Batch:
        try:
            polled = self.consumer.poll(timeout_ms=max(0, round(timeout_s * 1000)))
        except KafkaError as exc:
            raise TransientError(_kafka_problem("poll", exc)) from exc
        batch = Batch()
        for tp, messages in polled.items():
            if messages:
                batch.records.extend(messages)
                self._positions[tp] = messages[-1].offset + 1
        if batch.records:
            batch.checkpoint = dict(self._positions)
        return batch

    def commit(self, checkpoint: object) -> None:
        assert isinstance(checkpoint, dict)
        assigned = self.consumer.assignment()
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in checkpoint.items() if tp in assigned}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError) as exc:
            log.warning("%s: offsets not committed, the group %s rebalanced (%s): what was polled since the last "
                        "commit is delivered again", self.name, self.group_id, type(exc).__name__)
        except KafkaError as exc:
            raise TransientError(_kafka_problem("commit", exc)) from exc

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()

    def lag(self) -> int | None:
        """Messages on the assigned partitions after the last one polled (from the last fetch's high waters)."""
        if self.consumer is None:
            return None
        behind = [self.consumer.highwater(tp) - self._positions[tp] for tp in self.consumer.assignment()
                  if tp in self._positions and self.consumer.highwater(tp) is not None]
        return sum(max(0, n) for n in behind) if behind else None


def _kafka_problem(action: str, exc: Exception) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    kind = type(exc).__name__
    if not text.startswith(kind):  # kafka-python's errors name themselves already
        text = f"{kind}: {text}" if text else kind
    return f"kafka {action} failed: {text}"


def run_consumer(source: KafkaSource, sink: Sink, settings: Settings, options: RunOptions | None = None, *,
                 stop_event: threading.Event | None = None, idle_exit_s: float | None = None,
                 duration_s: float | None = None) -> Counters:
    """Run a Kafka consumer sink on the one runner: ``source``'s messages to ``sink``, what either rejects to the
    dead-letter topic (with ``source.name`` as its source), offsets committed after both were flushed."""
    publisher = Publisher(settings, topic=names.TOPIC_DEAD_LETTER, client_id=f"machinewatch-{source.name}-deadletter")
    try:
        runner = Runner(source.name, source, sink, KafkaDeadLetters(publisher), options, stop_event=stop_event)
        return runner.run(duration_s, idle_exit_s=idle_exit_s)
    finally:
        publisher.close()


class BrokerBackoff:
    """Keeps a consumer loop alive through a broker outage: a poll or commit that fails for a Kafka or
    connection error is logged and retried with back-off instead of ending the process.

    No sink uses it any more: the writer, the notifier and the archiver run on ``runtime.Runner`` with
    ``KafkaSource``, which turns the same failures into ``TransientError`` for the runner's back-off.

    kafka-python 3 raises out of ``poll()`` when the group coordinator cannot be reached (2.x retried
    inside); a writer or notifier that died of that would stop the pipeline for good. A commit that
    failed is retried before the next poll: the results are already stored downstream, and the later
    commit covers them (a restart in between rewrites them, which overwrites).
    """

    def __init__(self, consumer: Any, stop_event: threading.Event, what: str, max_delay_s: float = 30.0) -> None:
        self.consumer, self.stop_event, self.what, self.max_delay_s = consumer, stop_event, what, max_delay_s
        self.delay = 0.5
        self.commit_pending = False
        self.failures = 0

    def _failed(self, action: str, exc: Exception) -> None:
        self.failures += 1
        log.warning("%s: %s failed (%s: %s); retrying in %.1fs", self.what, action, type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "", self.delay)
        self.stop_event.wait(self.delay)
        self.delay = min(self.delay * 2, self.max_delay_s)

    def poll(self, timeout_ms: int, **kwargs: Any) -> dict[Any, Any]:
        """``consumer.poll``; an empty batch while the broker cannot be reached."""
        if self.commit_pending and not self.commit():
            return {}
        try:
            batch = dict(self.consumer.poll(timeout_ms=timeout_ms, **kwargs))
        except (KafkaError, OSError) as exc:
            self._failed("poll", exc)
            return {}
        self.delay = 0.5
        return batch

    def commit(self) -> bool:
        """``consumer.commit``; False (and retried before the next poll) while it cannot be done."""
        try:
            self.consumer.commit()
        except (KafkaError, OSError) as exc:
            self.commit_pending = True
            self._failed("commit", exc)
            return False
        self.commit_pending = False
        return True


def ensure_topics(admin: Any, partitions: int, topics: Iterable[str] = names.ALL_TOPICS,
                  replication: int = 1) -> list[str]:
    """Create the missing ``topics`` with ``names.topic_config``, and put that config on existing ones.

    ``replication`` replicas each; from 3 on, ``min.insync.replicas`` 2, so a write acknowledged by all
    in-sync replicas survives the loss of any one broker and writes stop rather than land on one copy.

    Idempotent (a concurrent run's topics are fine); returns the names it created. An existing topic
    whose machinewatch settings differ (e.g. a result topic made before it had to keep history) is
    altered, so an upgrade needs no manual step.
    """
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topics = list(topics)

    def config(topic: str) -> dict[str, str]:
        return {**names.topic_config(topic), **({"min.insync.replicas": "2"} if replication >= 3 else {})}

    existing = set(admin.list_topics())
    created: list[str] = []
    for t in topics:
        if t in existing:
            continue
        # One request each: a topic another client made meanwhile (or one the metadata did not list yet) is
        # not reported as created, and does not hide the others.
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(t, partitions, replication, topic_configs=config(t))])
            created.append(t)
    configured = [t for t in topics if t in existing and config(t)]
    if configured:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in configured])
        current = {t: _topic_config_values(described, t) for t in configured}
        stale = [t for t in configured if any(current[t].get(k) != v for k, v in config(t).items())]
        if stale:
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs=config(t))
                                 for t in stale])
            log.info("kafka: set %s", "; ".join(f"{config(t)} on {t}" for t in stale))
    return created


def _topic_config_values(described: Any, topic: str) -> dict[str, str]:
    """``{name: value}`` of one topic from ``describe_configs``, in kafka-python 3's shape or 2.x's."""
    if isinstance(described, dict):  # 3.x: {"topic": {name: {key: {"value": ...}}}}
        entries = described.get("topic", {}).get(topic, {})
        return {key: str(entry.get("value") if isinstance(entry, dict) else entry) for key, entry in entries.items()}
    for response in described:  # 2.x: DescribeConfigs responses
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            if resource[3] == topic:
                return {entry[0]: entry[1] for entry in resource[4]}
    return {}

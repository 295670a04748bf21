"""The publisher's optional librdkafka backend (``MW_KAFKA_CLIENT=confluent-kafka``), with kafka-python's producer
interface, so ``machinewatch.kafka_io.Publisher`` and everything built on it run unchanged on either client.

Same guarantees as the default: acks=all with the idempotent producer, the same retries and delivery timeout, and
the same partition for every key (librdkafka's ``murmur2_random`` is the Java client's murmur2 of the key, which
kafka-python's default partitioner also uses; ``tests/integration/test_kafka_clients.py`` checks it per key on a
real broker). It is optional because kafka-python is pure Python and installs anywhere, while this needs the
confluent-kafka wheel (``pip install 'machinewatch[kafka-c]'``); the benchmark reports both.

librdkafka serves delivery reports from ``poll()``/``flush()`` on the calling thread, not from its own: ``send``
polls without waiting every ``POLL_EVERY`` records and whenever its local queue is full, and ``flush`` and a
future's ``get`` poll until they are done.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import TopicPartition

log = logging.getLogger(__name__)
# Records queued between two non-blocking polls that serve delivery reports (callbacks, acks).
POLL_EVERY = 1000


class RecordMetadata(NamedTuple):
    """Where the broker stored an acknowledged record (kafka-python's future value has the same fields)."""

    topic: str
    partition: int
    offset: int


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a record (librdkafka's error, after its own retries)."""


class DeliveryFuture:
    """kafka-python's ``FutureRecordMetadata`` as the publisher uses it: callbacks, errbacks, ``get``.

    Lean on purpose (one per record): no callback list until one is added, the metadata built when asked for.
    """

    __slots__ = ("_callbacks", "_errbacks", "_msg", "_producer", "_value", "exception", "is_done", "tag")

    def __init__(self, producer: ConfluentProducer, tag: Any = None) -> None:
        self._producer = producer
        self.tag = tag  # what the producer's on_failure hook is given with the error
        self._callbacks: list[tuple[Callable[..., Any], tuple[Any, ...]]] | None = None
        self._errbacks: list[tuple[Callable[..., Any], tuple[Any, ...]]] | None = None
        self._msg: Any = None
        self._value: RecordMetadata | None = None
        self.is_done = False
        self.exception: BaseException | None = None

    @property
    def value(self) -> RecordMetadata | None:
        """Where the broker stored the record (None until it is acknowledged)."""
        if self._value is None and self._msg is not None:
            msg = self._msg
            self._value = RecordMetadata(msg.topic(), msg.partition(), msg.offset())
        return self._value

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> DeliveryFuture:
        """``fn(*args, metadata)`` once the record is acknowledged (at once if it already is)."""
        # Under the producer's lock: another thread's poll may deliver this record meanwhile.
        with self._producer.callbacks_lock:
            if not self.is_done:
                if self._callbacks is None:
                    self._callbacks = [(fn, args)]
                else:
                    self._callbacks.append((fn, args))
                return self
        if self.exception is None:
            fn(*args, self.value)
        return self

    def add_errback(self, fn: Callable[..., Any], *args: Any) -> DeliveryFuture:
        """``fn(*args, exception)`` if the record fails (at once if it already has)."""
        with self._producer.callbacks_lock:
            if not self.is_done:
                if self._errbacks is None:
                    self._errbacks = [(fn, args)]
                else:
                    self._errbacks.append((fn, args))
                return self
        if self.exception is not None:
            fn(*args, self.exception)
        return self

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """The record's metadata once acknowledged; raises its delivery error, or TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_done:
            if deadline is not None and time.monotonic() >= deadline:
                msg = f"no delivery report within {timeout} s"
                raise TimeoutError(msg)
            self._producer.poll(0.05)
        if self.exception is not None:
            raise self.exception
        value = self.value
        assert value is not None
        return value

    def deliver(self, err: Any, msg: Any) -> None:
        """librdkafka's delivery report (``on_delivery``), on the thread that polled."""
        with self._producer.callbacks_lock:
            if err is None:
                self._msg = msg
                calls = self._callbacks
                next(self._producer.acks)
            else:
                self.exception = DeliveryError(f"{err.name()}: {err.str()}")
                calls = self._errbacks
            self.is_done = True
            self._callbacks = self._errbacks = None
        if self.exception is not None and self._producer.on_failure is not None:
            self._producer.on_failure(self.tag, self.exception)
        if calls:
            result = self.value if err is None else self.exception
            for fn, args in calls:
                fn(*args, result)


def librdkafka_config(config: dict[str, Any]) -> dict[str, Any]:
    """kafka-python producer options (as ``Publisher`` builds them) in librdkafka's names; an option this backend
    does not know is an error, never silently dropped."""
    servers = config["bootstrap_servers"]
    out: dict[str, Any] = {
        "bootstrap.servers": servers if isinstance(servers, str) else ",".join(servers),
        # The Java client's murmur2 of the key (kafka-python's default too); keyless records go to a random one.
        "partitioner": "murmur2_random",
    }
    names = {
        "client_id": "client.id", "acks": "acks", "enable_idempotence": "enable.idempotence",
        "linger_ms": "linger.ms", "batch_size": "batch.size", "compression_type": "compression.type",
        "retries": "retries", "delivery_timeout_ms": "delivery.timeout.ms", "request_timeout_ms": "request.timeout.ms",
        "security_protocol": "security.protocol", "sasl_mechanism": "sasl.mechanism",
        "sasl_plain_username": "sasl.username", "sasl_plain_password": "sasl.password",
        "ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location", "ssl_keyfile": "ssl.key.location",
        "max_block_ms": None,  # kafka-python's wait for metadata or buffer space; see ConfluentProducer.send
    }
    out.update(_translated(config, names, "", skip=("bootstrap_servers", "partitioner")))
    # librdkafka caps a batch at its message.max.bytes (1 MB default, like the broker's): keep kafka-python's size
    return out


class ConfluentProducer:
    """A librdkafka producer behind kafka-python's ``send``/``flush``/``close``."""

    def __init__(self, config: dict[str, Any]) -> None:
        from confluent_kafka import Producer

        self.max_block_s = float(config.get("max_block_ms", 60_000)) / 1000
        # librdkafka's own log lines through Python logging (served by poll), not printed on stderr
        self._producer: Any = Producer({**librdkafka_config(config), "logger": log})
        self._produce = self._producer.produce
        self._sends = itertools.count(1)  # atomic under the GIL: no lock per record
        # Records acknowledged so far, counted by next() in the delivery report (the Publisher reads it the same way).
        self.acks = itertools.count()
        self.callbacks_lock = threading.Lock()  # a future's callbacks against its delivery (DeliveryFuture)
        # Called as on_failure(tag, error) for every record that fails, before its future's errbacks: one hook for
        # all records instead of an errback added to each (the Publisher's failure accounting).
        self.on_failure: Callable[[Any, BaseException], None] | None = None

    def poll(self, timeout: float = 0) -> int:
        """Serve delivery reports (callbacks) for up to ``timeout`` s; the number served (0 once closed)."""
        return 0 if self._producer is None else int(self._producer.poll(timeout))

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None, tag: Any = None) -> DeliveryFuture:
        """Queue one record; waits up to max_block_ms for room in the local queue, then raises BufferError (as
        kafka-python raises KafkaTimeoutError), so the caller may send it again: nothing was queued. ``tag`` is
        handed to ``on_failure`` if the record fails."""
        future = DeliveryFuture(self, tag)
        try:
            self._produce(topic, value, key, -1, future.deliver)  # positional (cheaper); partition -1: the partitioner
        except BufferError:
            self._send_when_room(topic, key, value, future)
        if next(self._sends) % POLL_EVERY == 0:
            self._producer.poll(0)
        return future

    def _send_when_room(self, topic: str, key: bytes | None, value: bytes | None, future: DeliveryFuture) -> None:
        deadline = time.monotonic() + self.max_block_s
        while True:
            self._producer.poll(0.05)  # serve delivery reports, which frees room in the local queue
            try:
                self._produce(topic, value, key, -1, future.deliver)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is acknowledged or failed (its future says which)."""
        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            msg = f"{left} records still queued after {timeout} s"
            raise TimeoutError(msg)

    def close(self, timeout: float = 30) -> None:
        """Like kafka-python's close: queued records are still sent (within ``timeout``), not dropped; then the
        client is let go, which ends its threads and connections (confluent-kafka has no close of its own)."""
        if self._producer is not None:
            self._producer.flush(timeout)
            self._producer = None


class ConsumedMessage(NamedTuple):
    """A consumed record with kafka-python's ``ConsumerRecord`` attributes (``kafka_io.KafkaMessage``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


# kafka-python consumer options (as ``kafka_io.KafkaSource`` builds them) -> librdkafka's names. None: handled here.
_CONSUMER_NAMES = {
    "client_id": "client.id", "group_id": "group.id", "enable_auto_commit": "enable.auto.commit",
    "auto_offset_reset": "auto.offset.reset", "session_timeout_ms": "session.timeout.ms",
    "max_poll_interval_ms": "max.poll.interval.ms", "heartbeat_interval_ms": "heartbeat.interval.ms",
    "fetch_max_bytes": "fetch.max.bytes", "request_timeout_ms": None,  # librdkafka's socket.timeout.ms differs
    "security_protocol": "security.protocol", "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username", "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location", "ssl_keyfile": "ssl.key.location",
    "max_poll_records": None,  # the batch size of ConfluentConsumer.poll
}
# Commit errors that mean the group rebalanced: kafka-python's CommitFailedError, handled as the default client's.
_REBALANCED = ("REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "_ASSIGNMENT_LOST")


def librdkafka_consumer_config(config: dict[str, Any]) -> dict[str, Any]:
    """kafka-python consumer options in librdkafka's names; an option without an equivalent is an error."""
    servers = config["bootstrap_servers"]
    out: dict[str, Any] = {"bootstrap.servers": servers if isinstance(servers, str) else ",".join(servers)}
    out.update(_translated(config, _CONSUMER_NAMES, "consumer option ", skip=("bootstrap_servers",)))
    return out


def _translated(config: dict[str, Any], names: dict[str, str | None], what: str,
                skip: tuple[str, ...]) -> dict[str, Any]:
    """kafka-python options in librdkafka's ``names`` (None: handled by the caller), booleans as librdkafka's
    strings; an option without an entry is refused, never silently dropped."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in skip:
            continue
        if key not in names:
            msg = f"the confluent-kafka backend has no equivalent of kafka-python's {what}{key!r}"
            raise ValueError(msg)
        name = names[key]
        if name is not None:
            out[name] = str(value).lower() if isinstance(value, bool) else value
    return out


class ConfluentConsumer:
    """A librdkafka consumer behind the part of kafka-python's ``KafkaConsumer`` that ``kafka_io.KafkaSource`` uses:
    ``poll`` (records by partition), ``assignment``, ``commit`` (explicit offsets), ``highwater``, ``close``.

    Its failures are kafka-python's exceptions, so the source treats both clients alike: a broker or group error
    in ``poll`` or ``commit`` is a ``KafkaError`` (retried by the runner), a commit refused because the group
    rebalanced is a ``CommitFailedError`` (not retried: the partition's new owner reads those records again).
    """

    def __init__(self, topics: list[str], config: dict[str, Any]) -> None:
        from confluent_kafka import Consumer

        self.max_records = int(config.get("max_poll_records", 500))
        # librdkafka's own log lines through Python logging, served by poll, not printed on stderr.
        self._consumer: Any = Consumer({**librdkafka_consumer_config(config), "logger": log})
        self._consumer.subscribe(list(topics))

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[ConsumedMessage]]:
        """Up to ``max_poll_records`` records, by partition, waiting at most ``timeout_ms`` for the first."""
        polled: dict[Any, list[ConsumedMessage]] = {}
        last: tuple[str, int] | None = None
        batch: list[ConsumedMessage] = []
        for m in self._consumer.consume(self.max_records, timeout_ms / 1000):
            err = m.error()
            if err is not None:
                if err.code() == -191:  # _PARTITION_EOF: an event, not an error (off by default anyway)
                    continue
                msg = f"{err.name()}: {err.str()}"
                raise KafkaError(msg)
            where = (m.topic(), m.partition())
            if where != last:  # records of one partition come in runs: one dict lookup per run, not per record
                batch = polled.setdefault(TopicPartition(*where), [])
                last = where
            batch.append(ConsumedMessage(where[0], where[1], m.offset(), m.key(), m.value()))
        return polled

    def assignment(self) -> set[Any]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def commit(self, offsets: dict[Any, Any]) -> None:
        """Commit ``{TopicPartition: OffsetAndMetadata}`` synchronously, as kafka-python's ``commit`` does."""
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as RdTopicPartition

        parts = [RdTopicPartition(tp.topic, tp.partition, meta.offset) for tp, meta in offsets.items()]
        try:
            done = self._consumer.commit(offsets=parts, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            text = f"{err.name()}: {err.str()}"
            if err.name() in _REBALANCED:
                raise CommitFailedError(text) from exc
            raise KafkaError(text) from exc
        failed = [f"{tp.topic}/{tp.partition}: {tp.error.str()}" for tp in done or () if tp.error is not None]
        if failed:
            msg = "commit refused for " + "; ".join(failed)
            raise KafkaError(msg)

    def highwater(self, tp: Any) -> int | None:
        """The partition's end offset as of the last fetch (no broker request); None before any fetch."""
        from confluent_kafka import TopicPartition as RdTopicPartition

        try:
            _low, high = self._consumer.get_watermark_offsets(RdTopicPartition(tp.topic, tp.partition), cached=True)
        except Exception:  # noqa: BLE001 - no fetch yet (librdkafka's "invalid offset"): not known, like kafka-python
            return None
        return int(high) if high >= 0 else None

    def close(self) -> None:
        """Leave the group (its partitions go to the other members at once) and close the connections."""
        self._consumer.close()

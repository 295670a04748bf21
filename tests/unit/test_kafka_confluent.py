"""The publisher's librdkafka backend without a broker: the options it gets (acks, idempotence, partitioner, login),
and its futures behaving as kafka-python's do for the Publisher (callbacks, errbacks, ``get``, late registration).
The same partition per key and delivery on a real broker: tests/integration/test_kafka_clients.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from machinewatch import kafka_confluent, kafka_io
from machinewatch.config import Settings
from machinewatch.kafka_confluent import ConfluentProducer, DeliveryError, DeliveryFuture, librdkafka_config


def _publisher_config(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> dict[str, Any]:
    """The kafka-python options the Publisher builds, captured instead of opening a producer."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kafka_io, "make_producer", lambda _settings, config: seen.update(config))
    kafka_io.Publisher(settings, client_id="unit")
    return seen


def test_the_publishers_guarantees_carry_over_to_librdkafka(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = librdkafka_config(_publisher_config(monkeypatch, Settings(state_dir=tmp_path)))
    assert config["acks"] == "all" and config["enable.idempotence"] == "true"
    assert config["partitioner"] == "murmur2_random"  # the Java client's murmur2, as kafka-python's default
    assert config["retries"] == 2**31 - 1 and config["delivery.timeout.ms"] == 120_000
    assert (config["compression.type"], config["linger.ms"], config["client.id"]) == ("zstd", 20, "unit")
    assert "security.protocol" not in config


def test_the_scram_login_carries_over(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, kafka_sasl_scram=True, kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_password=SecretStr("s3cret"), kafka_ssl_cafile="/etc/ca.pem")
    config = librdkafka_config(_publisher_config(monkeypatch, settings))
    assert {k: config[k] for k in ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
                                   "ssl.ca.location")} == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "machinewatch",
        "sasl.password": "s3cret", "ssl.ca.location": "/etc/ca.pem"}


def test_an_option_without_an_equivalent_is_refused() -> None:
    with pytest.raises(ValueError, match="max_in_flight_requests_per_connection"):
        librdkafka_config({"bootstrap_servers": ["127.0.0.1:9"], "max_in_flight_requests_per_connection": 1})


def test_the_setting_picks_the_backend(tmp_path: Path) -> None:
    chosen = kafka_io.make_producer(Settings(state_dir=tmp_path, kafka_client="confluent-kafka"),
                                    {"bootstrap_servers": ["127.0.0.1:9"], "client_id": "unit"})
    try:
        assert isinstance(chosen, ConfluentProducer)  # librdkafka connects lazily: nothing listens on port 9
    finally:
        chosen.close(timeout=0)
    with pytest.raises(ValueError, match="kafka_client"):
        Settings(state_dir=tmp_path, kafka_client="librdkafka")


class _Err:
    def name(self) -> str:
        return "_MSG_TIMED_OUT"

    def str(self) -> str:
        return "Local: Message timed out"


class _Msg:
    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 4

    def offset(self) -> int:
        return 17


class _Producer:
    """Delivers its queued reports when polled, as librdkafka does."""

    def __init__(self) -> None:
        import itertools
        import threading

        self.callbacks_lock = threading.Lock()
        self.acks = itertools.count()
        self.on_failure: Any = None
        self.reports: list[tuple[DeliveryFuture, Any, Any]] = []

    def poll(self, _timeout: float = 0) -> int:
        reports, self.reports = self.reports, []
        for future, err, msg in reports:
            future.deliver(err, msg)
        return len(reports)


def test_futures_call_back_as_kafka_pythons_do() -> None:
    producer = _Producer()
    ok, bad = DeliveryFuture(producer), DeliveryFuture(producer)  # type: ignore[arg-type]
    got: list[Any] = []
    ok.add_callback(got.append).add_errback(lambda exc: got.append(("never", exc)))
    bad.add_callback(lambda md: got.append(("never", md))).add_errback(got.append)
    assert not ok.is_done and not bad.is_done
    producer.reports += [(ok, None, _Msg()), (bad, _Err(), None)]
    assert ok.get(timeout=5) == kafka_confluent.RecordMetadata("t", 4, 17)
    assert ok.succeeded() and bad.is_done and bad.failed() and not bad.succeeded()
    assert next(producer.acks) == 1  # the producer counted the one acknowledgement
    assert got[0] == ok.value and isinstance(got[1], DeliveryError) and "_MSG_TIMED_OUT" in str(got[1])
    with pytest.raises(DeliveryError):
        bad.get(timeout=0)
    # registered after the delivery: called at once, with the bound arguments first (the Publisher's errback)
    late: list[Any] = []
    ok.add_callback(lambda tag, md: late.append((tag, md)), "id-1")
    bad.add_errback(lambda event_id, exc: late.append((event_id, type(exc).__name__)), "id-2")
    assert late == [("id-1", ok.value), ("id-2", "DeliveryError")]


def test_get_gives_up_after_its_timeout() -> None:
    with pytest.raises(TimeoutError):
        DeliveryFuture(_Producer()).get(timeout=0.1)  # type: ignore[arg-type]


class _Backend(_Producer):
    """ConfluentProducer's send/flush over _Producer: the records whose value is in ``failing`` fail."""

    def __init__(self, failing: set[bytes]) -> None:
        super().__init__()
        self.failing = failing
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None, tag: Any = None) -> DeliveryFuture:
        future = DeliveryFuture(self, tag)  # type: ignore[arg-type]
        self.sent.append((topic, key, value))
        self.reports.append((future, _Err(), None) if value in self.failing else (future, None, _Msg()))
        return future

    def flush(self, _timeout: float | None = None) -> None:
        self.poll()


def test_a_failed_record_is_counted_and_its_event_id_forgotten_through_the_producers_hook(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from machinewatch.record import Reading

    ok = Reading("unit", "d-1", "temperature", 20.0, "°C", 1_700_000_000_000, "e-1")
    bad = Reading("unit", "d-2", "temperature", 99.0, "°C", 1_700_000_001_000, "e-2")
    backend = _Backend({bad.to_json()})
    monkeypatch.setattr(kafka_io, "make_producer", lambda _settings, _config: backend)
    pub = kafka_io.Publisher(Settings(state_dir=tmp_path))
    assert backend.on_failure is not None  # one hook for every record instead of an errback each
    futures = [pub.send(ok), pub.send(bad)]
    assert all(f._errbacks is None for f in futures)  # noqa: SLF001 - nothing was added per record
    backend.poll()
    assert (pub.acked, pub.failed) == (1, 1) and "DeliveryError" in pub._errors[0]  # noqa: SLF001
    # the failed reading's id was forgotten, so sending it again is no duplicate; the delivered one still is
    assert pub.refusal(bad) is None
    assert "duplicate event_id" in (pub.refusal(ok) or "")


def test_the_consumer_sources_options_carry_over_to_librdkafka(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, kafka_client="confluent-kafka", kafka_sasl_scram=True,
                        kafka_sasl_password=SecretStr("s3cret"))
    source = kafka_io.KafkaSource(settings, ["t"], "g", name="unit")
    config = kafka_confluent.librdkafka_consumer_config(source.config)
    # Offsets only as the runner commits them (after the sink flushed), from the earliest for a new group.
    assert (config["group.id"], config["enable.auto.commit"], config["auto.offset.reset"]) == ("g", "false", "earliest")
    assert (config["client.id"], config["sasl.password"]) == ("machinewatch-unit", "s3cret")
    assert "max_poll_records" not in config and "max.poll.records" not in config  # the batch size of poll
    with pytest.raises(ValueError, match="check_crcs"):
        kafka_confluent.librdkafka_consumer_config({**source.config, "check_crcs": True})


def test_the_setting_picks_the_consumer_backend(tmp_path: Path) -> None:
    source = kafka_io.KafkaSource(Settings(state_dir=tmp_path, kafka_client="confluent-kafka",
                                           kafka_bootstrap="127.0.0.1:9"), ["t"], "g", name="unit")
    source.open()  # librdkafka connects lazily: nothing listens on port 9
    try:
        assert isinstance(source.consumer, kafka_confluent.ConfluentConsumer)
        assert source.consumer.max_records == 5000
        assert source.poll(0.05).records == [] and source.lag() is None
    finally:
        source.close()
